"""scripts/compare_learning.py: both libraries' logs become the same 4,000-frame blocks."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
compare_learning = pytest.importorskip("compare_learning")


def write_harl_log(path: Path, returns: list[float]) -> Path:
    lines = []
    for k, r in enumerate(returns, start=1):
        lines.append(f"Env pettingzoo_mpe ... updates {5 * k}/10 episodes, total num timesteps {4000 * k}/8000, FPS 300.")
        lines.append(f"Some episodes done, average episode reward is {r}.")  # HARL ends the line with a dot
    path.write_text("\n".join(lines) + "\n")
    return path


def write_metrics(run: Path, returns: list[float]) -> Path:
    run.mkdir()
    rows = [{"step": 800 * (i + 1), "train/return_mean": r, "time/fps": 1.0} for i, r in enumerate(returns)]
    rows.append({"step": 800 * len(returns), "eval/return_mean": -1.0})  # a final eval row has no train return
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return run


def test_curves_are_blocks_of_160_episodes(tmp_path):
    assert compare_learning.harl_curve(write_harl_log(tmp_path / "h.log", [-80.5, -70.25])) == [-80.5, -70.25]
    run = write_metrics(tmp_path / "run", [-90, -80, -70, -60, -50, -40, -40, -40, -40, -40, -99])
    assert compare_learning.marlopt_curve(run) == [-70.0, -40.0]  # 5 iterations x 800 frames; a partial block drops


def test_comparison_measures_improvement_over_random_seed_by_seed(tmp_path):
    harl = {"a": [-70.0, -60.0], "b": [-72.0, -64.0]}
    ours = {"x": [-71.0, -58.0], "y": [-69.0, -62.0], "z": [-70.0, -60.0]}
    r = compare_learning.compare(harl, ours, random_return=-80.0)
    assert r["harl"]["final_improvement"] == [20.0, 16.0]
    assert r["marlopt"]["final_improvement"] == [22.0, 18.0, 20.0]
    assert r["difference_final"] == pytest.approx(2.0)
    assert r["harl"]["area_improvement"] == [15.0, 12.0]
    assert r["frames"] == 8000
    assert "| HARL's own code | 2 | 20.0, 16.0 |" in compare_learning.markdown(r)
