"""Learning with HARL's MPE settings: marlopt's runs against HARL's own runs, seed by seed.

Both libraries log the mean *training* team return (sum over the 3 agents, 25 steps, sampled
actions) of the episodes that ended since the last log line. HARL prints it every 5 updates of
800 frames (160 episodes, its log line "average episode reward is R"); marlopt logs it every
iteration (32 episodes), so its curve is averaged over blocks of 5 iterations: the same 160
episodes, the same 4,000-frame blocks. The improvement over a uniform random policy uses one
random baseline for both (mpe2 ``simple_spread_v3``, discrete, seeds 0..4 × ``--random-episodes``).

    python scripts/compare_learning.py --harl-logs 'harl/logs/seed*.log' \\
        --marlopt-runs /tmp/bench_s*/rep0/harl-settings/run --out docs/bench/learning_vs_harl.json

HARL's side is produced by HARL's ``examples/train.py`` (see ``docs/bench/harl_mappo_mpe/README.md``
for the command and the three compatibility changes it needed); marlopt's by
``scripts/benchmark.py --which harl-settings --seed N --keep``.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import statistics
import sys
from pathlib import Path

import numpy as np
from scipy import stats
from marlopt.logger import read_metrics as marlopt_metrics

BLOCK_FRAMES = 4000  # HARL: log_interval 5 updates x 4 envs x 200 steps
HARL_LINE = re.compile(r"average episode reward is (-?\d+(?:\.\d+)?)")


def harl_curve(log: Path) -> list[float]:
    """HARL's logged training returns, one per 4,000-frame block."""
    return [float(x) for x in HARL_LINE.findall(log.read_text())]


def marlopt_curve(run: Path, frames_per_iteration: int = 800) -> list[float]:
    """marlopt's per-iteration training returns averaged over 4,000-frame blocks."""
    metrics = run / "metrics.jsonl" if run.is_dir() else run
    rows = marlopt_metrics(metrics)
    returns = [r["train/return_mean"] for r in rows if "train/return_mean" in r]
    per_block = BLOCK_FRAMES // frames_per_iteration
    n = len(returns) // per_block
    return [float(np.mean(returns[k * per_block : (k + 1) * per_block])) for k in range(n)]


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t interval."""
    if len(values) < 2:
        return float(np.mean(values)), float("nan")
    half = stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5
    return float(np.mean(values)), float(half)


def random_baseline(episodes: int) -> float:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from benchmark import random_policy_return

    return float(np.mean([random_policy_return(episodes, seed)["return_mean"] for seed in range(5)]))


def compare(harl: dict[str, list[float]], ours: dict[str, list[float]], random_return: float) -> dict:
    blocks = min(min(map(len, harl.values())), min(map(len, ours.values())))
    final_h = [c[blocks - 1] - random_return for c in harl.values()]
    final_o = [c[blocks - 1] - random_return for c in ours.values()]
    area_h = [float(np.mean(c[:blocks])) - random_return for c in harl.values()]
    area_o = [float(np.mean(c[:blocks])) - random_return for c in ours.values()]
    welch = stats.ttest_ind(final_o, final_h, equal_var=False)
    checkpoints = {}
    for k in sorted({max(0, blocks * f // 6 - 1) for f in range(1, 7)} | ({4} if blocks > 4 else set())):
        checkpoints[(k + 1) * BLOCK_FRAMES] = {
            "harl": float(np.mean([c[k] for c in harl.values()]) - random_return),
            "marlopt": float(np.mean([c[k] for c in ours.values()]) - random_return),
        }
    return {
        "random_return": random_return, "frames": blocks * BLOCK_FRAMES,
        "harl": {"runs": list(harl), "final_improvement": final_h, "area_improvement": area_h,
                 "final_mean_ci95": mean_ci(final_h), "area_mean_ci95": mean_ci(area_h)},
        "marlopt": {"runs": list(ours), "final_improvement": final_o, "area_improvement": area_o,
                    "final_mean_ci95": mean_ci(final_o), "area_mean_ci95": mean_ci(area_o)},
        "welch_final": {"t": float(welch.statistic), "p": float(welch.pvalue)},
        "difference_final": float(np.mean(final_o) - np.mean(final_h)),
        "curve_improvement": checkpoints,
    }


def markdown(r: dict) -> str:
    def fmt(mc: tuple[float, float]) -> str:
        return f"{mc[0]:.1f} ± {mc[1]:.1f}"

    h, o = r["harl"], r["marlopt"]
    lines = [
        f"Improvement over a uniform random policy ({r['random_return']:.2f}) after {r['frames']:,} frames, "
        "training return of the last 160 episodes (mean ± t95 over seeds):",
        "",
        "| | runs | per run | mean ± t95 | whole-run mean (area) |",
        "|---|---|---|---|---|",
        f"| HARL's own code | {len(h['runs'])} | {', '.join(f'{x:.1f}' for x in h['final_improvement'])} | "
        f"{fmt(h['final_mean_ci95'])} | {fmt(h['area_mean_ci95'])} |",
        f"| marlopt | {len(o['runs'])} | {', '.join(f'{x:.1f}' for x in o['final_improvement'])} | "
        f"{fmt(o['final_mean_ci95'])} | {fmt(o['area_mean_ci95'])} |",
        "",
        f"marlopt − HARL: {r['difference_final']:+.2f} (Welch t = {r['welch_final']['t']:.2f}, "
        f"p = {r['welch_final']['p']:.2f}).",
        "",
        "| frames | " + " | ".join(f"{int(f) // 1000}k" for f in r["curve_improvement"]) + " |",
        "|---|" + "---|" * len(r["curve_improvement"]),
        "| HARL | " + " | ".join(f"{v['harl']:.1f}" for v in r["curve_improvement"].values()) + " |",
        "| marlopt | " + " | ".join(f"{v['marlopt']:.1f}" for v in r["curve_improvement"].values()) + " |",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harl-logs", required=True, help="glob of HARL stdout logs (one run each)")
    p.add_argument("--marlopt-runs", nargs="+", required=True, help="marlopt run directories (or metrics.jsonl)")
    p.add_argument("--random-return", type=float, default=None, help="skip measuring the random baseline")
    p.add_argument("--random-episodes", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="write the JSON here (and the Markdown next to it)")
    args = p.parse_args()
    harl = {path: harl_curve(Path(path)) for path in sorted(glob.glob(args.harl_logs))}
    ours = {str(run): marlopt_curve(Path(run)) for run in args.marlopt_runs}
    full = max(map(len, [*harl.values(), *ours.values()]), default=0)
    for name, curve in [*harl.items(), *ours.items()]:
        if len(curve) < full:
            print(f"compare_learning: leaving out {name}: {len(curve)} of {full} blocks (unfinished run?)")
    harl = {k: v for k, v in harl.items() if len(v) == full}
    ours = {k: v for k, v in ours.items() if len(v) == full}
    if not harl or not ours:
        raise SystemExit(f"compare_learning: no HARL curves ({args.harl_logs}) or no marlopt runs")
    random_return = args.random_return if args.random_return is not None else random_baseline(args.random_episodes)
    result = compare(harl, ours, random_return)
    text = markdown(result)
    print(text)
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(text)


if __name__ == "__main__":
    main()
