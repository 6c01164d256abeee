"""Side-by-side learning comparisons: algorithms × seeds at equal frames, through the real CLI.

    python scripts/compare.py --name spread --algos mappo maspo mars --seeds 0 1 2 \
        --frames 100000 -- env=mpe map=simple_spread
    python scripts/compare.py --name spread --report     # aggregate + plots from existing runs

Each run goes to ``runs/compare/<name>/<algo>/seed<k>`` (skipped when already finished). The
report gives, per algorithm, the final greedy evaluation return (mean over seeds ± a Student-t 95%
interval — with 3 seeds the t quantile is 4.30, not 1.96) and the mean training return over the
last 20% of frames (and the guider's greedy return for MAGPO/CTDS), writes ``docs/<name>.json``
and plots ``docs/<name>_return.png`` (``--curve``: the metric of the curves, e.g. ``eval/return_mean``
for greedy evaluation curves; ``--random-episodes``: a uniformly random policy's return as the
floor) and, for the ratio diagnostics, ``docs/<name>_ratios.png``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from marlopt.logger import read_metrics as marlopt_metrics

REPO = Path(__file__).resolve().parents[1]


def run_dir(name: str, algo: str, seed: int) -> Path:
    return REPO / "runs" / "compare" / name / algo / f"seed{seed}"


def read(path: Path) -> list[dict]:
    return marlopt_metrics(path)


def finished(path: Path) -> bool:
    return (path / "metrics.jsonl").is_file() and any("eval/return_mean" in r for r in read(path)[-1:])


def launch(name: str, algo: str, seed: int, frames: int, overrides: list[str]) -> float:
    out = run_dir(name, algo, seed)
    if out.exists():  # finished, or being run by another invocation (parallel sweeps never collide)
        return 0.0
    cmd = [sys.executable, "-m", "marlopt.train", f"algo={algo}", f"seed={seed}", f"total_steps={frames}",
           "progress=false", "eval_episodes=32", f"hydra.run.dir={out}", *overrides]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True)
    return time.perf_counter() - t0


def t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of the Student-t 95% interval over seeds."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float("nan")
    return float(x.mean()), float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))


def curve(rows: list[dict], key: str, grid: np.ndarray) -> np.ndarray:
    pts = [(r["step"], r[key]) for r in rows if key in r]
    if not pts:
        return np.full_like(grid, np.nan, dtype=float)
    steps, vals = map(np.asarray, zip(*pts))
    return np.interp(grid, steps, vals)


def random_policy_return(overrides: list[str], episodes: int, seed: int = 0) -> dict:
    """Mean ± t95 team return of the uniformly random policy (over available actions) on the env
    that ``overrides`` select: the floor every learning curve is read against."""
    sys.path.insert(0, str(REPO))
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
    mean, half = t_interval(returns)
    return {"episodes": episodes, "return_mean": mean, "return_ci95": half}


def report(name: str, algos: list[str], seeds: list[int], title: str, curve_key: str = "train/return_mean",
           random: dict | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary: dict[str, dict] = {}
    runs = {a: {s: read(run_dir(name, a, s)) for s in seeds if finished(run_dir(name, a, s))} for a in algos}
    frames = max(r[-1]["step"] for per in runs.values() for r in per.values())
    grid = np.linspace(frames / 50, frames, 50)
    fig, ax = plt.subplots(figsize=(6, 4))
    has_ratios = any("ratio/max" in row for per in runs.values() for r in per.values() for row in r)
    fig_r, axes_r = plt.subplots(1, 2, figsize=(10, 4)) if has_ratios else (None, None)
    for algo, per_seed in runs.items():
        if not per_seed:
            continue
        finals = [r[-1]["eval/return_mean"] for r in per_seed.values()]
        late = [np.mean([row["train/return_mean"] for row in r if "train/return_mean" in row
                         and row["step"] >= 0.8 * frames]) for r in per_seed.values()]
        mean, half = t_interval(finals)
        late_mean, late_half = t_interval(late)
        wins = [r[-1].get("eval/win_rate") for r in per_seed.values()]
        summary[algo] = {"seeds": len(finals), "eval_return_mean": mean, "eval_return_ci95": half,
                         "eval_win_rate": None if None in wins else float(np.mean(wins)),
                         "eval_returns": finals, "train_return_last20pct": late_mean, "train_return_ci95": late_half}
        guider = [r[-1].get("eval/guider_return_mean") for r in per_seed.values()]
        if None not in guider:  # MAGPO/CTDS: the centralised guider, evaluated beside the learner
            g_mean, g_half = t_interval(guider)
            summary[algo].update({"guider_eval_return_mean": g_mean, "guider_eval_return_ci95": g_half})
        curves = np.stack([curve(r, curve_key, grid) for r in per_seed.values()])
        m = curves.mean(0)
        line, = ax.plot(grid, m, label=f"{algo} (n={len(finals)})")
        if curve_key == "eval/return_mean" and None not in guider:  # the guider's greedy curve, dashed
            g = np.stack([curve(r, "eval/guider_return_mean", grid) for r in per_seed.values()]).mean(0)
            ax.plot(grid, g, linestyle="--", color=line.get_color(), label=f"{algo} guider")
        if len(finals) > 1:
            _, h = zip(*[t_interval(list(c)) for c in curves.T])
            ax.fill_between(grid, m - np.asarray(h), m + np.asarray(h), alpha=0.2)
        if has_ratios:
            for k, key in enumerate(("ratio/max", "ratio/min")):
                rc = np.stack([curve(r, key, grid) for r in per_seed.values()])
                if np.isnan(rc).all():  # a rule without ratio diagnostics (HAPPO, MAGPO)
                    continue
                axes_r[k].plot(grid, rc.mean(0), label=algo)
                summary[algo][key.replace("/", "_") + "_extreme"] = float(rc.max() if k == 0 else rc.min())
    if random is not None:
        ax.axhline(random["return_mean"], color="grey", linestyle=":", label="uniform random policy")
    ax.set_xlabel("env frames")
    ax.set_ylabel({"train/return_mean": "training return (team)",
                   "eval/return_mean": "greedy evaluation return (team)"}.get(curve_key, curve_key))
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    docs = REPO / "docs"
    fig.savefig(docs / f"{name}_return.png", dpi=110)
    if has_ratios:
        for k, label in enumerate(("max per-sample ratio per update", "min per-sample ratio per update")):
            axes_r[k].set_title(label)
            axes_r[k].set_xlabel("env frames")
            axes_r[k].legend()
        axes_r[1].set_yscale("log")
        fig_r.tight_layout()
        fig_r.savefig(docs / f"{name}_ratios.png", dpi=110)
    out = {"frames": frames, "title": title, "curve": curve_key, "results": summary}
    if random is not None:
        out["random_policy"] = random
    (docs / f"{name}.json").write_text(json.dumps(out, indent=2) + "\n")
    return summary


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True)
    p.add_argument("--algos", nargs="+", default=["mappo"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--frames", type=int, default=100_000)
    p.add_argument("--title", default="")
    p.add_argument("--report", action="store_true", help="only aggregate and plot existing runs")
    p.add_argument("--curve", default="train/return_mean",
                   help="metric of the learning curves (eval/return_mean: the greedy deployed policy; "
                        "needs eval_interval=... among the overrides)")
    p.add_argument("--random-episodes", type=int, default=0,
                   help="also measure a uniformly random policy over this many episodes")
    p.add_argument("overrides", nargs="*", help="config overrides after --, e.g. env=mpe map=simple_spread")
    args = p.parse_args()
    if not args.report:
        for seed in args.seeds:
            for algo in args.algos:
                secs = launch(args.name, algo, seed, args.frames, args.overrides)
                print(f"{algo} seed {seed}: {secs:.0f} s", flush=True)
    random = random_policy_return(args.overrides, args.random_episodes) if args.random_episodes else None
    summary = report(args.name, args.algos, args.seeds, args.title or args.name, args.curve, random)
    print("| algo | seeds | greedy eval return (mean ± t95) | train return, last 20% |")
    print("|---|---|---|---|")
    for algo, s in summary.items():
        print(f"| {algo} | {s['seeds']} | {s['eval_return_mean']:.2f} ± {s['eval_return_ci95']:.2f} | "
              f"{s['train_return_last20pct']:.2f} ± {s['train_return_ci95']:.2f} |")


if __name__ == "__main__":
    main()
