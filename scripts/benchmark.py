"""Speed benchmark: a full MAPPO training run on MPE ``simple_spread`` (3 agents, 25 steps).

Runs, one after the other (never concurrently), for each repeat:

``marlopt``
    ``python -m marlopt.train`` with BenchMARL's default MAPPO settings translated to marlopt's
    keys (``BENCHMARL_MAPPING`` below; what cannot be matched is in ``UNMATCHED``).
``benchmarl``
    BenchMARL 1.5.2's MAPPO with its default settings, through ``scripts/benchmarl_mappo.py`` in
    its own venv (create it once with ``python3 scripts/benchmarl_mappo.py --setup``).
``harl-settings``
    ``python -m marlopt.train`` with HARL's MPE settings (MLP [128, 128], 4 envs x 200 steps,
    5 epochs, 1 minibatch; discrete actions), reporting the final return against a uniform random
    policy's (measured here on 200 episodes of mpe2 ``simple_spread``; team reward = sum of the
    agents' rewards, as marlopt logs it).

For every run: frames/s, the peak memory of the process tree (the run's process and all its
children, e.g. marlopt's env workers; sum of RSS, which counts shared pages once per process, and
sum of PSS, which splits them; sampled every ``--sample-interval`` s from /proc) and the
rollout/update time split. Frames are env steps summed over the parallel envs, the same unit in
both libraries. Three frames/s figures:

- ``fps_loop``: frames / the training loop's own timers (marlopt: the sum of the per-iteration
  ``time/rollout_s + time/update_s`` in ``metrics.jsonl``; BenchMARL: ``timers/total_time``, the
  sum of its per-iteration collection + training + logging times). The headline number.
- ``fps_wall``: frames / the wall time of the whole process (imports, env and network
  construction, the final evaluation, checkpoint, teardown).
- ``fps_wall_nostart``: frames / (process wall time - startup); startup = until marlopt creates
  ``metrics.jsonl`` (polled, so +- one sample interval) or until BenchMARL's ``Experiment.run``
  starts (timed inside ``benchmarl_mappo.py``).

A profile of marlopt's speed (``--profile-iterations``, default 2): an in-process runner with the
``marlopt`` run's settings, timing every ``VectorEnv.step`` (env stepping; with subproc workers
this is the main process waiting on them), ``Actor.act`` and ``Critic.value`` (policy and value
inference), ``RolloutBuffer.insert`` and the update, plus optionally a cProfile listing.

Usage (the full benchmark wants an otherwise idle machine; it takes long: BenchMARL's 675
minibatch steps per 6000 frames make it slow)::

    python3 scripts/benchmarl_mappo.py --setup                 # once: /tmp/benchmarl-venv
    python scripts/benchmark.py --frames 300000 --repeats 3 --out docs/bench/speed_mpe.json
    python scripts/benchmark.py --frames 4000 --repeats 1 --out /tmp/bench.json   # smoke test
    python scripts/benchmark.py --which marlopt,harl-settings --print-commands     # show, run nothing
    python scripts/benchmark.py --vs jaxmarl --jaxmarl-dir <checkout> --task mpe   # scripts/bench_jaxmarl.py
    python scripts/benchmark.py --vs harl --harl-dir <checkout> --frames 300000     # scripts/bench_harl.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable

from marlopt.logger import read_metrics as marlopt_metrics

REPO = Path(__file__).resolve().parent.parent
BENCHMARL_SCRIPT = REPO / "scripts" / "benchmarl_mappo.py"
DEFAULT_BENCHMARL_PYTHON = "/tmp/benchmarl-venv/bin/python"
WHICH = ("marlopt", "benchmarl", "harl-settings")

# BenchMARL 1.5.2 defaults (conf/experiment/base_experiment.yaml, conf/algorithm/mappo.yaml,
# conf/model/layers/mlp.yaml) -> marlopt overrides. Frames per batch 6000 over 10 envs = 600 steps
# per env; minibatch 400 env steps = 6000/400 = 15 minibatches; 45 passes over the batch.
BENCHMARL_MAPPING: list[tuple[str, str, str]] = [
    ("on_policy_n_envs_per_worker=10", "n_envs=10", "BenchMARL steps them serially in-process; marlopt's "
     "MPE's env.vector=hybrid steps a share in the training process and the rest in cores-1 workers "
     "-> see --marlopt-vector"),
    ("on_policy_collected_frames_per_batch=6000", "rollout_length=600", "6000 / 10 envs"),
    ("on_policy_minibatch_size=400", "algo.num_minibatches=15", "6000 / 400 env steps (x 3 agents each)"),
    ("on_policy_n_minibatch_iters=45", "algo.ppo_epochs=45", "45 passes x 15 minibatches = 675 steps"),
    ("lr=5e-5 (actor and critic)", "algo.lr=5e-5 algo.critic_lr=5e-5", "separate Adam optimisers in both"),
    ("adam_eps=1e-6", "algo.adam_eps=1e-6", ""),
    ("clip_grad_norm=true clip_grad_val=5", "algo.max_grad_norm=5", "per optimiser in both"),
    ("gamma=0.99", "algo.gamma=0.99", ""),
    ("mappo.lmbda=0.9", "algo.gae_lambda=0.9", ""),
    ("mappo.clip_epsilon=0.2", "algo.objective.clip=0.2", ""),
    ("mappo.entropy_coef=0.0", "algo.entropy_coef=0.0", ""),
    ("mappo.critic_coef=1.0", "algo.value_loss_coef=1.0", ""),
    ("mappo.loss_critic_type=l2", "algo.huber_delta=null", "squared error"),
    ("ClipPPOLoss clip_value=None", "algo.value_clip=null", "no value clipping"),
    ("no value normalisation", "algo.use_valuenorm=false", ""),
    ("ClipPPOLoss normalize_advantage=false", "algo.advantage_norm=false", ""),
    ("mlp num_cells=[256,256]", "model.hidden_sizes=[256,256] model.recurrent=false", "actor and critic"),
    ("mlp activation_class=torch.nn.Tanh", "model.activation=tanh", ""),
    ("mlp norm_class=null", "model.feature_norm=false model.layer_norm=false", ""),
    ("share_policy_params=true, no agent id", "model.sharing=shared model.agent_id=false", ""),
    ("share_param_critic=true, critic on the global state", "model.critic_agent_id=false",
     "one centralised value on the state (the concatenated observations) in both"),
    ("prefer_continuous_actions=true", "env.continuous=true", "--actions discrete switches both to discrete"),
    ("task.max_cycles=100 (overridden to 25)", "env.options.max_cycles=25 (marlopt's default)",
     "the benchmark task is 25 steps"),
    ("evaluation=false (overridden; default: every 120k frames)", "eval_interval=0 eval_episodes=1",
     "marlopt always evaluates once after the loop: outside fps_loop, inside fps_wall"),
    ("checkpoint_interval=0", "latest_interval/save_interval > frames",
     "marlopt still writes checkpoints/latest.pt once at the end"),
    ("seed=0", "seed=0", ""),
]

UNMATCHED: list[str] = [
    "Rewards: BenchMARL trains each agent on its own PettingZoo reward (GAE per agent, one shared value "
    "expanded to the agents); marlopt trains on the team reward (sum of the agents' rewards). Same "
    "network sizes and compute per step; different learning signal.",
    "Continuous policy: BenchMARL uses a TanhNormal with a state-dependent scale (biased_softplus_1.0, "
    "the head outputs 2x action dims); marlopt a diagonal Gaussian with a state-independent log std "
    "(model.log_std_init), actions clipped to mpe2's [0, 1].",
    "Initialisation: BenchMARL uses torch's default Linear init; marlopt orthogonal init (head gain "
    "model.head_gain). No effect on speed.",
    "Env stepping: BenchMARL steps 10 PettingZoo envs one after another in its process through torchrl's "
    "PettingZooEnv + SerialEnv (parallel_collection=false); marlopt's MPE default env.vector=hybrid "
    "steps half the envs in its process and half in a worker on 2 cores and drives mpe2's SimpleEnv directly. Each library's "
    "default is kept; --marlopt-vector inproc gives marlopt the same single-process layout.",
    "Threads: marlopt's default (torch_threads=0) runs rollout inference on 1 thread and the update "
    "on all cores; BenchMARL leaves torch's default (one per core). --marlopt-threads / "
    "--benchmarl-threads change them.",
    "Episode length: BenchMARL's simple_spread default is max_cycles=100; both run 25 here.",
    "BenchMARL frames are rounded up to whole 6000-frame batches (max_n_frames), marlopt's to whole "
    "iterations (6000 frames with these settings); the frames actually run are what is reported.",
]

HARL_OVERRIDES = ["model.hidden_sizes=[128,128]", "model.recurrent=false", "n_envs=4", "rollout_length=200",
                  "algo.ppo_epochs=5", "algo.num_minibatches=1"]


def vector_override(args: argparse.Namespace) -> list[str]:
    return [] if args.marlopt_vector == "default" else [f"env.vector={args.marlopt_vector}"]


def marlopt_benchmarl_overrides(args: argparse.Namespace) -> list[str]:
    return [
        "algo=mappo", "env=mpe", "map=simple_spread", f"seed={args.seed}",
        "n_envs=10", "rollout_length=600", "algo.num_minibatches=15", "algo.ppo_epochs=45",
        "algo.lr=5e-5", "algo.critic_lr=5e-5", "algo.adam_eps=1e-6", "algo.max_grad_norm=5",
        "algo.gamma=0.99", "algo.gae_lambda=0.9", "algo.objective.clip=0.2", "algo.entropy_coef=0.0",
        "algo.value_loss_coef=1.0", "algo.huber_delta=null", "algo.value_clip=null",
        "algo.use_valuenorm=false", "algo.advantage_norm=false",
        "model.hidden_sizes=[256,256]", "model.recurrent=false", "model.activation=tanh",
        "model.feature_norm=false", "model.layer_norm=false", "model.sharing=shared", "model.agent_id=false",
        "model.critic_agent_id=false",
        f"env.continuous={str(args.actions == 'continuous').lower()}", "env.options.max_cycles=25",
        *vector_override(args), f"torch_threads={args.marlopt_threads}",
    ]


def harl_overrides(args: argparse.Namespace) -> list[str]:
    return ["algo=mappo", "env=mpe", "map=simple_spread", f"seed={args.seed}", *HARL_OVERRIDES,
            "env.continuous=false", "env.options.max_cycles=25", *vector_override(args),
            f"torch_threads={args.marlopt_threads}"]


def run_settings(frames: int, eval_episodes: int) -> list[str]:
    """Budget, and no mid-run evaluation or checkpoints (BenchMARL's checkpoint_interval=0)."""
    beyond = max(10 * frames, 1_000_000)
    return [f"total_steps={frames}", "eval_interval=0", f"eval_episodes={eval_episodes}",
            f"save_interval={beyond}", f"latest_interval={beyond}", "progress=false"]


# --------------------------------------------------------------------------------------------------
# Process-tree memory sampling (/proc on Linux; psutil where there is no /proc)
# --------------------------------------------------------------------------------------------------
def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = defaultdict(list)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children[ppid].append(int(name))
    return children


def _proc_field_kib(path: str, field: str) -> int:
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(field):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def tree_memory(pid: int) -> tuple[int, int, int]:
    """(sum RSS KiB, sum PSS KiB, process count) over ``pid`` and all its descendants."""
    if not os.path.isdir("/proc"):
        try:
            import psutil
        except ImportError:
            return 0, 0, 0
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            return 0, 0, 0
        rss = 0
        for p in procs:
            try:
                rss += p.memory_info().rss // 1024
            except psutil.Error:
                pass
        return rss, 0, len(procs)
    children = _proc_children()
    todo, pids = [pid], []
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children.get(p, ()))
    rss = sum(_proc_field_kib(f"/proc/{p}/status", "VmRSS:") for p in pids)
    pss = sum(_proc_field_kib(f"/proc/{p}/smaps_rollup", "Pss:") for p in pids)
    return rss, pss, len(pids)


