"""marlopt.results: run discovery over real and mixed layouts, grouping, t-intervals, curves,
normalisation, the rliable aggregate (against direct rliable calls) and the marl-eval export
(against the schema of marl-eval's README)."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from marlopt import results
from marlopt.results import ResultsError, Run
from tests.helpers import REPO, run_cli

pytest.importorskip("scipy")


def build_multirun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real Hydra multirun (2 seeds, 2,000 frames, an evaluation every 1,000): made once per
    session, reused by tests/test_plot.py through the same directory."""
    root = tmp_path_factory.getbasetemp() / "real_multirun"
    if (root / "done").is_file():
        return root / "sweep"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir()
    run_cli("marlopt.train", "-m", "seed=0,1", "total_steps=2000", "n_envs=2", "rollout_length=100",
            "progress=false", "eval_episodes=2", "eval_interval=1000", "env.vector=inproc", "torch_threads=1",
            f"hydra.sweep.dir={root / 'sweep'}", "hydra.sweep.subdir=${hydra.job.num}", cwd=root)
    (root / "done").write_text("")
    return root / "sweep"


@pytest.fixture(scope="session")
def multirun(tmp_path_factory) -> Path:
    return build_multirun(tmp_path_factory)


def copy_run(src: Path, dst: Path, *, env: str | None = None, map_name: str | None = None, algo: str | None = None,
             seed: int | None = None, rows: list[dict] | None = None) -> Path:
    """A copy of a real run directory with its saved config edited and, optionally, new metrics."""
    from omegaconf import OmegaConf

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    cfg = OmegaConf.load(dst / ".hydra" / "config.yaml")
    for key, value in (("env.name", env), ("env.map_name", map_name), ("algo.name", algo), ("seed", seed)):
        if value is not None:
            OmegaConf.update(cfg, key, value)
    OmegaConf.save(cfg, dst / ".hydra" / "config.yaml")
    if rows is not None:
        (dst / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return dst


def synthetic_rows(finals: float, steps: tuple[int, ...] = (1000, 2000), metric: str = "eval/return_mean") -> list[dict]:
    """Training and evaluation rows like a run's, the evaluation rising linearly to ``finals``."""
    rows = []
    for i, step in enumerate(steps, start=1):
        value = finals * i / len(steps)
        rows.append({"step": step, "train/return_mean": value - 1, "time/elapsed_s": step / 100})
        rows.append({"step": step, metric: value, "time/elapsed_s": step / 100 + 0.5})
    return rows


def fake_run(task: str, algo: str, seed: int, rows: list[dict]) -> Run:
    env, map_name = task.split("/")
    return Run(Path(f"/nowhere/{task}/{algo}/{seed}"), env, map_name, algo, seed, rows)


# ---------------------------------------------------------------- discovery


def test_finds_the_jobs_of_a_real_multirun_by_their_saved_configs(multirun):
    runs, warnings = results.find_runs([multirun])
    assert warnings == []
    assert [(r.task, r.algo, r.seed) for r in runs] == [("mpe/simple_spread", "mappo", 0),
                                                        ("mpe/simple_spread", "mappo", 1)]
    assert sorted(r.path.name for r in runs) == ["0", "1"]
    for run in runs:  # the final evaluation at 2,000 frames, read through marlopt.logger.read_metrics
        assert [row["step"] for row in run.rows if "eval/return_mean" in row] == [1000, 2000]
    assert results.find_runs([multirun / "1"])[0][0].seed == 1  # a run directory given itself


def test_finds_runs_in_a_mixture_of_layouts(multirun, tmp_path):
    job = multirun / "0"
    root = tmp_path / "results"
    sweep = root / "multirun" / "2026-12-06" / "14-00-00"
    copy_run(job, sweep / "0", seed=0)
    copy_run(multirun / "1", sweep / "1", seed=1)
    for seed in (0, 1):  # scripts/compare.py's layout
        copy_run(job, root / "compare" / "spread" / "maspo" / f"seed{seed}", algo="maspo", seed=seed,
                 rows=synthetic_rows(-50.0 - seed))
    copy_run(job, root / "single", env="games", map_name="sum_to_10", seed=7, rows=synthetic_rows(1.0))
    (root / "notes" / "old").mkdir(parents=True)  # metrics without a config: not a run
    (root / "notes" / "old" / "metrics.jsonl").write_text('{"step": 1, "eval/return_mean": 3.0}\n')
    expected = [("games/sum_to_10", "mappo", 7), ("mpe/simple_spread", "maspo", 0), ("mpe/simple_spread", "maspo", 1),
                ("mpe/simple_spread", "mappo", 0), ("mpe/simple_spread", "mappo", 1)]
    runs, warnings = results.find_runs([root])
    assert sorted((r.task, r.algo, r.seed) for r in runs) == sorted(expected) and warnings == []
    runs, _ = results.find_runs([sweep, root / "compare", root / "single"])
    assert sorted((r.task, r.algo, r.seed) for r in runs) == sorted(expected)
    grouped = results.group(runs)
    assert list(grouped) == ["games/sum_to_10", "mpe/simple_spread"]
    assert list(grouped["mpe/simple_spread"]) == ["mappo", "maspo"]
    assert [r.seed for r in grouped["mpe/simple_spread"]["maspo"]] == [0, 1]


def test_a_repeated_task_algo_seed_keeps_the_newest_run_and_says_so(multirun, tmp_path):
    old = copy_run(multirun / "0", tmp_path / "a" / "old")
    new = copy_run(multirun / "0", tmp_path / "b" / "new", rows=synthetic_rows(-1.0))
    os.utime(old / "metrics.jsonl", (1e9, 2e9))
    os.utime(new / "metrics.jsonl", (1e9, 1e9))  # "new" is the older file: the old run wins
    for order in ([tmp_path / "b", tmp_path / "a"], [tmp_path / "a", tmp_path / "b"]):  # whichever is found first
        runs, warnings = results.find_runs(order)
        assert [r.path for r in runs] == [old]
        assert len(warnings) == 1 and str(old) in warnings[0] and str(new) in warnings[0] and "seed 0" in warnings[0]
    runs, warnings = results.find_runs([old, tmp_path / "a"])  # the same directory twice is one run
    assert len(runs) == 1 and warnings == []


def test_no_runs_and_unreadable_configs_are_errors(multirun, tmp_path):
    with pytest.raises(ResultsError, match="no runs found"):
        results.find_runs([tmp_path])
    with pytest.raises(ResultsError, match="no such file"):
        results.find_runs([tmp_path / "missing"])
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "metrics.jsonl").write_text("")
    with pytest.raises(ResultsError, match="1 directory has metrics.jsonl without"):
        results.find_runs([tmp_path])
    bad = copy_run(multirun / "0", tmp_path / "bad")
    (bad / ".hydra" / "config.yaml").write_text("env: {name: mpe}\n")
    with pytest.raises(ResultsError, match="no env.map_name, algo.name, seed"):
        results.find_runs([bad])


