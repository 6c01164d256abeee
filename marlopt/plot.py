"""Plot and aggregate the results of many runs: ``python -m marlopt.plot <paths>... --out DIR``.

    python -m marlopt.plot runs/multirun/2026-12-06 --out results/spread
    python -m marlopt.plot runs/compare/spread runs/mpe --out results/all --metric eval/win_rate --x frames
    python -m marlopt.plot multirun/ --out results/ --normalise refs.json   # {"mpe/simple_spread": {"min": -81.0}}

Finds every run under the given paths (:func:`marlopt.results.find_runs`), groups them by task
(``env/map``) and algorithm, and writes into ``--out`` (created):

* ``curves_<env>_<map>_frames.png`` / ``..._time.png``: per task, the mean over seeds ± the
  Student-t 95% interval of ``--curve-metric`` (default ``--metric``) against env frames and
  against the run's wall-clock seconds (``time/elapsed_s``);
* ``aggregate.png``, ``probability_of_improvement.png``, ``performance_profile.png``: rliable's
  IQM, mean, median and optimality gap, the probability of improvement between algorithms, and
  run-score distributions, over the normalised final ``--metric`` of every task, with stratified
  bootstrap 95% CIs;
* ``summary.json``: per task × algorithm the seeds, final values and mean ± t95; the
  normalisation; the aggregate numbers with their CIs; the warnings;
* ``marl_eval.json``: the runs in InstaDeep marl-eval's raw-data format.

What each statistic is and why: docs/results.md. Needs ``pip install -e ".[plot]"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from marlopt import results
from marlopt.results import ResultsError

EXTRAS = ("matplotlib", "scipy.stats", "rliable.library")
X_LABELS = {"frames": "env frames", "time": "wall-clock seconds (time/elapsed_s)"}
AGGREGATE_LABELS = {"iqm": "IQM", "mean": "Mean", "median": "Median", "optimality_gap": "Optimality gap"}


def require_extras() -> None:
    """Import the plotting extras now, so a missing one fails in one line before any work."""
    import importlib

    missing = []
    for name in EXTRAS:
        try:
            importlib.import_module(name)
        except ImportError as err:
            missing.append(f"{name} ({err})")
    if missing:
        raise ResultsError(f"plotting needs {', '.join(missing)}; install the extras: pip install -e \".[plot]\"")


def load_reference(path: Path) -> dict[str, dict[str, float]]:
    """A ``--normalise`` file: ``{"<env>/<map>": {"min": score, "max": score}}`` (either bound)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ResultsError(f"--normalise {path}: cannot be read as JSON ({err})") from err
    ok = isinstance(data, dict) and all(isinstance(v, dict) and v and set(v) <= {"min", "max"} and
                                        all(isinstance(b, (int, float)) for b in v.values()) for v in data.values())
    if not ok:
        raise ResultsError(f'--normalise {path}: expected {{"<env>/<map>": {{"min": number, "max": number}}}}')
    return data