def run_monitored(cmd: list[str], log_path: Path, interval: float, watch: Path | None = None,
                  timeout: float | None = None, env: dict[str, str] | None = None, cwd: Path = REPO,
                  on_sample: Callable[[float], None] | None = None) -> dict[str, Any]:
    """Run ``cmd`` (output to ``log_path``), sampling its process tree's memory every ``interval`` s;
    ``on_sample(seconds since start)`` runs after each sample (``bench_jaxmarl`` reads new log rows)."""
    peak_rss = peak_pss = peak_procs = samples = 0
    first_seen = None
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    t0 = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                start_new_session=True)
        timed_out = False
        try:
            while True:
                rc = proc.poll()
                rss, pss, n = tree_memory(proc.pid)
                samples += 1
                peak_rss, peak_pss, peak_procs = max(peak_rss, rss), max(peak_pss, pss), max(peak_procs, n)
                if watch is not None and first_seen is None and watch.exists():
                    first_seen = time.perf_counter() - t0
                if on_sample is not None:
                    on_sample(time.perf_counter() - t0)
                if rc is not None:
                    break
                if timeout is not None and time.perf_counter() - t0 > timeout:
                    timed_out = True
                    os.killpg(proc.pid, signal.SIGTERM)  # the run's own session (start_new_session)
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        os.killpg(proc.pid, signal.SIGKILL)
                    break
                time.sleep(interval)
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            raise
    wall = time.perf_counter() - t0
    return {"returncode": proc.wait(), "timed_out": timed_out, "wall_s": wall, "startup_s_polled": first_seen,
            "peak_rss_mib": peak_rss / 1024, "peak_pss_mib": peak_pss / 1024, "peak_processes": peak_procs,
            "memory_samples": samples, "loadavg_before": load_before,
            "loadavg_after": os.getloadavg() if hasattr(os, "getloadavg") else None, "log": str(log_path)}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------------------------------