def test_a_metric_no_run_logged_is_an_error_listing_the_metrics_present():
    runs = [fake_run("a/b", "x", 0, synthetic_rows(1.0)), fake_run("a/b", "x", 1, [{"step": 5, "other": 1.0}])]
    with pytest.raises(ResultsError, match=r"'eval/win_rate' is in none of the 2 run\(s\); present: eval/return_mean, "
                                           r"other, time/elapsed_s, train/return_mean"):
        results.select_metric(runs, "eval/win_rate")
    kept, warnings = results.select_metric(runs, "eval/return_mean")
    assert kept == runs[:1] and "no 'eval/return_mean'" in warnings[0]


# ---------------------------------------------------------------- per-task statistics


def test_t95_is_scipys_student_t_interval():
    from scipy import stats

    rng = np.random.default_rng(0)
    for n in (2, 3, 5, 10):
        x = rng.normal(size=n)
        mean, half = results.t95(x)
        lo, hi = stats.t.interval(0.95, n - 1, loc=x.mean(), scale=stats.sem(x))
        assert mean == pytest.approx(x.mean()) and half == pytest.approx((hi - lo) / 2)
    grid = rng.normal(size=(3, 4))
    mean, half = results.t95(grid)
    assert half == pytest.approx([results.t95(grid[:, j])[1] for j in range(4)])
    assert math.isnan(float(results.t95([1.0])[1]))


def test_curve_interpolates_every_seed_over_the_frames_all_reached():
    a = fake_run("a/b", "x", 0, [{"step": s, "m": float(s)} for s in (0, 100, 200, 300)])
    b = fake_run("a/b", "x", 1, [{"step": s, "m": 2.0 * s} for s in (50, 150, 250)])
    c = results.curve([a, b], "m")
    assert c["x"].tolist() == [50, 100, 150, 200, 250]
    assert c["mean"] == pytest.approx(1.5 * c["x"])
    assert c["ci95"] == pytest.approx(results.t95(np.stack([c["x"], 2 * c["x"]]))[1])
    timed = [fake_run("a/b", "x", k, [{"step": s, "m": 1.0, "time/elapsed_s": s / (k + 1)} for s in (0, 100)])
             for k in range(2)]
    c = results.curve(timed, "m", x="time", max_points=11)
    assert c["x"][0] == 0 and c["x"][-1] == 50 and len(c["x"]) == 11  # the slower seed's clock ends the curve
    assert results.curve([a, fake_run("a/b", "x", 2, [{"step": 900, "m": 1.0}])], "m") is None


