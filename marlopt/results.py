"""Results of many runs: find them, group them, and reduce them to curves, tables and aggregates.

A *run* is a directory holding ``metrics.jsonl`` and ``.hydra/config.yaml`` (what
``python -m marlopt.train`` writes). :func:`find_runs` finds them anywhere under the given paths: a
single run, a Hydra multirun tree (``multirun/<date>/<time>/<job>/``), ``scripts/compare.py``'s
``<out>/<algo>/seed<k>``, or any mixture. Each run is identified by its saved config:
the *task* ``<env.name>/<env.map_name>``, the *algorithm* ``algo.name`` and the ``seed``. Two runs
with the same (task, algorithm, seed) are one too many: the one whose ``metrics.jsonl`` was written
last is kept and the other named in a warning (a re-run replaces the run it repeats).

Statistics (docs/results.md says why):

* per task and algorithm, the mean over seeds ± the half-width of the Student-t 95% interval
  (:func:`t95`): with 3 seeds the quantile is t₀.₉₇₅,₂ = 4.30, not 1.96;
* across tasks, rliable's aggregates (IQM, mean, median, optimality gap), probability of
  improvement and performance profiles with stratified bootstrap CIs (:func:`aggregate`), on scores
  normalised per task (:func:`normalisation`).

Only numpy at import time; scipy and rliable are imported where they are used (``pip install -e
".[plot]"``), matplotlib only by :mod:`marlopt.plot`.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from marlopt.logger import METRICS_FILE, read_metrics

CONFIG_FILE = Path(".hydra") / "config.yaml"
SKIP_DIRS = {"checkpoints", "tb", "__pycache__"}  # inside a run: never holds another run
TIME_KEY = "time/elapsed_s"


class ResultsError(ValueError):
    """The runs cannot be read or reduced; the message names the problem and the fix."""


@dataclass(eq=False)
class Run:
    """One training run: where it is, what it trained (from its saved config) and its metrics."""

    path: Path
    env: str
    map_name: str
    algo: str
    seed: int
    rows: list[dict[str, Any]] = field(repr=False)

    @property
    def task(self) -> str:
        return f"{self.env}/{self.map_name}"

    def has(self, metric: str) -> bool:
        return any(metric in row for row in self.rows)


# ---------------------------------------------------------------- discovery and grouping


def is_run(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() and (path / CONFIG_FILE).is_file()


def load_run(path: Path) -> Run:
    """Read one run directory: its config's env, map, algorithm and seed, and its metrics."""
    from omegaconf import OmegaConf

    config = path / CONFIG_FILE
    try:
        cfg = OmegaConf.load(config)
    except Exception as err:  # a damaged YAML file names itself
        raise ResultsError(f"{config}: cannot be read ({err}); restore it or remove the run") from err
    values = {key: OmegaConf.select(cfg, key, default=None) for key in ("env.name", "env.map_name", "algo.name", "seed")}
    missing = [key for key, value in values.items() if value is None]
    if missing:
        raise ResultsError(f"{config}: no {', '.join(missing)}; not a marlopt run config (remove the run or fix it)")
    return Run(path, str(values["env.name"]), str(values["env.map_name"]), str(values["algo.name"]),
               int(values["seed"]), read_metrics(path))


def find_runs(paths: list[str | Path]) -> tuple[list[Run], list[str]]:
    """Every run under each of ``paths`` (a run directory itself, or any tree holding runs), with
    duplicates of a (task, algorithm, seed) dropped (the newest ``metrics.jsonl`` kept). Returns
    the runs, sorted by task, algorithm and seed, and warnings for the user."""
    runs: list[Run] = []
    for given in paths:
        root = Path(given)
        if not root.exists():
            raise ResultsError(f"{root}: no such file or directory")
        found, partial = [], 0
        for here, dirs, files in os.walk(root):
            here_path = Path(here)
            if is_run(here_path):
                found.append(load_run(here_path))
                dirs[:] = []  # a run holds no other run
                continue
            partial += METRICS_FILE in files
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if not found:
            hint = (f"; {partial} director{'y has' if partial == 1 else 'ies have'} {METRICS_FILE} without "
                    f"{CONFIG_FILE}" if partial else "")
            raise ResultsError(f"{root}: no runs found (a run is a directory holding {METRICS_FILE} and "
                               f"{CONFIG_FILE}{hint})")
        runs.extend(found)
    return deduplicate(runs)


