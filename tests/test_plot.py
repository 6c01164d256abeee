"""python -m marlopt.plot: the outputs of a real multirun plus a synthetic second algorithm and
task, the one-line errors, and scripts/compare.py's use of it (plot extras checked before training)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from marlopt import plot, results
from tests.helpers import REPO, run_cli
from tests.test_results import build_multirun, copy_run, synthetic_rows

pytest.importorskip("matplotlib")
pytest.importorskip("rliable")


@pytest.fixture(scope="session")
def multirun(tmp_path_factory) -> Path:
    return build_multirun(tmp_path_factory)


@pytest.fixture
def mixed(multirun, tmp_path) -> Path:
    """The real multirun's two MAPPO seeds, two synthetic MASPO seeds on the same task and one
    seed of each algorithm on a second task (every config a copy of the real one)."""
    root = tmp_path / "runs"
    for k in (0, 1):
        copy_run(multirun / str(k), root / "multirun" / "x" / str(k))
        copy_run(multirun / "0", root / "compare" / "maspo" / f"seed{k}", algo="maspo", seed=k,
                 rows=synthetic_rows(-40.0 - 5 * k))
    for algo, final in (("mappo", 0.4), ("maspo", 0.9)):
        copy_run(multirun / "0", root / "games" / algo, env="games", map_name="sum_to_10", algo=algo,
                 rows=synthetic_rows(final))
    return root


def test_plot_writes_curves_aggregates_summary_and_marl_eval_json(mixed, tmp_path, capsys):
    out = tmp_path / "report"
    assert plot.main([str(mixed), "--out", str(out), "--reps", "200", "--seed", "4"]) == 0
    expected = ["curves_mpe_simple_spread_frames.png", "curves_mpe_simple_spread_time.png",
                "curves_games_sum_to_10_frames.png", "curves_games_sum_to_10_time.png", "aggregate.png",
                "probability_of_improvement.png", "performance_profile.png", "marl_eval.json", "summary.json"]
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)
    assert all((out / name).stat().st_size > 1000 for name in expected if name.endswith(".png"))

    summary = json.loads((out / "summary.json").read_text())
    runs, _ = results.find_runs([mixed])
    grouped = results.group(runs)
    table = results.task_table(grouped, "eval/return_mean")
    cell = summary["tasks"]["mpe/simple_spread"]["mappo"]
    assert cell["seeds"] == [0, 1] and cell["final"] == table["mpe/simple_spread"]["mappo"]["final"]
    assert cell["ci95"] == pytest.approx(table["mpe/simple_spread"]["mappo"]["ci95"])
    assert summary["tasks"]["mpe/simple_spread"]["maspo"]["final"] == [-40.0, -45.0]
    norm = summary["normalisation"]["per_task"]
    assert norm == results.normalisation(grouped, "eval/return_mean")
    agg = summary["aggregate"]
    assert agg["tasks"] == ["games/sum_to_10", "mpe/simple_spread"] and agg["runs_per_task"] == 1
    assert any("1 seed(s) per task" in w for w in summary["warnings"])
    matrices, _, _ = results.score_matrices(table, norm)
    expected_agg = results.jsonable(results.aggregate(matrices, reps=200, seed=4))
    assert agg["aggregates"] == expected_agg["aggregates"]
    # on sum_to_10 the evaluations logged are 0.2, 0.4 (MAPPO) and 0.45, 0.9 (MASPO): min-max 0.2 .. 0.9
    assert agg["scores"]["maspo"][0][0] == 1.0 and agg["scores"]["mappo"][0][0] == pytest.approx(0.2 / 0.7)
    marl_eval = json.loads((out / "marl_eval.json").read_text())
    assert marl_eval["games"]["sum_to_10"]["maspo"]["seed_0"]["absolute_metrics"] == {"return": [0.9]}
    stdout = capsys.readouterr().out
    assert "| mpe/simple_spread | maspo | 2 | -42.5 ± 31.8 |" in stdout and "\n| maspo | " in stdout


def test_plot_curves_of_another_metric_against_frames_only_with_a_reference_file(mixed, tmp_path):
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps({"mpe/simple_spread": {"min": -100.0, "max": 0.0}, "games/sum_to_10": {"min": 0.0}}))
    out = tmp_path / "report"
    plot.main([str(mixed), "--out", str(out), "--reps", "100", "--x", "frames",
               "--curve-metric", "train/return_mean", "--normalise", str(ref)])
    assert sorted(p.name for p in out.glob("curves_*")) == ["curves_games_sum_to_10_frames.png",
                                                            "curves_mpe_simple_spread_frames.png"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["curve_metric"] == "train/return_mean"
    assert summary["normalisation"]["per_task"]["mpe/simple_spread"]["min"] == -100.0
    assert summary["aggregate"]["scores"]["maspo"] == [[1.0, pytest.approx(0.6)]]  # (-40 + 100) / 100


def cli_error(*args: str, cwd: Path) -> str:
    proc = run_cli("marlopt.plot", *args, cwd=cwd, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marlopt: error: "), proc.stderr
    return lines[0]


def test_cli_errors_are_one_line(mixed, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no runs found" in cli_error(str(empty), "--out", str(tmp_path / "o"), cwd=tmp_path)

    def error(*argv: str) -> str:  # main() in-process: the same exit and message without a new interpreter
        with pytest.raises(SystemExit) as exit_:
            plot.main(list(argv))
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("marlopt: error: ")
        return err

    line = error(str(mixed / "games"), "--out", str(tmp_path / "o"), "--metric", "eval/win_rate")
    assert "'eval/win_rate' is in none of the 2 run(s); present: eval/return_mean" in line
    bad = tmp_path / "bad.json"
    bad.write_text('{"mpe/simple_spread": {"floor": 1}}')
    assert "expected" in error(str(mixed), "--out", str(tmp_path / "o"), "--normalise", str(bad))
    assert "--reps must be >= 1" in error(str(mixed), "--out", str(tmp_path / "o"), "--reps", "0")
    assert not (tmp_path / "o").exists()


def test_missing_plot_extras_fail_before_any_work(tmp_path):
    code = ("import sys; sys.modules['rliable'] = None; from marlopt.plot import main; "
            f"main(['{tmp_path / 'missing'}', '--out', '{tmp_path / 'o'}'])")
    proc = __import__("subprocess").run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("marlopt: error: plotting needs rliable.library")
    assert proc.stderr.strip().endswith('pip install -e ".[plot]"') and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------- scripts/compare.py


@pytest.fixture
def compare(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "scripts"))
    import compare as module

    return module


def test_compare_checks_the_plot_extras_before_training(compare, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(compare, "launch", lambda *a: pytest.fail("trained without the plot extras"))
    monkeypatch.setitem(sys.modules, "rliable.library", None)
    with pytest.raises(SystemExit) as exit_:
        compare.main(["--name", "t", "--out", str(tmp_path / "c"), "--", "env=games"])
    assert exit_.value.code == 2 and 'pip install -e ".[plot]"' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compare.main(["--name", "t", "--out", str(REPO / "docs" / "t")])
    assert "inside docs/" in capsys.readouterr().err


def test_compare_reports_through_marlopt_plot_with_the_random_floor(compare, mixed, monkeypatch, tmp_path, capsys):
    out = mixed / "compare"
    launched = []
    monkeypatch.setattr(compare, "launch", lambda *a: launched.append(a) or 0.0)
    monkeypatch.setattr(compare, "random_policy_return", lambda overrides, episodes: {
        "task": "mpe/simple_spread", "episodes": episodes, "return_mean": -80.0, "return_ci95": 1.0})
    compare.main(["--name", "t", "--out", str(out), "--algos", "maspo", "--seeds", "0", "1", "--random-episodes", "7",
                  "--reps", "100", "--", "env=mpe"])
    assert [a[1:3] for a in launched] == [("maspo", 0), ("maspo", 1)] and launched[0][0] == out.resolve()
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["random_policy"]["episodes"] == 7
    bounds = summary["normalisation"]["per_task"]["mpe/simple_spread"]
    assert bounds["min"] == -80.0 and bounds["max"] == -20.0  # the best logged value: seed 0's halfway evaluation
    assert np.allclose(summary["aggregate"]["scores"]["maspo"], [[(-40.0 + 80) / 60], [(-45.0 + 80) / 60]])
    assert (out / "report" / "curves_mpe_simple_spread_frames.png").stat().st_size > 0
    assert "uniform random policy: -80" in capsys.readouterr().out