# The runs
# --------------------------------------------------------------------------------------------------
def read_metrics(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "metrics.jsonl"
    rows = marlopt_metrics(path) if path.is_file() else []
    iters = [r for r in rows if "time/rollout_s" in r]
    returns = [r["train/return_mean"] for r in iters if "train/return_mean" in r]
    evals = [r["eval/return_mean"] for r in rows if "eval/return_mean" in r]
    rollout = sum(r["time/rollout_s"] for r in iters)
    update = sum(r["time/update_s"] for r in iters)
    return {"frames": max((r["step"] for r in iters), default=0), "iterations": len(iters),
            "rollout_s": rollout, "update_s": update, "loop_s": rollout + update,
            "train_return_first": returns[0] if returns else None,
            "train_return_last": returns[-1] if returns else None,
            "eval_return_final": evals[-1] if evals else None}


def marlopt_command(overrides: list[str], run_dir: Path) -> list[str]:
    return [sys.executable, "-m", "marlopt.train", *overrides, f"hydra.run.dir={run_dir}"]


def run_marlopt(name: str, overrides: list[str], frames: int, eval_episodes: int, work: Path,
                args: argparse.Namespace) -> dict[str, Any]:
    run_dir = work / "run"
    ovr = [*overrides, *run_settings(frames, eval_episodes)]
    cmd = marlopt_command(ovr, run_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    mon = run_monitored(cmd, work / "stdout.log", args.sample_interval, watch=run_dir / "metrics.jsonl",
                        timeout=args.timeout, env=env)
    res: dict[str, Any] = {"name": name, "command": cmd, **mon}
    if mon["returncode"] != 0:
        res["error"] = _tail(work / "stdout.log")
        return res
    m = read_metrics(run_dir)
    res.update(m)
    f = m["frames"]
    startup = mon["startup_s_polled"]
    res["fps_loop"] = f / m["loop_s"] if m["loop_s"] > 0 else None
    res["fps_wall"] = f / mon["wall_s"]
    res["fps_wall_nostart"] = f / (mon["wall_s"] - startup) if startup is not None else None
    res["startup_s"] = startup
    res["collect_s"], res["train_s"] = m["rollout_s"], m["update_s"]
    return res


def run_benchmarl(frames: int, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    summary_path = work / "summary.json"
    cmd = [args.benchmarl_python, str(BENCHMARL_SCRIPT), "--frames", str(frames), "--out-dir", str(work / "run"),
           "--actions", args.actions, "--seed", str(args.seed), "--json", str(summary_path)]
    if args.benchmarl_threads:
        cmd += ["--threads", str(args.benchmarl_threads)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("PYTHONPATH", None)
    mon = run_monitored(cmd, work / "stdout.log", args.sample_interval, timeout=args.timeout, env=env)
    res: dict[str, Any] = {"name": "benchmarl", "command": cmd, **mon}
    if mon["returncode"] != 0 or not summary_path.is_file():
        res["error"] = _tail(work / "stdout.log")
        return res
    s = json.loads(summary_path.read_text())
    f = s["frames"]
    res.update({"frames": f, "iterations": s["iterations"], "loop_s": s["loop_s"], "collect_s": s["collection_s"],
                "train_s": s["training_s"], "startup_s": s["startup_s"],
                "fps_loop": s["fps_loop"], "fps_wall": f / mon["wall_s"],
                "fps_wall_nostart": f / (mon["wall_s"] - s["startup_s"]) if s["startup_s"] == s["startup_s"] else None,
                "train_return_first": s["team_return_first"], "train_return_last": s["team_return_last"],
                "train_return_note": "BenchMARL per-agent mean x 3 (team-sum equivalent)",
                "benchmarl": s})
    return res


# --------------------------------------------------------------------------------------------------
# Random-policy baseline and the in-process profile
# --------------------------------------------------------------------------------------------------
def random_policy_return(episodes: int, seed: int, continuous: bool = False) -> dict[str, Any]:
    """Mean team return (sum over agents and steps) of a uniform random policy on mpe2 simple_spread."""
    import numpy as np
    from mpe2 import simple_spread_v3

    env = simple_spread_v3.parallel_env(N=3, max_cycles=25, continuous_actions=continuous, local_ratio=0.5)
    rng = np.random.default_rng(seed)
    returns = []
    for ep in range(episodes):
        env.reset(seed=seed + ep)
        total = 0.0
        while env.agents:
            actions = {}
            for a in env.agents:
                space = env.action_space(a)
                if continuous:
                    actions[a] = rng.uniform(space.low, space.high).astype(space.dtype)
                else:
                    actions[a] = int(rng.integers(space.n))
            _, rewards, _, _, _ = env.step(actions)
            total += float(sum(rewards.values()))
        returns.append(total)
    env.close()
    return {"episodes": episodes, "seed": seed, "continuous": continuous, "return_mean": float(np.mean(returns)),
            "return_std": float(np.std(returns)), "definition": "sum of the 3 agents' rewards over 25 steps, "
            "uniform random actions, mpe2 simple_spread_v3 (local_ratio 0.5)"}


def profile_child(overrides: list[str], iterations: int, out: Path, cprofile: bool) -> None:
    """In-process: build marlopt's runner, time its parts over ``iterations`` collect+update rounds."""
    from marlopt.cli import compose
    from marlopt.config import to_objects
    from marlopt.runners.on_policy import OnPolicyRunner

    cfg = to_objects(compose(overrides))
    tmp = Path(tempfile.mkdtemp(prefix="marlopt-profile-"))
    t_build = time.perf_counter()
    runner = OnPolicyRunner(cfg, tmp)
    build_s = time.perf_counter() - t_build
    acc: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)

    def wrap(obj: Any, method: str, key: str) -> None:
        original = getattr(obj, method)

        def timed(*a: Any, **k: Any) -> Any:
            t = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                acc[key] += time.perf_counter() - t
                calls[key] += 1

        object.__setattr__(obj, method, timed)

    wrap(runner.envs, "step", "env_step")
    wrap(runner.actor, "act", "actor_act")
    wrap(runner.rule, "estimate_values", "value_estimation")
    wrap(runner.buffer, "insert", "buffer_insert")
    prof = None
    if cprofile:
        import cProfile

        prof = cProfile.Profile()
    per_iter = []
    try:
        for _ in range(iterations):
            if prof:
                prof.enable()
            t0 = time.perf_counter()
            runner.collect()
            t1 = time.perf_counter()
            runner.rule.update(runner.batch)
            runner._refresh_rollout_actor()
            t2 = time.perf_counter()
            if prof:
                prof.disable()
            per_iter.append({"rollout_s": t1 - t0, "update_s": t2 - t1})
    finally:
        runner.close()
        shutil.rmtree(tmp, ignore_errors=True)
    rollout = sum(r["rollout_s"] for r in per_iter)
    update = sum(r["update_s"] for r in per_iter)
    parts = {k: acc[k] for k in ("env_step", "actor_act", "value_estimation", "buffer_insert")}
    parts["rollout_other"] = rollout - sum(parts.values())
    frames = iterations * runner.frames_per_iteration
    from marlopt.runners.common import vector_mode

    result = {
        "overrides": overrides, "iterations": iterations, "frames": frames, "build_s": build_s,
        "vector_mode": list(vector_mode(cfg)), "torch_threads": cfg.torch_threads,
        "rollout_s": rollout, "update_s": update, "per_iteration": per_iter,
        "rollout_parts_s": parts, "calls": dict(calls),
        "share_of_iteration": {**{k: v / (rollout + update) for k, v in parts.items()},
                               "update": update / (rollout + update)},
        "us_per_env_step_call": {k: 1e6 * acc[k] / max(calls[k], 1) for k in acc},
        "note": "env_step is the main process's time in VectorEnv.step: with subproc workers that is "
                "waiting on them (their stepping + IPC), not the workers' CPU time",
    }
    if prof:
        import io
        import pstats

        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("cumulative").print_stats(30)
        cpath = out.with_suffix(".cprofile.txt")
        cpath.write_text(text.getvalue())
        result["cprofile_top"] = str(cpath)
    out.write_text(json.dumps(result, indent=2) + "\n")


def run_profile(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    out = work / "profile.json"
    overrides = [*marlopt_benchmarl_overrides(args), "progress=false"]
    if args.profile_vector:
        overrides = [o for o in overrides if not o.startswith("env.vector=")] + [f"env.vector={args.profile_vector}"]
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_profile-child", json.dumps(overrides),
           "--profile-iterations", str(args.profile_iterations), "--_profile-out", str(out)]
    if args.cprofile:
        cmd.append("--cprofile")
    mon = run_monitored(cmd, work / "stdout.log", args.sample_interval, timeout=args.timeout)
    if mon["returncode"] != 0 or not out.is_file():
        return {"error": _tail(work / "stdout.log"), "command": cmd}
    return {**json.loads(out.read_text()), "command": cmd}


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table_start(columns: list[str]) -> list[str]:
    """A markdown table's header row and rule."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def failed_row(run: dict[str, Any], columns: int) -> str:
    """A failed run's row: its name, repeat and return code, the other cells empty."""
    return f"| {run['name']} | {run['repeat']} | FAILED (rc {run.get('returncode')}) |" + " |" * (columns - 3)


RUN_COLUMNS = ["run", "rep", "frames", "loop s", "fps (loop)", "wall s", "fps (wall)", "fps (wall - startup)",
               "startup s", "collect : update", "peak RSS MiB (procs)", "peak PSS MiB", "return first -> last"]


def markdown(report: dict[str, Any]) -> str:
    lines = table_start(RUN_COLUMNS)
    for r in report["runs"]:
        if "error" in r:
            lines.append(failed_row(r, len(RUN_COLUMNS)))
            continue
        split = (f"{r['collect_s'] / (r['collect_s'] + r['train_s']):.0%} : "
                 f"{r['train_s'] / (r['collect_s'] + r['train_s']):.0%}") if r.get("loop_s") else "-"
        ret = f"{_fmt(r.get('train_return_first'))} -> {_fmt(r.get('train_return_last'))}"
        if r.get("eval_return_final") is not None:
            ret += f" (eval {_fmt(r['eval_return_final'])})"
        lines.append(
            f"| {r['name']} | {r['repeat']} | {_fmt(r['frames'])} | {_fmt(r['loop_s'])} | {_fmt(r['fps_loop'])} "
            f"| {_fmt(r['wall_s'])} | {_fmt(r['fps_wall'])} | {_fmt(r['fps_wall_nostart'])} "
            f"| {_fmt(r['startup_s'])} | {split} | {_fmt(r['peak_rss_mib'], 0)} ({r['peak_processes']}) "
            f"| {_fmt(r['peak_pss_mib'], 0)} | {ret} |")
    if report.get("summary"):
        lines += ["", "| run | repeats | median fps (loop) | median fps (wall) | max peak RSS MiB |",
                  "|---|---|---|---|---|"]
        for name, s in report["summary"].items():
            lines.append(f"| {name} | {s['repeats']} | {_fmt(s['fps_loop_median'])} | {_fmt(s['fps_wall_median'])} "
                         f"| {_fmt(s['peak_rss_mib_max'], 0)} |")
    rp = report.get("random_policy")
    if rp and "return_mean" in rp:
        lines += ["", f"Random policy (uniform, {rp['episodes']} episodes): team return "
                      f"{rp['return_mean']:.2f} +- {rp['return_std']:.2f}"]
        for r in report["runs"]:
            if r["name"] == "harl-settings" and "error" not in r:
                final = r.get("eval_return_final")
                last = r.get("train_return_last")
                lines.append(f"harl-settings rep {r['repeat']}: final eval return {_fmt(final, 2)} "
                             f"(improvement over random {_fmt(r.get('improvement_eval'), 2)}), last train return "
                             f"{_fmt(last, 2)} (improvement {_fmt(r.get('improvement_train'), 2)})")
    prof = report.get("profile")
    if prof and "rollout_parts_s" in prof:
        total = prof["rollout_s"] + prof["update_s"]
        parts = ", ".join(f"{k} {v:.2f} s ({v / total:.0%})" for k, v in prof["rollout_parts_s"].items())
        lines += ["", f"marlopt profile ({prof['iterations']} iterations, {prof['frames']} frames, vector "
                      f"{prof['vector_mode'][0]} x{prof['vector_mode'][1]}): rollout {prof['rollout_s']:.2f} s "
                      f"[{parts}], update {prof['update_s']:.2f} s ({prof['update_s'] / total:.0%})"]
    elif prof:
        lines += ["", "marlopt profile FAILED: " + prof.get("error", "")[-500:]]
    return "\n".join(lines)


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in WHICH:
        ok = [r for r in runs if r["name"] == name and "error" not in r]
        if not ok:
            continue
        out[name] = {"repeats": len(ok),
                     "fps_loop_median": statistics.median(r["fps_loop"] for r in ok if r["fps_loop"]),
                     "fps_wall_median": statistics.median(r["fps_wall"] for r in ok),
                     "peak_rss_mib_max": max(r["peak_rss_mib"] for r in ok),
                     "peak_pss_mib_max": max(r["peak_pss_mib"] for r in ok)}
    return out


def pair_ratios(runs: list[dict[str, Any]], anchor: str, keys: list[str]) -> dict[str, list[float]]:
    """An anchor harness's ratios: per ``key``, marlopt / ``anchor`` for each repeat where both sides ran
    without error and both values are set, in repeat order."""
    pairs: dict[int, dict[str, dict]] = {}
    for r in runs:
        if "error" not in r:
            pairs.setdefault(r["repeat"], {})[r["name"]] = r
    complete = [pairs[k] for k in sorted(pairs) if {"marlopt", anchor} <= pairs[k].keys()]
    return {key: [p["marlopt"][key] / p[anchor][key] for p in complete if p["marlopt"].get(key) and p[anchor].get(key)]
            for key in keys}


def apply_recorded_patch(checkout: Path, patch: Path, tag: str, tested_commit: str) -> int:
    """Apply an anchor's recorded compatibility patch to its checkout once (a no-op when already
    applied); 2, with one line on stderr, when the checkout is neither pristine nor patched."""
    def git_apply(*flags: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "apply", *flags, str(patch)], cwd=checkout, capture_output=True, text=True,
                              check=False)

    if git_apply("--reverse", "--check").returncode == 0:
        return 0
    res = git_apply()
    if res.returncode != 0:
        print(f"{tag}: {patch.name} does not apply to {checkout}: {res.stderr.strip()}; use a clean "
              f"checkout (tested at {tested_commit[:7]})", file=sys.stderr)
        return 2
    print(f"{tag}: applied {patch.name} to {checkout}")
    return 0


def make_anchor_venv(venv: Path, installs: list[list[str]], tag: str) -> None:
    """Create an anchor's own venv (if missing), upgrade pip, run each ``pip install`` argument list in
    order, and record ``pip freeze`` in ``<venv>/freeze.txt``."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    for packages in installs:
        subprocess.run([*pip, "install", *packages], check=True)
    freeze = subprocess.run([*pip, "freeze"], check=True, capture_output=True, text=True).stdout
    (venv / "freeze.txt").write_text(freeze)
    print(f"{tag}: venv {venv} ready; versions in {venv / 'freeze.txt'}")


def anchor_workdir(tag: str, python: str, setup_hint: str, apply: Callable[[], int], workdir: Path | None,
                   check: bool = True) -> Path | None:
    """An anchor harness's first step: its venv's ``python`` exists and its patch applies (``apply()``;
    both skipped unless ``check``), then the run directory (``workdir`` or a fresh temporary one).
    ``None``, with one line on stderr naming the fix, when the anchor is not ready."""
    if check and not Path(python).exists():
        print(f"{tag}: {python} not found; create the venv first: {setup_hint}", file=sys.stderr)
        return None
    if check and apply() != 0:
        return None
    work = workdir or Path(tempfile.mkdtemp(prefix=f"marlopt-{tag.removeprefix('bench_')}-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"{tag}: run directories under {work}", flush=True)
    return work


def run_alternating(args: argparse.Namespace, work: Path, report: dict[str, Any], tag: str,
                    run: Callable[[str, argparse.Namespace, Path], dict[str, Any]],
                    line: Callable[[dict[str, Any]], str]) -> bool:
    """An anchor harness's pairs: ``args.repeats`` repeats of ``args.which_list``, the order alternating,
    repeat k with seed ``args.seed + k`` on every side; ``run(name, rep_args, run_dir)`` runs one side,
    ``line(result)`` says how it went. Appends each result to ``report["runs"]``; True if any failed."""
    failed = False
    for rep in range(args.repeats):
        order = args.which_list if rep % 2 == 0 else args.which_list[::-1]
        rep_args = argparse.Namespace(**{**vars(args), "seed": args.seed + rep})
        for name in order:
            rdir = work / f"rep{rep}" / name
            rdir.mkdir(parents=True, exist_ok=True)
            print(f"{tag}: repeat {rep} (seed {rep_args.seed}) {name} ...", flush=True)
            res = run(name, rep_args, rdir)
            res["repeat"], res["seed"] = rep, rep_args.seed
            report["runs"].append(res)
            failed |= "error" in res
            print(f"{tag}: {name}: " + (f"FAILED; log {res['log']}:\n{res['error']}" if "error" in res else line(res)),
                  flush=True)
    return failed


def write_report(report: dict[str, Any], render: Callable[[dict[str, Any]], str], out: Path, tag: str,
                 work: Path, keep_work: bool, failed: bool) -> int:
    """An anchor harness's last step: stamp ``report``, add its markdown (``render(report)``), write
    ``out`` (JSON) and ``out.md``, print the table, remove ``work`` unless kept or a run failed.
    Returns the exit status (1 when a run failed)."""
    report["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    report["markdown"] = render(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    out.with_suffix(".md").write_text(report["markdown"] + "\n")
    print(report["markdown"])
    print(f"{tag}: wrote {out} and {out.with_suffix('.md')}")
    if not failed and not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def meta(args: argparse.Namespace) -> dict[str, Any]:
    info: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "python": sys.version.split()[0],
                            "platform": platform.platform(), "cpu_count": os.cpu_count(),
                            "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                            "loadavg_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
                            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                     if not k.startswith("_")}}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    try:
        info["marlopt_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        info["marlopt_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--frames", type=int, default=300_000, help="frame budget of each run (default %(default)s)")
    p.add_argument("--harl-frames", type=int, default=None, help="budget of the harl-settings run (default: --frames)")
    p.add_argument("--which", default=",".join(WHICH), help="comma-separated subset of %(default)s")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "speed_mpe.json", help="JSON report")
    p.add_argument("--markdown", type=Path, default=None, help="also write the table here (default: <out>.md)")
    p.add_argument("--workdir", type=Path, default=None, help="run directories (default: a new /tmp dir)")
    p.add_argument("--keep", action="store_true", help="keep the run directories (default: keep only on failure)")
    p.add_argument("--actions", choices=("continuous", "discrete"), default="continuous",
                   help="marlopt/benchmarl pair: continuous = BenchMARL's default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--benchmarl-python", default=DEFAULT_BENCHMARL_PYTHON)
    p.add_argument("--benchmarl-threads", type=int, default=None, help="default: torch's default (all cores)")
    p.add_argument("--marlopt-vector", choices=("default", "auto", "inproc", "subproc", "hybrid"), default="default",
                   help="env.vector for marlopt; default: the env config's own (MPE: hybrid)")
    p.add_argument("--marlopt-threads", type=int, default=0,
                   help="marlopt torch_threads (its default 0: all cores for the update, 1 for rollouts)")
    p.add_argument("--eval-episodes", type=int, default=32, help="final greedy evaluation of harl-settings")
    p.add_argument("--random-episodes", type=int, default=200)
    p.add_argument("--profile-iterations", type=int, default=2, help="0 = no profile")
    p.add_argument("--profile-vector", choices=("auto", "inproc", "subproc", "hybrid"), default=None,
                   help="vector mode of the profile (default: --marlopt-vector)")
    p.add_argument("--cprofile", action="store_true", help="also write a cProfile listing of the profile")
    p.add_argument("--sample-interval", type=float, default=0.2, help="memory sampling period, s")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    p.add_argument("--print-commands", action="store_true", help="print the commands and exit")
    p.add_argument("--_profile-child", dest="_profile_child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--_profile-out", dest="_profile_out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.which_list = [w.strip() for w in args.which.split(",") if w.strip()]
    bad = sorted(set(args.which_list) - set(WHICH))
    if bad:
        p.error(f"--which: unknown {', '.join(bad)}; choose from {', '.join(WHICH)}")
    if args.harl_frames is None:
        args.harl_frames = args.frames
    return args


def main(argv: list[str] | None = None) -> int:
    if "--vs" in (argv := sys.argv[1:] if argv is None else argv):  # an anchor with its own harness
        if argv[argv.index("--vs") + 1:argv.index("--vs") + 2] == ["harl"]:
            from bench_harl import main_vs as harl_vs
            return harl_vs(argv)
        from bench_jaxmarl import main_vs
        return main_vs(argv)
    args = parse_args(argv)
    if args._profile_child is not None:
        profile_child(json.loads(args._profile_child), args.profile_iterations, args._profile_out, args.cprofile)
        return 0
    if args.print_commands:
        tmp = Path("<workdir>")
        if "marlopt" in args.which_list:
            ovr = [*marlopt_benchmarl_overrides(args), *run_settings(args.frames, 1)]
            print("marlopt:      ", " ".join(marlopt_command(ovr, tmp / "marlopt" / "run")))
        if "benchmarl" in args.which_list:
            print("benchmarl:    ", args.benchmarl_python, BENCHMARL_SCRIPT, "--frames", args.frames, "--actions",
                  args.actions, "--seed", args.seed, "--out-dir", tmp / "benchmarl" / "run")
        if "harl-settings" in args.which_list:
            ovr = [*harl_overrides(args), *run_settings(args.harl_frames, args.eval_episodes)]
            print("harl-settings:", " ".join(marlopt_command(ovr, tmp / "harl" / "run")))
        return 0
    if "benchmarl" in args.which_list and not Path(args.benchmarl_python).exists():
        print(f"benchmark: {args.benchmarl_python} not found; create the BenchMARL venv first: "
              f"python3 {BENCHMARL_SCRIPT.relative_to(REPO)} --setup (or leave benchmarl out of --which)",
              file=sys.stderr)
        return 2

    work = args.workdir or Path(tempfile.mkdtemp(prefix="marlopt-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"benchmark: run directories under {work}", flush=True)
    report: dict[str, Any] = {"meta": meta(args), "task": "MPE simple_spread, 3 agents, 25 steps per episode",
                              "benchmarl_mapping": [{"benchmarl": b, "marlopt": m, "note": n}
                                                    for b, m, n in BENCHMARL_MAPPING],
                              "unmatched": UNMATCHED, "harl_overrides": HARL_OVERRIDES, "runs": []}

    if "harl-settings" in args.which_list:
        try:
            report["random_policy"] = random_policy_return(args.random_episodes, args.seed)
            rp = report["random_policy"]
            print(f"benchmark: random policy team return {rp['return_mean']:.2f} +- {rp['return_std']:.2f} "
                  f"({rp['episodes']} episodes)", flush=True)
        except Exception as err:  # noqa: BLE001 - the baseline is optional
            report["random_policy"] = {"error": repr(err)}

    failed = False
    for rep in range(args.repeats):
        for name in args.which_list:
            rdir = work / f"rep{rep}" / name
            rdir.mkdir(parents=True, exist_ok=True)
            print(f"benchmark: repeat {rep} {name} ...", flush=True)
            if name == "marlopt":
                res = run_marlopt(name, marlopt_benchmarl_overrides(args), args.frames, 1, rdir, args)
            elif name == "benchmarl":
                res = run_benchmarl(args.frames, rdir, args)
            else:
                res = run_marlopt(name, harl_overrides(args), args.harl_frames, args.eval_episodes, rdir, args)
                rp = report.get("random_policy", {})
                if "error" not in res and "return_mean" in rp:
                    if res.get("eval_return_final") is not None:
                        res["improvement_eval"] = res["eval_return_final"] - rp["return_mean"]
                    if res.get("train_return_last") is not None:
                        res["improvement_train"] = res["train_return_last"] - rp["return_mean"]
            res["repeat"] = rep
            report["runs"].append(res)
            failed |= "error" in res
            if "error" in res:
                print(f"benchmark: {name} FAILED (rc {res.get('returncode')}); log {res['log']}:\n{res['error']}",
                      flush=True)
            else:
                print(f"benchmark: {name}: {res['frames']} frames, fps loop {_fmt(res['fps_loop'])}, "
                      f"wall {_fmt(res['fps_wall'])}, peak RSS {res['peak_rss_mib']:.0f} MiB", flush=True)

    if args.profile_iterations > 0 and "marlopt" in args.which_list:
        print(f"benchmark: profiling marlopt ({args.profile_iterations} iterations) ...", flush=True)
        pdir = work / "profile"
        pdir.mkdir(parents=True, exist_ok=True)
        report["profile"] = run_profile(args, pdir)
        failed |= "error" in report["profile"]

    report["summary"] = summarise(report["runs"])
    report["meta"]["loadavg_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    report["meta"]["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    table = markdown(report)
    report["markdown"] = table
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = args.markdown or args.out.with_suffix(".md")
    md.write_text(table + "\n")
    print(table)
    print(f"benchmark: wrote {args.out} and {md}")
    if not failed and not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