def deduplicate(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """One run per (task, algorithm, seed): the one whose metrics were written last."""
    newest: dict[tuple[str, str, int], Run] = {}
    warnings = []
    for run in runs:
        key = (run.task, run.algo, run.seed)
        if run.path.resolve() == (newest[key].path.resolve() if key in newest else None):
            continue  # the same directory reached through two of the given paths
        if key in newest:
            old, new = sorted([newest[key], run], key=lambda r: (r.path / METRICS_FILE).stat().st_mtime)
            newest[key] = new
            warnings.append(f"{key[0]} {key[1]} seed {key[2]}: two runs; keeping the newer {new.path}, "
                            f"ignoring {old.path}")
        else:
            newest[key] = run
    return sorted(newest.values(), key=lambda r: (r.task, r.algo, r.seed)), warnings


def group(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """``{task: {algo: [runs sorted by seed]}}``, tasks and algorithms in sorted order."""
    out: dict[str, dict[str, list[Run]]] = {}
    for run in sorted(runs, key=lambda r: (r.task, r.algo, r.seed)):
        out.setdefault(run.task, {}).setdefault(run.algo, []).append(run)
    return out


def select_metric(runs: list[Run], metric: str) -> tuple[list[Run], list[str]]:
    """The runs that logged ``metric``; an error listing the metrics present when none did."""
    kept = [run for run in runs if run.has(metric)]
    if not kept:
        present = sorted({key for run in runs for row in run.rows for key in row} - {"step"})
        raise ResultsError(f"metric {metric!r} is in none of the {len(runs)} run(s); present: {', '.join(present)}")
    warnings = [f"{run.path}: no {metric!r} (unfinished, or no evaluation); left out" for run in runs
                if not run.has(metric)]
    return kept, warnings


# ---------------------------------------------------------------- per-task statistics


def t95(values: list[float] | np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean over ``axis`` and the half-width of the two-sided Student-t 95% interval of the mean
    (``t_{0.975, n-1} · s / √n``, ``s`` with ``ddof=1``); NaN half-width with one value."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    n = x.shape[axis]
    mean = x.mean(axis=axis)
    if n < 2:
        return mean, np.full_like(mean, np.nan)
    return mean, stats.t.ppf(0.975, n - 1) * x.std(axis=axis, ddof=1) / math.sqrt(n)


def series(run: Run, metric: str, x: str = "frames") -> tuple[np.ndarray, np.ndarray]:
    """The run's ``metric`` against env frames (``x="frames"``) or wall-clock seconds
    (``x="time"``, the row's ``time/elapsed_s``); a repeated x keeps the last value."""
    key = "step" if x == "frames" else TIME_KEY
    points = {float(row[key]): float(row[metric]) for row in run.rows if metric in row and key in row}
    xs = np.array(sorted(points))
    return xs, np.array([points[v] for v in xs])


def curve(runs: list[Run], metric: str, x: str = "frames", max_points: int = 200) -> dict[str, np.ndarray] | None:
    """Mean ± t95 over seeds of ``metric`` on a common x grid: the x values the runs logged at
    (a regular grid of ``max_points`` for wall-clock time, or when there are more), over the range
    every run covers, each run linearly interpolated. None when the runs share no x range."""
    pairs = [series(run, metric, x) for run in runs]
    if any(len(xs) == 0 for xs, _ in pairs):
        return None
    lo, hi = max(xs[0] for xs, _ in pairs), min(xs[-1] for xs, _ in pairs)
    if hi < lo:
        return None
    grid = np.unique(np.concatenate([xs[(xs >= lo) & (xs <= hi)] for xs, _ in pairs]))
    if x == "time" or len(grid) > max_points:
        grid = np.linspace(lo, hi, max_points) if hi > lo else np.array([lo])
    values = np.stack([np.interp(grid, xs, ys) for xs, ys in pairs])
    mean, half = t95(values)
    return {"x": grid, "mean": mean, "ci95": half, "n": np.array(len(runs))}


def final_value(run: Run, metric: str) -> float:
    """The last logged value of ``metric`` (for ``eval/...``: the final greedy evaluation)."""
    return float([row[metric] for row in run.rows if metric in row][-1])


def task_table(grouped: dict[str, dict[str, list[Run]]], metric: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Per task and algorithm: the seeds, each seed's final ``metric``, their mean ± t95, frames."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for task, algos in grouped.items():
        for algo, runs in algos.items():
            finals = [final_value(run, metric) for run in runs]
            mean, half = t95(finals)
            table.setdefault(task, {})[algo] = {
                "seeds": [run.seed for run in runs], "final": finals, "mean": float(mean), "ci95": float(half),
                "frames": [int(run.rows[-1]["step"]) for run in runs], "runs": [str(run.path) for run in runs]}
    return table


# ---------------------------------------------------------------- normalisation and aggregation


def normalisation(grouped: dict[str, dict[str, list[Run]]], metric: str, mode: str = "auto",
                  reference: dict[str, dict[str, float]] | None = None) -> dict[str, dict[str, Any]]:
    """Per task, the ``min`` and ``max`` that map scores to ``(score - min) / (max - min)``.

    ``minmax``: min and max of every logged value of ``metric`` on that task (all algorithms,
    seeds and steps: marl-eval's ``data_process_pipeline``), so 0 is the worst and 1 the best
    performance seen. ``none``: the raw scores (min 0, max 1). ``auto``: ``none`` for a win rate
    (already in [0, 1]), else ``minmax``. ``reference`` (``{task: {"min": m, "max": M}}``, e.g.
    a random policy's and an expert's score) overrides per task; a bound it leaves out is min-max's.
    """
    if mode == "auto":
        mode = "none" if "win_rate" in metric else "minmax"
    if mode not in ("minmax", "none"):
        raise ResultsError(f"normalisation {mode!r}: use auto, minmax, none or a JSON file of per-task min/max")
    reference = reference or {}
    unknown = sorted(set(reference) - set(grouped))
    if unknown:
        raise ResultsError(f"normalisation reference names task(s) {', '.join(unknown)} that no run trained on; "
                           f"tasks: {', '.join(grouped)}")
    out = {}
    for task, algos in grouped.items():
        logged = [float(row[metric]) for runs in algos.values() for run in runs for row in run.rows
                  if metric in row and math.isfinite(float(row[metric]))]
        if not logged and mode == "minmax":
            raise ResultsError(f"{task}: no finite value of {metric} to normalise by; use --normalise none or a file")
        bounds = {"min": min(logged), "max": max(logged), "source": "minmax"} if mode == "minmax" \
            else {"min": 0.0, "max": 1.0, "source": "none"}
        given = {k: float(v) for k, v in reference.get(task, {}).items() if k in ("min", "max")}
        if given:
            bounds.update(given, source="reference (" + ", ".join(given) + ")" +
                          (f", {mode} otherwise" if len(given) < 2 else ""))
        if not bounds["max"] > bounds["min"]:
            raise ResultsError(f"{task}: cannot normalise {metric} with min {bounds['min']} >= max {bounds['max']}; "
                               f"give the bounds in a --normalise file, or use --normalise none")
        out[task] = bounds
    return out


def score_matrices(table: dict[str, dict[str, dict[str, Any]]], norm: dict[str, dict[str, Any]]
                   ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
    """Normalised final scores as rliable wants them: ``{algo: array [runs, tasks]}`` over the tasks
    every algorithm ran, with as many runs per cell as the fewest seeds of any cell (the lowest
    seeds kept). Returns the matrices, the tasks (columns) and warnings."""
    algos = sorted({algo for per in table.values() for algo in per})
    tasks = [task for task, per in table.items() if set(per) == set(algos)]
    warnings = [f"{task}: left out of the aggregate (no runs of {', '.join(sorted(set(algos) - set(per)))})"
                for task, per in table.items() if task not in tasks]
    if not tasks:
        return {}, [], warnings + ["no task was run by every algorithm: no cross-task aggregate"]
    n = min(len(table[task][algo]["final"]) for task in tasks for algo in algos)
    if any(len(table[task][algo]["final"]) > n for task in tasks for algo in algos):
        warnings.append(f"aggregate: {n} seed(s) per task and algorithm (the fewest any has); extra seeds left out")
    matrices = {}
    for algo in algos:
        cols = [(np.asarray(table[task][algo]["final"][:n]) - norm[task]["min"]) / (norm[task]["max"] - norm[task]["min"])
                for task in tasks]
        matrices[algo] = np.stack(cols, axis=1)
    return matrices, tasks, warnings


AGGREGATES = ("iqm", "mean", "median", "optimality_gap")


def aggregate_scores(scores: np.ndarray) -> np.ndarray:
    """rliable's IQM, mean, median and optimality gap (γ = 1) of a ``[runs, tasks]`` matrix."""
    from rliable import metrics

    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_median(scores), metrics.aggregate_optimality_gap(scores, 1.0)])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """numpy's global RNG seeded for the block and restored after it: rliable 1.2's stratified
    bootstrap draws its indices from ``np.random`` whatever ``random_state`` it is given."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def aggregate(matrices: dict[str, np.ndarray], reps: int = 5000, seed: int = 0) -> dict[str, Any]:
    """rliable across tasks: aggregates with stratified-bootstrap 95% CIs, the probability of
    improvement of each algorithm over each other one, and performance profiles (run-score
    distributions) at thresholds ``tau``. Every rliable call starts from ``np.random.seed(seed)``."""
    from rliable import library as rly
    from rliable import metrics

    with seeded(seed):
        points, intervals = rly.get_interval_estimates(matrices, aggregate_scores, reps=reps)
    out: dict[str, Any] = {"reps": reps, "seed": seed, "aggregates": {
        algo: {name: {"value": float(points[algo][i]), "ci95": [float(intervals[algo][0][i]), float(intervals[algo][1][i])]}
               for i, name in enumerate(AGGREGATES)} for algo in matrices}}
    algos = list(matrices)
    pairs = {f"{x},{y}": (matrices[x], matrices[y]) for i, x in enumerate(algos) for y in algos[i + 1:]}
    out["probability_of_improvement"] = {}
    if pairs:
        with seeded(seed):
            p_points, p_intervals = rly.get_interval_estimates(pairs, metrics.probability_of_improvement, reps=reps)
        out["probability_of_improvement"] = {pair: {"value": float(p_points[pair]), "ci95": [float(v) for v in
                                                    np.ravel(p_intervals[pair])]} for pair in pairs}
    lo = min(0.0, min(float(m.min()) for m in matrices.values()))
    hi = max(1.0, max(float(m.max()) for m in matrices.values()))
    tau = np.linspace(lo, hi, 101)
    with seeded(seed):
        profiles, profile_cis = rly.create_performance_profile(matrices, tau, reps=reps)
    out["performance_profile"] = {"tau": tau.tolist(), "profiles": {
        algo: {"fraction": np.asarray(profiles[algo]).tolist(), "ci95": np.asarray(profile_cis[algo]).tolist()}
        for algo in matrices}}
    return out


# ---------------------------------------------------------------- export


def marl_eval_name(metric: str) -> str:
    """marlopt's metric name in marl-eval's style: ``eval/return_mean`` → ``return``,
    ``eval/win_rate`` → ``win_rate``, ``train/return_mean`` → ``train_return``."""
    name = metric.removeprefix("eval/").removesuffix("_mean")
    return name.replace("/", "_").lower()


def marl_eval_export(grouped: dict[str, dict[str, list[Run]]], metrics: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The runs in marl-eval's raw-data format (its README's "Data Structure for Raw Experiment
    data"; the keys its ``JsonLogger`` writes): ``{env: {task: {algo: {"seed_<k>": {"step_<i>":
    {"step_count": frames, "elapsed_time": s, <metric>: [value]}, ..., "absolute_metrics":
    {<metric>: [value]}}}}}}``. Step ``i`` is the ``i``-th row holding ``metrics[0]`` (the
    others go in when the same row has them); each list holds the one logged value (marlopt logs
    the mean over the evaluation episodes); ``absolute_metrics`` holds the last values (the final
    evaluation, not marl-eval's 10×-episode re-evaluation of the best policy). Names are lower
    case (marl-eval lower-cases the names it is asked for). Non-finite values become ``null``."""
    out: dict[str, Any] = {}
    warnings = []
    names = [marl_eval_name(m) for m in metrics]
    for task, algos in grouped.items():
        for algo, runs in algos.items():
            for run in runs:
                steps: dict[str, Any] = {}
                for row in (r for r in run.rows if metrics[0] in r):
                    entry: dict[str, Any] = {"step_count": int(row["step"])}
                    if TIME_KEY in row:
                        entry["elapsed_time"] = float(row[TIME_KEY])
                    entry.update({name: [finite_or_none(row[m])] for m, name in zip(metrics, names) if m in row})
                    steps[f"step_{len(steps)}"] = entry
                last = {name: [finite_or_none(final_value(run, m))] for m, name in zip(metrics, names) if run.has(m)}
                steps["absolute_metrics"] = last
                env = out.setdefault(run.env.lower(), {}).setdefault(run.map_name.lower(), {})
                env.setdefault(algo.lower(), {})[f"seed_{run.seed}"] = steps
            lengths = {sum(metrics[0] in row for row in run.rows) for run in runs}
            if len(lengths) > 1:
                warnings.append(f"marl-eval export: {task} {algo}: seeds have {sorted(lengths)} evaluation steps; "
                                "marl-eval needs the same number in every run")
    return out, warnings


def finite_or_none(value: Any) -> Any:
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(obj: Any) -> Any:
    """``obj`` with numpy values as Python ones and non-finite floats as ``None`` (strict JSON)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return finite_or_none(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    return obj
