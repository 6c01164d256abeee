"""scripts/compare_runs.py without training: timing keys dropped, exact comparison, readable diffs,
the sides it resolves and the one-line failure for a commit the clone lacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
compare_runs = pytest.importorskip("compare_runs")

REPO = Path(__file__).resolve().parents[2]


def write_metrics(run: Path, rows: list[dict]) -> Path:
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


def test_timing_keys_are_dropped_and_nan_equals_nan(tmp_path):
    a = write_metrics(tmp_path / "a", [{"step": 40, "loss": float("nan"), "time/fps": 9.0, "grasp/qp_ms": 0.5},
                                       {"step": 40, "eval/return_mean": -1.5}])
    b = write_metrics(tmp_path / "b", [{"step": 40, "loss": float("nan"), "time/fps": 7.0, "grasp/qp_ms": 0.7},
                                       {"step": 40, "eval/return_mean": -1.5}])
    assert compare_runs.read_metrics(a) == [{"step": 40, "loss": pytest.approx(float("nan"), nan_ok=True)},
                                            {"step": 40, "eval/return_mean": -1.5}]
    assert compare_runs.diff_metrics("case", compare_runs.read_metrics(a), compare_runs.read_metrics(b)) == []
    assert not any(compare_runs.dropped(k) for k in ("ratio/max", "train/return_mean", "grasp/u_norm", "step"))


def test_differences_name_case_row_step_key_and_both_values():
    base = [{"step": 40, "x": 1.0, "y": 2.0}, {"step": 80, "x": 1.0, "gone": 3}]
    new = [{"step": 40, "x": 1.0, "y": 2.0000000000000004}, {"step": 80, "x": 1, "added": True}, {"step": 120}]
    lines = compare_runs.diff_metrics("mappo-mpe", base, new)
    text = "\n".join(lines)
    assert "mappo-mpe: 2 rows in the baseline, 3 in the new run" in text
    assert "mappo-mpe: row 0 (step 40):" in text and "y: baseline=2.0 (float), new=2.0000000000000004 (float)" in text
    assert "mappo-mpe: row 1 (step 80):" in text
    assert "x: baseline=1.0 (float), new=1 (int)" in text  # an int where a float was logged is a change
    assert "gone: baseline=3 (int), new=<missing>" in text and "added: baseline=<missing>, new=True (bool)" in text


def test_same_is_exact():
    same = compare_runs.same
    assert same(0.1 + 0.2, 0.1 + 0.2) and same(float("nan"), float("nan")) and same([1.0, {"a": 2}], [1.0, {"a": 2}])
    assert not same(0.1 + 0.2, 0.3) and not same(1, 1.0) and not same(True, 1) and not same([1.0], [1.0, 2.0])


def test_cases_cover_every_algorithm_on_both_envs_with_one_command_line_each():
    names = [c.name for c in compare_runs.CASES]
    assert len(names) == len(set(names))
    for algo in compare_runs.ALGOS:
        assert {f"{algo}-mpe", f"{algo}-games"} <= set(names)
    mpe = [c for c in compare_runs.CASES if "env=mpe" in c.overrides]
    assert any(not any(o.startswith("env.vector=") for o in c.overrides) for c in mpe), "one MPE case on hybrid"
    assert any("env.continuous=true" in c.overrides for c in mpe)
    for case in compare_runs.CASES:  # overrides whose names the refactor changes must stay out
        argv = case.argv(Path("/run"))
        assert not any(o.split("=")[0] in {"algo.clip", "algo.eps", "algo.rho_plus", "algo.targets", "algo.objective"}
                       for o in argv)
        assert argv[-1] == "hydra.run.dir=/run"


def test_unknown_commit_fails_with_one_line(tmp_path):
    with pytest.raises(compare_runs.CompareError) as exc:
        compare_runs.extract("0" * 40, tmp_path / "x", repo=REPO)
    message = str(exc.value)
    assert "\n" not in message and "fetch full history" in message


def test_a_directory_side_is_used_as_it_is_and_checked(tmp_path):
    assert compare_runs.resolve_side(None, tmp_path) == REPO
    assert compare_runs.resolve_side(str(REPO), tmp_path) == REPO.resolve()
    (tmp_path / "empty").mkdir()
    with pytest.raises(compare_runs.CompareError, match="no marlopt/train.py"):
        compare_runs.resolve_side(str(tmp_path / "empty"), tmp_path / "scratch")


def test_extracted_head_holds_the_package(tmp_path):
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    root = compare_runs.extract("HEAD", tmp_path / "head", repo=REPO)
    assert (root / "marlopt" / "train.py").is_file() and not (root / "tests").exists()
    compare_runs.check_imports_from(root)  # PYTHONPATH wins over the installed (editable) package
