"""scripts/compare.py's pieces that need no training: the random-policy floor and the report's
curves of any metric (greedy evaluation curves for MAGPO, with the guider's return beside)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
compare = pytest.importorskip("compare")


def test_random_policy_return_on_sum_to_10_is_the_exact_success_probability():
    """66 of the 11³ joint actions sum to 10: a uniform policy scores 66 / 1331 = 0.0496."""
    out = compare.random_policy_return(["env=games", "map=sum_to_10"], episodes=4000)
    assert out["episodes"] == 4000
    assert out["return_mean"] == pytest.approx(66 / 1331, abs=0.012)
    assert 0 < out["return_ci95"] < 0.01


def test_report_reads_eval_curves_and_the_guiders_return(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(compare, "REPO", tmp_path)
    (tmp_path / "docs").mkdir()
    for seed, final in ((0, 10.0), (1, 14.0)):
        run = compare.run_dir("t", "magpo", seed)
        run.mkdir(parents=True)
        rows = [{"step": 100, "train/return_mean": 1.0}, {"step": 100, "eval/return_mean": 5.0},
                {"step": 200, "train/return_mean": 2.0},
                {"step": 200, "eval/return_mean": final, "eval/guider_return_mean": final + 1}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = compare.report("t", ["magpo"], [0, 1], "t", curve_key="eval/return_mean",
                             random={"episodes": 10, "return_mean": 0.5, "return_ci95": 0.1})
    assert summary["magpo"]["eval_return_mean"] == pytest.approx(12.0)
    assert summary["magpo"]["guider_eval_return_mean"] == pytest.approx(13.0)
    saved = json.loads((tmp_path / "docs" / "t.json").read_text())
    assert saved["curve"] == "eval/return_mean" and saved["random_policy"]["return_mean"] == 0.5
    assert (tmp_path / "docs" / "t_return.png").stat().st_size > 0
