"""QMIX against EPyMARL's own QMIX on MPE ``simple_spread`` (3 agents, 25 steps): speed and return.

EPyMARL runs in its own venv from its public code (``scripts/epymarl_qmix.py``: commit, install
pins and the one recorded compatibility edit); marlopt runs ``python -m marlopt.train`` with
EPyMARL's QMIX settings translated key by key (``EPYMARL_MAPPING``; what cannot be matched is in
``UNMATCHED``).

``--mode speed``: the two alternately (never concurrently), ``--repeats`` times, on an idle machine;
frames/s of the training loop without tests/evaluation (EPyMARL: its loop time minus its test
episodes, timed in-process by ``epymarl_qmix.py``; marlopt: the sum of ``time/rollout_s +
time/update_s`` over every round in ``metrics.jsonl``) and of the whole process.

``--mode return``: ``--seeds`` runs of each at ``--frames`` frames (these may run two at a time:
``--jobs 2``), greedy test return every ``--test-interval`` frames over 32 episodes (EPyMARL:
``test_interval``/``test_nepisode``; marlopt: ``eval_interval``/``eval_episodes``), EPyMARL with
``--full-last-reward`` so that both count all 25 rewards of an episode. Reports the final greedy
return, mean ± Student-t 95% over seeds, and plots the curves.

    python3 scripts/epymarl_qmix.py --setup                                  # once
    python scripts/benchmark_qmix.py --mode speed --frames 30000 --repeats 2 --out docs/bench/qmix_mpe_speed.json
    python scripts/benchmark_qmix.py --mode return --frames 100000 --seeds 0 1 2 --jobs 2 \
        --out docs/bench/qmix_mpe_return.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from marlopt.logger import read_metrics as marlopt_metrics

REPO = Path(__file__).resolve().parent.parent
EPYMARL = REPO / "scripts" / "epymarl_qmix.py"
RUNS = REPO / "runs" / "bench_qmix"

# EPyMARL's QMIX defaults (src/config/default.yaml + algs/qmix.yaml + envs/gymma.yaml at the pinned
# commit; `python3 scripts/epymarl_qmix.py --print-config`) -> marlopt overrides.
EPYMARL_MAPPING: list[tuple[str, str, str]] = [
    ("runner=episode batch_size_run=1", "n_envs=1", "one env, one episode per round, one gradient step per episode"),
    ("batch_size=32 buffer_size=5000", "algo.batch_size=32 algo.buffer_size=5000", "episodes"),
    ("lr=0.0005, Adam (torch defaults: eps 1e-8)", "algo.optimizer=adam algo.lr=0.0005 algo.optim_eps=1e-8", ""),
    ("grad_norm_clip=10", "algo.max_grad_norm=10", "agent and mixer together in both"),
    ("target_update_interval_or_tau=200", "algo.target_update_interval=200", "hard copy every 200 episodes"),
    ("epsilon 1.0 -> 0.05 over 50000", "algo.epsilon_start=1 algo.epsilon_finish=0.05 algo.epsilon_anneal_steps=50000", ""),
    ("mixer=qmix mixing_embed_dim=32 hypernet_layers=2 hypernet_embed=64", "algo.mixer=qmix algo.mixing_embed_dim=32 algo.hypernet_embed=64", ""),
    ("agent=rnn use_rnn=False hidden_dim=64", "model.recurrent=false model.hidden_sizes=[64,64]",
     "EPyMARL's 'rnn' agent without its GRU: fc 64, ReLU, fc 64, ReLU, fc out"),
    ("obs_agent_id=True obs_last_action=False", "model.agent_id=true algo.obs_last_action=false", "shared weights"),
    ("double_q=True, one-step targets (no td_lambda)", "algo.double_q=true algo.td_lambda=0", ""),
    ("gamma=0.99", "algo.gamma=0.99", ""),
    ("QMixer reads the raw state", "algo.mixer_state_norm=false", "marlopt's default standardises it"),
    ("standardise_rewards=True standardise_returns=False", "algo.standardise_rewards=true", "running statistics of the sampled rewards"),
    ("common_reward=True reward_scalarisation=sum", "(marlopt's MPE team reward is the sum)", ""),
    ("torch threads 1 (main.py)", "torch_threads=1", "acting runs on one thread in both"),
]
UNMATCHED = [
    "Time limits: EPyMARL stores MPE's time-limit end as a termination (no bootstrap); marlopt bootstraps "
    "from the final observation (truncated, not terminated).",
    "Layer init: EPyMARL's nn.Linear defaults; marlopt's agent layers are orthogonal (gain sqrt 2, head 1), "
    "its mixer nn.Linear defaults.",
    "Learning starts: both once 32 episodes are stored (EPyMARL: t_env >= 800 here).",
]
MARLOPT = ["algo=qmix", "env=mpe", "map=simple_spread", "n_envs=1", "algo.batch_size=32", "algo.buffer_size=5000",
           "algo.optimizer=adam", "algo.lr=0.0005", "algo.optim_eps=1e-8", "algo.max_grad_norm=10",
           "algo.target_update_interval=200", "algo.epsilon_start=1", "algo.epsilon_finish=0.05",
           "algo.epsilon_anneal_steps=50000", "algo.mixer=qmix", "algo.mixing_embed_dim=32", "algo.hypernet_embed=64",
           "model.recurrent=false", "model.hidden_sizes=[64,64]", "model.agent_id=true", "algo.obs_last_action=false",
           "algo.double_q=true", "algo.td_lambda=0", "algo.gamma=0.99", "algo.standardise_rewards=true",
           "algo.mixer_state_norm=false",
           "torch_threads=1", "progress=false"]


def epymarl_python() -> str:
    return "/tmp/epymarl-venv/bin/python"


def run_marlopt(frames: int, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "marlopt.train", *MARLOPT, f"total_steps={frames}", f"seed={seed}",
           f"hydra.run.dir={out}", *extra]
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    rows = marlopt_metrics(out)
    loop = sum(r["time/rollout_s"] + r["time/update_s"] for r in rows if "time/rollout_s" in r)
    evals = [(r["step"], r["eval/return_mean"]) for r in rows if "eval/return_mean" in r]
    return {"frames": frames, "seed": seed, "wall_s": wall, "loop_s": loop, "fps_loop": frames / loop,
            "fps_wall": frames / wall, "test_curve": evals, "run_dir": str(out)}


def run_epymarl(frames: int, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(EPYMARL), "--frames", str(frames), "--seed", str(seed), "--out", str(out), *extra]
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    d = json.loads(out.read_text())
    curve = d["curves"].get("test_return_mean", [])
    return {"frames": d["frames"], "seed": seed, "wall_s": d["wall_s"], "loop_s": d["loop_s"] - d["test_s"],
            "fps_loop": d["fps_loop_no_test"], "fps_wall": d["fps_wall"],
            "test_curve": [tuple(p) for p in curve], "json": str(out)}


def t95(values: list[float]) -> tuple[float, float]:
    from scipy import stats

    x = np.asarray(values, dtype=float)
    half = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")
    return float(x.mean()), half


def speed(args: argparse.Namespace) -> dict:
    runs: dict[str, list[dict]] = {"marlopt": [], "epymarl": []}
    for k in range(args.repeats):
        for which in ("epymarl", "marlopt"):
            out = RUNS / "speed" / f"{which}_{k}"
            if which == "marlopt":
                res = run_marlopt(args.frames, 0, out, ["eval_episodes=1", "log_interval=1"])
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                res = run_epymarl(args.frames, 0, out.with_suffix(".json"), ["--full-last-reward"])
            runs[which].append(res)
            print(f"{which} repeat {k}: fps_loop {res['fps_loop']:.0f}, fps_wall {res['fps_wall']:.0f}", flush=True)
    med = {w: float(np.median([r["fps_loop"] for r in rs])) for w, rs in runs.items()}
    med_wall = {w: float(np.median([r["fps_wall"] for r in rs])) for w, rs in runs.items()}
    return {"mode": "speed", "frames": args.frames, "runs": runs, "fps_loop_median": med, "fps_wall_median": med_wall,
            "ratio_fps_loop": med["marlopt"] / med["epymarl"], "ratio_fps_wall": med_wall["marlopt"] / med_wall["epymarl"]}


def returns(args: argparse.Namespace) -> dict:
    interval = args.test_interval
    jobs = []
    for seed in args.seeds:
        jobs.append(("marlopt", seed, lambda s=seed: run_marlopt(
            args.frames, s, RUNS / "return" / f"marlopt_{s}", [f"eval_interval={interval}", "eval_episodes=32", "log_interval=1"])))
        if args.reuse_epymarl is None:
            jobs.append(("epymarl", seed, lambda s=seed: run_epymarl(
                args.frames, s, RUNS / "return" / f"epymarl_{s}.json",
                ["--full-last-reward", "--set", f"test_interval={interval}", "test_nepisode=32"])))
    (RUNS / "return").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: (job[0], job[1], job[2]()), jobs))
    runs: dict[str, list[dict]] = {"marlopt": [], "epymarl": []}
    for which, seed, res in results:
        runs[which].append(res)
    if args.reuse_epymarl is not None:
        runs["epymarl"] = json.loads(args.reuse_epymarl.read_text())["runs"]["epymarl"]
    summary = {}
    for which, rs in runs.items():
        finals = [r["test_curve"][-1][1] for r in rs]
        mean, half = t95(finals)
        summary[which] = {"final_test_return_mean": mean, "final_test_return_ci95": half, "finals": finals,
                          "final_at_frames": [r["test_curve"][-1][0] for r in rs]}
    plot(runs, args.out.with_suffix(".png"), args.frames)
    return {"mode": "return", "frames": args.frames, "test_interval": interval, "runs": runs, "summary": summary}


def plot(runs: dict[str, list[dict]], path: Path, frames: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for which, rs in runs.items():
        steps = np.array([s for s, _ in rs[0]["test_curve"]])
        vals = np.array([[v for _, v in r["test_curve"]][: len(steps)] for r in rs])
        m = vals.mean(0)
        ax.plot(steps, m, label=f"{which} QMIX (n={len(rs)})")
        if len(rs) > 1:
            half = np.array([t95(list(col))[1] for col in vals.T])
            ax.fill_between(steps, m - half, m + half, alpha=0.2)
    ax.set_xlabel("env frames")
    ax.set_ylabel("greedy test return (team, sum of 25 steps)")
    ax.set_title(f"QMIX on MPE simple_spread, EPyMARL's settings ({frames:,} frames)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("speed", "return"), required=True)
    p.add_argument("--frames", type=int, default=30_000)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=1, help="return mode: runs at a time")
    p.add_argument("--test-interval", type=int, default=10_000)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--print-mapping", action="store_true")
    p.add_argument("--reuse-epymarl", type=Path, default=None,
                   help="return mode: take EPyMARL's runs from this earlier JSON (same frames, seeds, interval)")
    args = p.parse_args()
    if args.print_mapping:
        for epy, ours, note in EPYMARL_MAPPING:
            print(f"{epy:70s} -> {ours}  {note}")
        return
    out = speed(args) if args.mode == "speed" else returns(args)
    out.update({"mapping": EPYMARL_MAPPING, "unmatched": UNMATCHED, "marlopt_overrides": MARLOPT})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    if args.mode == "speed":
        print(f"fps_loop median: marlopt {out['fps_loop_median']['marlopt']:.0f}, epymarl "
              f"{out['fps_loop_median']['epymarl']:.0f} -> {out['ratio_fps_loop']:.2f}x; wall {out['ratio_fps_wall']:.2f}x")
    else:
        for which, s in out["summary"].items():
            print(f"{which}: final greedy return {s['final_test_return_mean']:.2f} ± {s['final_test_return_ci95']:.2f}")


if __name__ == "__main__":
    main()
