"""Side-by-side learning comparisons: algorithms × seeds at equal frames, through the real CLI.

    python scripts/compare.py --name spread --algos mappo maspo mars --seeds 0 1 2 \
        --frames 100000 -- env=mpe map=simple_spread
    python scripts/compare.py --name spread --report     # aggregate + plots from existing runs

Each run goes to ``<out>/<algo>/seed<k>`` (``--out``, default ``runs/compare/<name>/``; a run
whose directory exists is skipped: finished, or being run by another invocation). The report is
``python -m marlopt.plot <out> --out <out>/report`` (docs/results.md): per algorithm the final
``--metric`` (default ``eval/return_mean``, the greedy evaluation after training) as mean over seeds
± the Student-t 95% half-width (with 3 seeds the t quantile is 4.30, not 1.96), learning curves of
``--curve`` against frames and wall-clock time, rliable's aggregates, ``summary.json`` and a
marl-eval export. ``--random-episodes N`` also measures a uniformly random policy over N episodes:
it is drawn on the curves, kept in ``summary.json`` as ``random_policy`` and used as the floor
(``min``) of the score normalisation when the metric is a return.

The plotting extras are checked before anything trains (``pip install -e ".[plot]"``).
Reports written by older versions (``docs/<name>.json`` and PNGs) are left as they are.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from marlopt import plot  # noqa: E402
from marlopt.cli import fail  # noqa: E402
from marlopt.results import ResultsError, t95  # noqa: E402


def run_dir(out: Path, algo: str, seed: int) -> Path:
    return out / algo / f"seed{seed}"


def launch(out: Path, algo: str, seed: int, frames: int, overrides: list[str]) -> float:
    """Train one (algorithm, seed) through ``python -m marlopt.train``; seconds taken (0 if skipped)."""
    path = run_dir(out, algo, seed)
    if path.exists():  # finished, or being run by another invocation (parallel sweeps never collide)
        return 0.0
    cmd = [sys.executable, "-m", "marlopt.train", f"algo={algo}", f"seed={seed}", f"total_steps={frames}",
           "progress=false", "eval_episodes=32", f"hydra.run.dir={path}", *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def random_policy_return(overrides: list[str], episodes: int, seed: int = 0) -> dict:
    """Mean ± t95 team return of the uniformly random policy (over available actions) on the env
    that ``overrides`` select, and that env's task (``<env>/<map>``): the floor every learning
    curve is read against."""
    from marlopt.cli import compose
    from marlopt.config import to_objects
    from marlopt.envs import env_fn

    cfg = to_objects(compose(["progress=false", *overrides]))
    env = env_fn(cfg.env.name, cfg.env.map_name, cfg.env.maker_options())()
    rng = np.random.default_rng(seed)
    returns = []
    try:
        for k in range(episodes):
            _, _, avail = env.reset(seed + k)
            total, done = 0.0, False
            while not done:
                if env.spec.continuous:
                    actions = rng.uniform(-1.0, 1.0, size=(env.spec.n_agents, env.spec.n_actions)).astype(np.float32)
                else:
                    actions = np.array([rng.choice(np.flatnonzero(row)) for row in avail])
                step = env.step(actions)
                total += step.reward
                avail, done = step.avail, step.terminated or step.truncated
            returns.append(total)
    finally:
        env.close()
    mean, half = t95(returns)
    return {"task": f"{cfg.env.name}/{cfg.env.map_name}", "episodes": episodes, "return_mean": float(mean),
            "return_ci95": float(half)}


def report(out: Path, metric: str = "eval/return_mean", curve: str | None = None, title: str = "",
           random: dict | None = None, reps: int = 5000) -> dict:
    """``marlopt.plot``'s report of the runs under ``out``, into ``out/report``; the random
    policy's return (if measured) is the normalisation floor of a return metric."""
    reference = {random["task"]: {"min": random["return_mean"]}} if random and "return" in metric else None
    extra = {"random_policy": random} if random else None
    hlines = ({random["task"]: {"uniform random policy": random["return_mean"]}}
              if random and "return" in (curve or metric) else None)
    return plot.report([out], out / "report", metric=metric, curve_metric=curve, reference=reference,
                       title=title, reps=reps, extra=extra, hlines=hlines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--out", type=Path, default=None, help="directory of the runs and report (default runs/compare/<name>)")
    p.add_argument("--algos", nargs="+", default=["mappo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--title", default="")
    p.add_argument("--report", action="store_true", help="only aggregate and plot existing runs")
    p.add_argument("--metric", default="eval/return_mean", help="metric tabulated and aggregated (its final value)")
    p.add_argument("--curve", default="train/return_mean",
                   help="metric of the learning curves (eval/return_mean: the greedy deployed policy; "
                        "needs eval_interval=... among the overrides)")
    p.add_argument("--random-episodes", type=int, default=0,
                   help="also measure a uniformly random policy over this many episodes")
    p.add_argument("--reps", type=int, default=5000, help="bootstrap replications of the aggregate")
    p.add_argument("overrides", nargs="*", help="config overrides after --, e.g. env=mpe map=simple_spread")
    args = p.parse_args(argv)
    out = (args.out or REPO / "runs" / "compare" / args.name).resolve()
    if out.is_relative_to(REPO / "docs"):
        fail(f"--out {out} is inside docs/; write runs and reports elsewhere (default runs/compare/{args.name})")
    try:
        plot.require_extras()  # before any training
    except ResultsError as err:
        fail(str(err))
    if not args.report:
        for seed in args.seeds:
            for algo in args.algos:
                secs = launch(out, algo, seed, args.frames, args.overrides)
                print(f"{algo} seed {seed}: {secs:.0f} s", flush=True)
    random = random_policy_return(args.overrides, args.random_episodes) if args.random_episodes else None
    try:
        summary = report(out, args.metric, args.curve, args.title or args.name, random, args.reps)
    except ResultsError as err:
        fail(str(err))
    plot.print_summary(summary)
    if random:
        print(f"\nuniform random policy: {random['return_mean']:.4g} ± {random['return_ci95']:.3g} "
              f"({random['episodes']} episodes)")
    print(f"\nreport: {out / 'report'}")


if __name__ == "__main__":
    main()