def report(paths: list[str | Path], out: Path, metric: str = "eval/return_mean", curve_metric: str | None = None,
           xs: tuple[str, ...] = ("frames", "time"), normalise: str = "auto",
           reference: dict[str, dict[str, float]] | None = None, reps: int = 5000, seed: int = 0,
           title: str = "", extra: dict[str, Any] | None = None,
           hlines: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Find, group, reduce and plot the runs under ``paths`` into ``out``; returns the summary
    (also written to ``out/summary.json``; ``extra`` is added to it). Warnings go to stderr as
    they arise. ``hlines`` (``{task: {label: value}}``, e.g. a random policy's return) and the
    normalisation bounds given in ``reference`` are drawn on the task's curves of ``metric``."""
    require_extras()
    curve_metric = curve_metric or metric
    runs, warnings = results.find_runs(paths)
    runs, dropped = results.select_metric(runs, metric)
    warnings += dropped
    results.select_metric(runs, curve_metric)  # an error when no run logged it
    grouped = results.group(runs)
    table = results.task_table(grouped, metric)
    norm = results.normalisation(grouped, metric, normalise, reference)
    matrices, tasks, more = results.score_matrices(table, norm)
    warnings += more
    out.mkdir(parents=True, exist_ok=True)
    for line in warnings:
        print(f"marlopt: warning: {line}", file=sys.stderr)

    files = []
    for task, algos in grouped.items():
        for x in xs:
            lines = dict((hlines or {}).get(task, {}))
            if curve_metric == metric:
                lines.update({f"normalisation {k} (given)": v for k, v in (reference or {}).get(task, {}).items()})
            path = plot_curves(out, task, algos, curve_metric, x, lines, title)
            if path is not None:
                files.append(path.name)
    summary: dict[str, Any] = {
        "metric": metric, "curve_metric": curve_metric, "runs": len(runs),
        "tasks": table,
        "normalisation": {"rule": "score = (value - min) / (max - min) per task", "per_task": norm},
        "aggregate": None,
    }
    if matrices:
        agg = results.aggregate(matrices, reps=reps, seed=seed)
        agg["tasks"] = tasks
        agg["runs_per_task"] = int(next(iter(matrices.values())).shape[0])
        agg["scores"] = {algo: m.tolist() for algo, m in matrices.items()}
        summary["aggregate"] = agg
        files += plot_aggregate(out, agg, metric)
    exported, more = results.marl_eval_export(grouped, [metric, *(["eval/win_rate"] if metric != "eval/win_rate"
                                                                   and metric.startswith("eval/") else [])])
    for line in more:
        print(f"marlopt: warning: {line}", file=sys.stderr)
    (out / "marl_eval.json").write_text(json.dumps(results.jsonable(exported), indent=1, allow_nan=False) + "\n")
    summary["warnings"] = warnings + more
    summary["files"] = [*files, "marl_eval.json", "summary.json"]
    summary.update(extra or {})
    (out / "summary.json").write_text(json.dumps(results.jsonable(summary), indent=2, allow_nan=False) + "\n")
    return summary


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(out: Path, task: str, algos: dict[str, list[results.Run]], metric: str, x: str,
                lines: dict[str, float], title: str) -> Path | None:
    """One task's learning curves (mean ± t95 over seeds) against ``x``, with horizontal
    reference ``lines`` (label: value); None without data."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for algo, runs in algos.items():
        runs = [run for run in runs if run.has(metric)]
        c = results.curve(runs, metric, x) if runs else None
        if c is None:
            continue
        line, = ax.plot(c["x"], c["mean"], label=f"{algo} (n={len(runs)})", marker="o" if len(c["x"]) == 1 else None)
        if len(runs) > 1:
            ax.fill_between(c["x"], c["mean"] - c["ci95"], c["mean"] + c["ci95"], alpha=0.2, color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    for k, (label, value) in enumerate(lines.items()):
        ax.axhline(value, color="grey", linestyle=(":", "--", "-.")[k % 3], linewidth=1, label=label)
    ax.set_xlabel(X_LABELS[x])
    ax.set_ylabel(metric)
    ax.set_title(f"{title + ': ' if title else ''}{task} (mean ± t95 over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / f"curves_{task.replace('/', '_')}_{x}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_aggregate(out: Path, agg: dict[str, Any], metric: str) -> list[str]:
    """rliable's three figures: aggregates with CIs, probability of improvement, performance profiles."""
    import numpy as np

    plt = _pyplot()
    algos = list(agg["aggregates"])
    fig, axes = plt.subplots(1, len(results.AGGREGATES), figsize=(3.2 * len(results.AGGREGATES), 1.4 + 0.4 * len(algos)),
                             sharey=True)
    for ax, name in zip(axes, results.AGGREGATES):
        for i, algo in enumerate(algos):
            cell = agg["aggregates"][algo][name]
            lo, hi = cell["ci95"]
            ax.barh(i, hi - lo, left=lo, height=0.6, alpha=0.6, color=f"C{i}")
            ax.plot([cell["value"]] * 2, [i - 0.3, i + 0.3], color="black")
        ax.set_title(AGGREGATE_LABELS[name])
        ax.set_yticks(range(len(algos)), algos)
        ax.set_xlabel("normalised score")
    fig.suptitle(f"{metric}, {len(agg['tasks'])} task(s) × {agg['runs_per_task']} run(s): stratified bootstrap 95% CIs",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    fig.savefig(out / "aggregate.png", dpi=110)
    plt.close(fig)
    files = ["aggregate.png"]

    poi = agg["probability_of_improvement"]
    if poi:
        fig, ax = plt.subplots(figsize=(5, 0.6 + 0.45 * len(poi)))
        for i, (pair, cell) in enumerate(poi.items()):
            lo, hi = cell["ci95"]
            ax.barh(i, hi - lo, left=lo, height=0.6, alpha=0.6)
            ax.plot([cell["value"]] * 2, [i - 0.3, i + 0.3], color="black")
        ax.axvline(0.5, color="grey", linestyle=":")
        ax.set_yticks(range(len(poi)), [p.replace(",", " > ") for p in poi])
        ax.set_xlim(0, 1)
        ax.set_xlabel("P(X > Y) with stratified bootstrap 95% CI")
        fig.tight_layout()
        fig.savefig(out / "probability_of_improvement.png", dpi=110)
        plt.close(fig)
        files.append("probability_of_improvement.png")

    prof = agg["performance_profile"]
    fig, ax = plt.subplots(figsize=(6, 4))
    tau = np.asarray(prof["tau"])
    for algo, cell in prof["profiles"].items():
        line, = ax.plot(tau, cell["fraction"], label=algo)
        lo, hi = np.asarray(cell["ci95"], dtype=float)
        ax.fill_between(tau, lo, hi, alpha=0.15, color=line.get_color())
    ax.set_xlabel("normalised score τ")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "performance_profile.png", dpi=110)
    plt.close(fig)
    return [*files, "performance_profile.png"]


def print_summary(summary: dict[str, Any]) -> None:
    """The per-task table and the aggregate, as Markdown, on stdout."""
    print(f"| task | algo | seeds | final {summary['metric']} (mean ± t95) |")
    print("|---|---|---|---|")
    for task, per in summary["tasks"].items():
        for algo, cell in per.items():
            print(f"| {task} | {algo} | {len(cell['seeds'])} | {cell['mean']:.4g} ± {cell['ci95']:.3g} |")
    agg = summary["aggregate"]
    if agg:
        print(f"\n| algo | {' | '.join(AGGREGATE_LABELS[a] for a in results.AGGREGATES)} |  (normalised, 95% CI)")
        print("|---|" + "---|" * len(results.AGGREGATES))
        for algo, cells in agg["aggregates"].items():
            print(f"| {algo} | " + " | ".join(f"{c['value']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"
                                              for c in cells.values()) + " |")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m marlopt.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", help="run directories, or directories holding runs anywhere below")
    p.add_argument("--out", required=True, type=Path, help="directory for the figures and JSON files (created)")
    p.add_argument("--metric", default="eval/return_mean",
                   help="metric whose final value is tabulated and aggregated (default: eval/return_mean)")
    p.add_argument("--curve-metric", default=None, help="metric of the learning curves (default: --metric)")
    p.add_argument("--x", choices=("frames", "time", "both"), default="both",
                   help="x axis of the learning curves: env frames, wall-clock seconds, or both (default)")
    p.add_argument("--normalise", default="auto",
                   help="per-task score normalisation for the aggregate: auto (none for win rates, else minmax), "
                        "minmax, none, or a JSON file {\"<env>/<map>\": {\"min\": m, \"max\": M}}")
    p.add_argument("--reps", type=int, default=5000, help="bootstrap replications (default 5000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap (default 0)")
    p.add_argument("--title", default="", help="prefix of the curve titles")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from marlopt.cli import fail

    args = parse_args(argv)
    try:
        require_extras()
        if args.reps < 1:
            raise ResultsError(f"--reps must be >= 1 (got {args.reps})")
        normalise, reference = args.normalise, None
        if normalise not in ("auto", "minmax", "none"):
            reference, normalise = load_reference(Path(normalise)), "auto"
        xs = ("frames", "time") if args.x == "both" else (args.x,)
        summary = report(args.paths, args.out, args.metric, args.curve_metric, xs, normalise, reference,
                         args.reps, args.seed, args.title)
    except ResultsError as err:
        fail(str(err))
    except OSError as err:
        fail(f"{err.filename or args.out}: {err.strerror or err}; choose a writable --out")
    print_summary(summary)
    print(f"\nwrote {', '.join(summary['files'])} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
