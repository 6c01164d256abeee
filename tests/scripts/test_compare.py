"""scripts/compare.py's random-policy floor (its report is marlopt.plot's: tests/test_plot.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
compare = pytest.importorskip("compare")


def test_random_policy_return_on_sum_to_10_is_the_exact_success_probability():
    """66 of the 11³ joint actions sum to 10: a uniform policy scores 66 / 1331 = 0.0496."""
    out = compare.random_policy_return(["env=games", "map=sum_to_10"], episodes=4000)
    assert out["episodes"] == 4000 and out["task"] == "games/sum_to_10"
    assert out["return_mean"] == pytest.approx(66 / 1331, abs=0.012)
    assert 0 < out["return_ci95"] < 0.01