def test_task_table_takes_each_seeds_last_value():
    grouped = results.group([fake_run("a/b", "x", s, synthetic_rows(v)) for s, v in ((0, 1.0), (1, 3.0), (2, 8.0))])
    cell = results.task_table(grouped, "eval/return_mean")["a/b"]["x"]
    assert cell["seeds"] == [0, 1, 2] and cell["final"] == [1.0, 3.0, 8.0] and cell["frames"] == [2000] * 3
    assert (cell["mean"], cell["ci95"]) == pytest.approx(tuple(map(float, results.t95([1.0, 3.0, 8.0]))))


# ---------------------------------------------------------------- normalisation and aggregation


def test_minmax_normalisation_spans_every_logged_value_of_the_task():
    grouped = results.group([fake_run("a/b", "x", 0, synthetic_rows(-10.0)), fake_run("a/b", "y", 0, synthetic_rows(6.0)),
                             fake_run("c/d", "x", 0, synthetic_rows(2.0))])
    norm = results.normalisation(grouped, "eval/return_mean")
    assert (norm["a/b"]["min"], norm["a/b"]["max"]) == (-10.0, 6.0)  # x's final and y's final
    assert (norm["c/d"]["min"], norm["c/d"]["max"]) == (1.0, 2.0)  # the halfway evaluation is the task's minimum
    ref = results.normalisation(grouped, "eval/return_mean", reference={"a/b": {"min": -81.0}})
    assert (ref["a/b"]["min"], ref["a/b"]["max"]) == (-81.0, 6.0) and "reference (min)" in ref["a/b"]["source"]
    assert results.normalisation(grouped, "eval/win_rate")["a/b"] == {"min": 0.0, "max": 1.0, "source": "none"}
    with pytest.raises(ResultsError, match="task\\(s\\) e/f that no run trained on"):
        results.normalisation(grouped, "eval/return_mean", reference={"e/f": {"min": 0.0}})
    with pytest.raises(ResultsError, match="min 9.0 >= max 6.0"):
        results.normalisation(grouped, "eval/return_mean", reference={"a/b": {"min": 9.0}})


def test_score_matrices_normalise_per_task_and_keep_the_common_seeds():
    table = {"t1": {"x": {"final": [0.0, 10.0, 5.0]}, "y": {"final": [10.0, 2.0]}},
             "t2": {"x": {"final": [1.0, 3.0]}, "y": {"final": [2.0, 2.5]}},
             "t3": {"x": {"final": [1.0]}}}
    norm = {"t1": {"min": 0.0, "max": 10.0}, "t2": {"min": 1.0, "max": 3.0}, "t3": {"min": 0.0, "max": 1.0}}
    matrices, tasks, warnings = results.score_matrices(table, norm)
    assert tasks == ["t1", "t2"]
    assert matrices["x"].tolist() == [[0.0, 0.0], [1.0, 1.0]] and matrices["y"].tolist() == [[1.0, 0.5], [0.2, 0.75]]
    assert any("t3: left out" in w for w in warnings) and any("2 seed(s)" in w for w in warnings)


def test_aggregate_equals_direct_rliable_calls_with_the_same_seed():
    pytest.importorskip("rliable")
    from rliable import library as rly
    from rliable import metrics

    rng = np.random.default_rng(1)
    matrices = {"a": rng.uniform(size=(3, 4)), "b": rng.uniform(size=(3, 4)) + 0.2, "c": rng.uniform(size=(3, 4))}
    before = np.random.get_state()[1].copy()
    agg = results.aggregate(matrices, reps=100, seed=11)
    assert (np.random.get_state()[1] == before).all()  # the global RNG is left as it was

    def direct(x):
        return np.array([metrics.aggregate_iqm(x), metrics.aggregate_mean(x), metrics.aggregate_median(x),
                         metrics.aggregate_optimality_gap(x, 1.0)])

    np.random.seed(11)
    points, intervals = rly.get_interval_estimates(matrices, direct, reps=100)
    for algo in matrices:
        for i, name in enumerate(("iqm", "mean", "median", "optimality_gap")):
            assert agg["aggregates"][algo][name]["value"] == pytest.approx(points[algo][i])
            assert agg["aggregates"][algo][name]["ci95"] == pytest.approx(list(intervals[algo][:, i]))
    assert agg["aggregates"]["b"]["mean"]["value"] == pytest.approx(matrices["b"].mean())
    pairs = {"a,b": (matrices["a"], matrices["b"]), "a,c": (matrices["a"], matrices["c"]),
             "b,c": (matrices["b"], matrices["c"])}
    np.random.seed(11)
    p_points, p_intervals = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=100)
    assert list(agg["probability_of_improvement"]) == list(pairs)
    for pair in pairs:
        assert agg["probability_of_improvement"][pair]["value"] == pytest.approx(p_points[pair])
        assert agg["probability_of_improvement"][pair]["ci95"] == pytest.approx(np.ravel(p_intervals[pair]).tolist())
    tau = np.asarray(agg["performance_profile"]["tau"])
    np.random.seed(11)
    profiles, cis = rly.create_performance_profile(matrices, tau, reps=100)
    for algo in matrices:
        np.testing.assert_allclose(agg["performance_profile"]["profiles"][algo]["fraction"], profiles[algo])
        np.testing.assert_allclose(agg["performance_profile"]["profiles"][algo]["ci95"], cis[algo])


# ---------------------------------------------------------------- marl-eval export


def check_marl_eval_schema(data: dict) -> None:
    """marl-eval's README, "Data Structure for Raw Experiment data": {env: {task: {algo: {run:
    {"step_<i>": {"step_count": int, <metric>: [numbers]}, ..., "absolute_metrics": {<metric>:
    [numbers]}}}}}}, the absolute metrics last (marl-eval reads them as the last key), the same
    metrics at every step, and (its "Important note") the same number of runs per algorithm and
    of steps per run within an environment."""
    def numbers(values):
        return isinstance(values, list) and values and all(isinstance(v, (int, float)) for v in values)

    assert isinstance(data, dict) and data
    for env, tasks in data.items():
        shapes = set()
        for task, algos in tasks.items():
            for algo, runs in algos.items():
                assert all(isinstance(k, str) and k == k.lower() for k in (env, task, algo))
                for run, steps in runs.items():
                    keys = list(steps)
                    assert keys[-1] == "absolute_metrics" and keys[:-1] == [f"step_{i}" for i in range(len(keys) - 1)]
                    counts = [steps[k]["step_count"] for k in keys[:-1]]
                    assert all(isinstance(c, int) for c in counts) and counts == sorted(counts)
                    metric_sets = {frozenset(k for k in steps[s] if k not in ("step_count", "elapsed_time"))
                                   for s in keys[:-1]}
                    assert len(metric_sets) == 1
                    for s in keys[:-1]:
                        assert all(numbers(steps[s][m]) for m in next(iter(metric_sets)))
                    absolute = steps["absolute_metrics"]
                    assert set(absolute) == set(next(iter(metric_sets))) and all(numbers(v) for v in absolute.values())
                shapes.add((len(runs), tuple(len(steps) for steps in runs.values())))
        assert len(shapes) == 1, f"{env}: runs or steps differ between tasks and algorithms: {shapes}"


def test_marl_eval_export_follows_the_documented_schema(multirun, tmp_path):
    runs, _ = results.find_runs([multirun])
    runs += [fake_run("mpe/simple_spread", "maspo", s, synthetic_rows(-40.0 - s)) for s in (0, 1)]
    data, warnings = results.marl_eval_export(results.group(runs), ["eval/return_mean", "eval/win_rate"])
    assert warnings == []
    check_marl_eval_schema(json.loads(json.dumps(results.jsonable(data), allow_nan=False)))
    real = data["mpe"]["simple_spread"]["mappo"]["seed_1"]
    rows = [row for row in runs[1].rows if "eval/return_mean" in row]
    assert [real[f"step_{i}"]["step_count"] for i in range(2)] == [1000, 2000]
    assert real["step_1"]["return"] == [rows[1]["eval/return_mean"]] and "win_rate" not in real["step_1"]
    assert real["absolute_metrics"] == {"return": [rows[-1]["eval/return_mean"]]}
    assert data["mpe"]["simple_spread"]["maspo"]["seed_1"]["absolute_metrics"]["return"] == [-41.0]
    assert results.marl_eval_name("train/return_mean") == "train_return"
    short = [*runs, fake_run("mpe/simple_spread", "maspo", 2, synthetic_rows(1.0, steps=(2000,)))]
    uneven, warnings = results.marl_eval_export(results.group(short), ["eval/return_mean"])
    assert "seeds have [1, 2] evaluation steps" in warnings[0]
    with pytest.raises(AssertionError):  # the schema check catches what marl-eval cannot read
        check_marl_eval_schema(uneven)


def test_jsonable_writes_strict_json():
    out = results.jsonable({"a": np.float32(1.5), "b": [float("nan"), np.int64(3)], "c": np.array([np.inf, 2.0])})
    assert json.dumps(out, allow_nan=False) == '{"a": 1.5, "b": [null, 3], "c": [null, 2.0]}'


def test_import_results_pulls_in_no_plotting_or_torch():
    import subprocess
    import sys

    for form in ("import marlopt.results", "from marlopt import results"):  # the second asks marlopt.__getattr__
        code = (f"import sys; {form}; "
                "print(sorted(m for m in ('torch', 'matplotlib', 'rliable', 'scipy') if m in sys.modules))")
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "[]", form
