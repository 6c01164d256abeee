"""The JaxMARL anchor: JaxMARL's MAPPO baselines beside marlopt at JaxMARL's own settings.

Runs, back to back (never concurrently), JaxMARL's ``baselines/MAPPO/mappo_rnn_mpe.py`` (or
``mappo_rnn_smax.py``) from a local checkout of its public code, in its own venv, with its own Hydra
config (``baselines/MAPPO/config/mappo_homogenous_rnn_{mpe,smax}.yaml``) changed only in
``TOTAL_TIMESTEPS``, ``SEED`` and ``WANDB_MODE=disabled``; and ``python -m marlopt.train`` set to the
same settings key by key (``MAPPING`` below; what cannot be matched is in ``UNMATCHED``).

Per side: frames/s, wall-clock time-to-threshold, peak memory of the process tree and the final return.

- ``frames``: env steps summed over the parallel envs (JaxMARL's ``env_step``, marlopt's ``step``);
  both sides run ``frames // (envs x 128)`` whole iterations.
- ``fps_wall`` = frames / process wall time (imports, JIT compile, env construction, teardown);
  ``fps_loop`` = frames / the training loop alone (JaxMARL: executing the compiled program, timed
  by the patch; marlopt: the sum of ``time/rollout_s + time/update_s``).
- time-to-threshold: the harness stamps each per-update row (JaxMARL: a ``BENCH_METRIC`` stdout line
  from the patched callback; marlopt: a ``metrics.jsonl`` row) when it appears (polled every
  ``--sample-interval`` s), from the moment the process is started, so imports and compilation
  count on both sides. Threshold = a measured uniform random policy's return + ``--delta``; reached
  at the first row whose trailing mean over ``--window`` rows (the same frames on both sides: one
  row per ``envs x 128`` frames) is at or above it.
- return: team return per episode in both (MPE: the sum of the agents' rewards, which JaxMARL's
  ``MPELogWrapper`` logs as each agent's reward x 3, averaged over the agents; SMAX: the shared ally
  reward). JaxMARL's row value is its own logged ``returns``; marlopt's ``train/return_mean`` times
  ``TASKS[task]["return_scale"]`` (MPE: marlopt trains on the mean of the agents' rewards, x 3 is
  their sum).
  ``final return`` = mean of the last ``--window`` rows.
- random policy: uniform over available actions, JaxMARL's env and log wrapper (the config's
  ``ENV_NAME``/``MAP_NAME``/``ENV_KWARGS``), ``--random-episodes`` episodes, run in the anchor venv.
- peak memory: sum of RSS / PSS over the process and all its children (``benchmark.tree_memory``).

Compatibility edits to JaxMARL: ``scripts/patches/jaxmarl_mappo_timing.patch`` (applied to the checkout
by this script, idempotent): the logging callback also prints its row as a JSON line, and ``main``
compiles ahead of time (``jit(...).lower(rng).compile()``) so compile and run are timed apart, then
prints ``BENCH_TIMING``. Algorithm, networks and configs are unchanged.

Usage::

    # once: the checkout (public code, e.g. git clone https://github.com/FLAIROx/JaxMARL, tested at
    # c793d09) and its venv (CPU jax + JaxMARL's [algs] requirements; versions written to <venv>/freeze.txt)
    python scripts/bench_jaxmarl.py --setup --jaxmarl-dir /work/anchors/JaxMARL
    python scripts/benchmark.py --vs jaxmarl --jaxmarl-dir /work/anchors/JaxMARL --task mpe --frames 300000 \\
        --repeats 3 --out docs/bench/jaxmarl_mpe.json
    python scripts/benchmark.py --vs jaxmarl --jaxmarl-dir /work/anchors/JaxMARL --task smax --frames 300000 \\
        --out docs/bench/jaxmarl_smax.json
    python scripts/bench_jaxmarl.py --task mpe --print-commands          # show, run nothing

Mapping, JaxMARL config key -> marlopt override (MPE; SMAX differs where marked)::

    NUM_ENVS=16 (SMAX 128)            n_envs=16 (128)
    NUM_STEPS=128                     rollout_length=128
    TOTAL_TIMESTEPS                   total_steps (both rounded down to whole iterations)
    FC_DIM_SIZE=128, relu             model.hidden_sizes=[128] model.activation=relu (the scripts
                                      hard-code relu; MPE's ACTIVATION=tanh is unused)
    GRU_HIDDEN_DIM=128                model.recurrent=true model.rnn_hidden=128
    Dense(128)+relu after the GRU,    model.post_rnn_sizes=[128] model.rnn_layer_norm=false
      no LayerNorm on its output
    BPTT over the whole rollout       model.data_chunk_length=128
    UPDATE_EPOCHS=4                   algo.ppo_epochs=4
    NUM_MINIBATCHES=4 (over actors)   algo.num_minibatches=4 (over 128-step chunks = actors)
    LR=2e-3, Adam eps 1e-5            algo.lr=2e-3 algo.critic_lr=2e-3 algo.adam_eps=1e-5
    ANNEAL_LR=True (linear to 0)      algo.lr_schedule=linear
    MAX_GRAD_NORM=0.5 (SMAX 0.25)     algo.max_grad_norm=0.5 (0.25), per optimiser in both
    GAMMA=0.99, GAE_LAMBDA=0.95       algo.gamma=0.99 algo.gae_lambda=0.95
    CLIP_EPS=0.2 (policy and value)   algo.objective.clip=0.2 algo.value_clip=0.2
    squared value loss, VF_COEF=0.5   algo.huber_delta=null algo.value_loss_coef=0.5
    ENT_COEF=0.01 (SMAX 0.0)          algo.entropy_coef=0.01 (0.0)
    no value normalisation            algo.use_valuenorm=false
    advantages normalised             algo.advantage_norm=true
    no LayerNorm                      model.feature_norm=false model.layer_norm=false
    one shared actor, raw obs         model.sharing=shared model.agent_id=false
    head orthogonal(0.01)             model.head_gain=0.01
    critic: all obs concatenated      model.critic_agent_id=false (MPE state = the concatenated obs)
    SMAX critic: world state + id     env.state_type=FP (world state + one-hot ally id)
    MPE_simple_spread_v3 (25 steps)   env=mpe map=simple_spread env.continuous=false env.options.max_cycles=25
                                      env.backend=jax (JaxMARL's own MPE; --mpe-backend mpe2: the mpe2 package)
    each agent trains on its own      +env.options.team_reward=mean (one agent's reward scale: the
      reward (MPE)                    critic's targets and value clip in the same units; see UNMATCHED)
    HeuristicEnemySMAX 2s3z           env=smax map=2s3z env.vector=batched +env.options.see_enemy_actions=true
      + ENV_KWARGS                    +env.options.walls_cause_death=true +env.options.attack_mode=closest
    SEED                              seed
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))  # benchmark.py's helpers (imported lazily: not in the anchor venv)
PATCH = REPO / "scripts" / "patches" / "jaxmarl_mappo_timing.patch"
DEFAULT_CHECKOUT = Path("/work/anchors/JaxMARL")
DEFAULT_VENV = Path("/work/anchors/jaxmarl-venv")
TESTED_COMMIT = "c793d095618c6d3edfb5632802348f57b70a4b94"
ROLLOUT = 128
TASKS: dict[str, dict[str, Any]] = {
    "mpe": {"script": "baselines/MAPPO/mappo_rnn_mpe.py", "config": "mappo_homogenous_rnn_mpe", "envs": 16,
            "delta": 20.0, "label": "MPE simple_spread (3 agents, 25 steps), 16 envs x 128", "return_scale": 3.0},
    "smax": {"script": "baselines/MAPPO/mappo_rnn_smax.py", "config": "mappo_homogenous_rnn_smax", "envs": 128,
             "delta": 0.5, "label": "SMAX 2s3z vs the heuristic enemy, 128 envs x 128", "return_scale": 1.0},
}
COMMON_OVERRIDES = [
    "algo=mappo", f"rollout_length={ROLLOUT}", "model.hidden_sizes=[128]", "model.activation=relu",
    "model.recurrent=true", "model.rnn_hidden=128", f"model.data_chunk_length={ROLLOUT}",
    "model.post_rnn_sizes=[128]", "model.rnn_layer_norm=false",
    "algo.ppo_epochs=4", "algo.num_minibatches=4", "algo.lr=2e-3", "algo.critic_lr=2e-3", "algo.adam_eps=1e-5",
    "algo.lr_schedule=linear",
    "algo.gamma=0.99", "algo.gae_lambda=0.95", "algo.objective.clip=0.2", "algo.value_clip=0.2",
    "algo.huber_delta=null", "algo.value_loss_coef=0.5", "algo.use_valuenorm=false", "algo.advantage_norm=true",
    "model.feature_norm=false", "model.layer_norm=false", "model.sharing=shared", "model.agent_id=false",
    "model.head_gain=0.01", "model.critic_agent_id=false",
]
TASK_OVERRIDES = {
    "mpe": ["env=mpe", "map=simple_spread", "env.continuous=false", "env.options.max_cycles=25",
            "+env.options.team_reward=mean", "n_envs=16", "algo.max_grad_norm=0.5", "algo.entropy_coef=0.01"],
    "smax": ["env=smax", "map=2s3z", "env.vector=batched", "env.state_type=FP", "+env.options.see_enemy_actions=true",
             "+env.options.walls_cause_death=true", "+env.options.attack_mode=closest", "n_envs=128",
             "algo.max_grad_norm=0.25", "algo.entropy_coef=0.0"],
}
UNMATCHED = [
    "Rewards: JaxMARL's MPE trains each agent on its own reward (half the shared landmark term, half its own "
    "collisions; MPELogWrapper's x 3 is in the logged returns only); marlopt trains every agent on the mean of the "
    "agents' rewards (the same scale, the collision term shared; its returns x 3 in the reports). "
    "SMAX: the shared reward in both.",
    "Advantage normalisation: JaxMARL per minibatch; marlopt over the batch's active samples.",
    "Time limits: JaxMARL treats an episode's end as terminal (no bootstrap); marlopt bootstraps at truncation.",
    "Compilation: JaxMARL compiles the whole training loop with XLA (compile time in its wall time and "
    "time-to-threshold, not in fps_loop); marlopt runs eagerly.",
    "marlopt runs one final greedy evaluation (eval_episodes=1) and writes a checkpoint after the loop: "
    "in its wall time, not in fps_loop.",
]


def marlopt_overrides(task: str, frames: int, seed: int, mpe_backend: str = "jax",
                      extra: list[str] | None = None) -> list[str]:
    """marlopt.train overrides for JaxMARL's ``task`` settings, ``frames`` rounded to whole iterations;
    ``extra`` (``--override``) last, so it wins."""
    from benchmark import run_settings

    backend = [f"env.backend={mpe_backend}"] if task == "mpe" else []
    return [*TASK_OVERRIDES[task], *backend, *COMMON_OVERRIDES, f"seed={seed}",
            *run_settings(whole_frames(task, frames), 1), *(extra or [])]


def overrides_of(args: argparse.Namespace) -> list[str]:
    return marlopt_overrides(args.task, args.frames, args.seed, args.mpe_backend, args.override)


def whole_frames(task: str, frames: int) -> int:
    """``frames`` rounded down to whole iterations of ``envs x 128`` (at least one)."""
    per = TASKS[task]["envs"] * ROLLOUT
    return max(per, frames // per * per)


def jaxmarl_command(python: str, checkout: Path, task: str, frames: int, seed: int, run_dir: Path) -> list[str]:
    return [python, str(checkout / TASKS[task]["script"]), f"TOTAL_TIMESTEPS={whole_frames(task, frames)}",
            f"SEED={seed}", "WANDB_MODE=disabled", f"hydra.run.dir={run_dir}"]


# --------------------------------------------------------------------------------------------------
# Threshold maths (pure)
# --------------------------------------------------------------------------------------------------
def trailing_mean(values: list[float], window: int) -> list[float]:
    """``m_i = mean(values[max(0, i - window + 1) .. i])``, NaNs skipped (NaN if all are)."""
    out = []
    for i in range(len(values)):
        part = [v for v in values[max(0, i - window + 1): i + 1] if v == v]
        out.append(sum(part) / len(part) if part else float("nan"))
    return out


def time_to_threshold(times: list[float], returns: list[float], threshold: float, window: int) -> float | None:
    """The first ``times[i]`` with ``trailing_mean(returns, window)[i] >= threshold``; None if never."""
    for t, m in zip(times, trailing_mean(returns, window)):
        if m == m and m >= threshold:
            return t
    return None


def final_return(returns: list[float], window: int) -> float | None:
    tail = [v for v in returns[-window:] if v == v]
    return sum(tail) / len(tail) if tail else None


# --------------------------------------------------------------------------------------------------
# Setup, patch, random policy (the last runs in the anchor venv: JAX and JaxMARL only)
# --------------------------------------------------------------------------------------------------
def setup(checkout: Path, venv: Path) -> int:
    """Create the anchor venv: CPU jax and the checkout's JaxMARL with its [algs] extra."""
    if not (checkout / TASKS["mpe"]["script"]).is_file():
        print(f"bench_jaxmarl: {checkout} has no {TASKS['mpe']['script']}; get JaxMARL's public code first "
              f"(git clone https://github.com/FLAIROx/JaxMARL {checkout})", file=sys.stderr)
        return 2
    from benchmark import make_anchor_venv

    make_anchor_venv(venv, [["jax[cpu]", f"{checkout}[algs]", "psutil"]], "bench_jaxmarl")
    return apply_patch(checkout)


def apply_patch(checkout: Path, patch: Path = PATCH) -> int:
    """Apply the recorded compatibility patch to the checkout once (a no-op when already applied)."""
    from benchmark import apply_recorded_patch

    return apply_recorded_patch(checkout, patch, "bench_jaxmarl", TESTED_COMMIT)


def random_child(checkout: Path, task: str, episodes: int, seed: int, out: Path) -> None:
    """Uniform random policy (over available actions) in JaxMARL's env + log wrapper, in its units."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from omegaconf import OmegaConf

    import jaxmarl
    from jaxmarl.wrappers.baselines import MPELogWrapper, SMAXLogWrapper

    cfg = OmegaConf.to_container(OmegaConf.load(checkout / "baselines/MAPPO/config" / f"{TASKS[task]['config']}.yaml"))
    if task == "mpe":
        env, steps = MPELogWrapper(jaxmarl.make(cfg["ENV_NAME"], **cfg["ENV_KWARGS"])), 40
    else:
        from jaxmarl.environments.smax import HeuristicEnemySMAX, map_name_to_scenario

        env = SMAXLogWrapper(HeuristicEnemySMAX(scenario=map_name_to_scenario(cfg["MAP_NAME"]), **cfg["ENV_KWARGS"]))
        steps = 200
    agents = env.agents

    def masks(state: Any) -> dict[str, Any]:
        if task == "smax":
            return env.get_avail_actions(state.env_state)
        return {a: jnp.ones(env.action_space(a).n) for a in agents}

    def one_env(key: Any) -> Any:
        key, sub = jax.random.split(key)
        _, state = env.reset(sub)

        def step(carry: Any, _: Any) -> Any:
            key, state = carry
            key, k_act, k_step = jax.random.split(key, 3)
            avail = masks(state)
            keys = jax.random.split(k_act, len(agents))
            acts = {a: jax.random.categorical(k, jnp.where(avail[a] > 0, 0.0, -jnp.inf)) for a, k in zip(agents, keys)}
            _, state, _, _, info = env.step(k_step, state, acts)
            return (key, state), (info["returned_episode"], info["returned_episode_returns"])

        _, (ended, rets) = jax.lax.scan(step, (key, state), None, steps)
        return ended, rets  # [T, N]

    ended, rets = jax.jit(jax.vmap(one_env))(jax.random.split(jax.random.PRNGKey(seed), episodes))
    ended, rets = np.asarray(ended)[..., 0], np.asarray(rets).mean(-1)  # [E, T]
    first = ended.argmax(1)
    ok = ended.any(1)
    values = rets[np.arange(episodes), first][ok]
    out.write_text(json.dumps({"episodes": int(ok.sum()), "seed": seed, "return_mean": float(values.mean()),
                               "return_std": float(values.std()), "definition": "uniform over available actions; "
                               "JaxMARL's log-wrapper episode return averaged over the agents (its logged units)"}))


def random_policy(python: str, checkout: Path, task: str, episodes: int, seed: int, work: Path) -> dict[str, Any]:
    out = work / f"random_{task}.json"
    cmd = [python, str(Path(__file__).resolve()), "--_random-child", "--task", task, "--jaxmarl-dir", str(checkout),
           "--random-episodes", str(episodes), "--seed", str(seed), "--_out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=anchor_env(checkout))
    if res.returncode != 0 or not out.is_file():
        return {"error": (res.stdout + res.stderr)[-2000:], "command": cmd}
    return json.loads(out.read_text())


def anchor_env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": str(checkout), "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}


# --------------------------------------------------------------------------------------------------
# Running a side: memory sampled, per-update rows stamped as they appear
# --------------------------------------------------------------------------------------------------
def run_watched(cmd: list[str], log_path: Path, tail_path: Path, parse: Callable[[str], dict | None],
                interval: float, timeout: float | None, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    """Run ``cmd`` through ``benchmark.run_monitored`` (memory sampled every ``interval`` s); after
    each sample read the new lines of ``tail_path``, stamping each parsed row with ``t`` = seconds
    since the process was started."""
    from benchmark import run_monitored

    rows: list[dict] = []
    tail = {"offset": 0, "pending": ""}

    def read_new_rows(now: float) -> None:
        if not tail_path.is_file():
            return
        with open(tail_path, errors="replace") as f:
            f.seek(tail["offset"])
            chunk = f.read()
            tail["offset"] = f.tell()
        lines = (tail["pending"] + chunk).split("\n")
        tail["pending"] = lines.pop()
        rows.extend({**row, "t": now} for row in map(parse, lines) if row is not None)

    mon = run_monitored(cmd, log_path, interval, timeout=timeout, env=env, cwd=cwd, on_sample=read_new_rows)
    return {"command": cmd, **mon, "rows": rows}


def parse_jaxmarl(line: str) -> dict | None:
    for tag in ("BENCH_METRIC ", "BENCH_TIMING "):
        if line.startswith(tag):
            return {"kind": tag.strip(), **json.loads(line[len(tag):])}
    return None


def parse_marlopt(line: str) -> dict | None:
    from marlopt.logger import decode_row

    try:
        row = decode_row(json.loads(line))
    except ValueError:
        return None
    return row if "time/rollout_s" in row else None


def side_result(name: str, mon: dict[str, Any], curve: list[tuple[float, int, float]], frames: int, loop_s: float,
                startup_s: float | None, threshold: float | None, window: int) -> dict[str, Any]:
    """One side's measurements; ``curve`` = (seconds since start, frames, return) per update."""
    times, returns = [c[0] for c in curve], [c[2] for c in curve]
    res = {"name": name, **{k: v for k, v in mon.items() if k != "rows"}, "frames": frames, "loop_s": loop_s,
           "fps_loop": frames / loop_s if loop_s else None, "fps_wall": frames / mon["wall_s"],
           "startup_s": startup_s, "return_first": returns[0] if returns else None,
           "return_final": final_return(returns, window), "curve": [list(c) for c in curve]}
    res["time_to_threshold_s"] = None if threshold is None else time_to_threshold(times, returns, threshold, window)
    return res


def run_jaxmarl(args: argparse.Namespace, work: Path, threshold: float | None) -> dict[str, Any]:
    cmd = jaxmarl_command(args.jaxmarl_python, args.jaxmarl_dir, args.task, args.frames, args.seed, work / "hydra")
    log = work / "stdout.log"
    mon = run_watched(cmd, log, log, parse_jaxmarl, args.sample_interval, args.timeout,
                      anchor_env(args.jaxmarl_dir), args.jaxmarl_dir)
    metrics = [r for r in mon["rows"] if r["kind"] == "BENCH_METRIC"]
    timing = next((r for r in mon["rows"] if r["kind"] == "BENCH_TIMING"), None)
    if mon["returncode"] != 0 or timing is None:
        return {"name": "jaxmarl", **mon, "error": "\n".join(log.read_text(errors="replace").splitlines()[-15:])}
    curve = [(r["t"], int(r["env_step"]) + TASKS[args.task]["envs"] * ROLLOUT, r["returns"]) for r in metrics]
    res = side_result("jaxmarl", mon, curve, timing["frames"], timing["run_s"], timing["compile_s"], threshold,
                      args.window)
    return res


def run_marlopt(args: argparse.Namespace, work: Path, threshold: float | None) -> dict[str, Any]:
    from benchmark import marlopt_command, read_metrics

    run_dir = work / "run"
    cmd = marlopt_command(overrides_of(args), run_dir)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    mon = run_watched(cmd, work / "stdout.log", run_dir / "metrics.jsonl", parse_marlopt, args.sample_interval,
                      args.timeout, env, REPO)
    if mon["returncode"] != 0:
        log = Path(mon["log"]).read_text(errors="replace").splitlines()
        return {"name": "marlopt", **mon, "error": "\n".join(log[-15:])}
    m = read_metrics(run_dir)
    scale = TASKS[args.task]["return_scale"]  # in JaxMARL's units (module docstring)
    curve = [(r["t"], int(r["step"]), scale * r.get("train/return_mean", float("nan"))) for r in mon["rows"]]
    first = mon["rows"][0] if mon["rows"] else None  # startup = until the first update began
    startup = first["t"] - first["time/rollout_s"] - first["time/update_s"] if first else None
    res = side_result("marlopt", mon, curve, m["frames"], m["loop_s"], startup, threshold, args.window)
    res.update({"rollout_s": m["rollout_s"], "update_s": m["update_s"]})
    return res


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


RUN_COLUMNS = ["run", "rep (seed)", "frames", "time to threshold s", "fps (loop)", "fps (wall)", "compile/startup s",
               "wall s", "peak RSS MiB (procs)", "peak PSS MiB", "return first -> final", "final - random"]


def markdown(report: dict[str, Any]) -> str:
    from benchmark import failed_row, table_start

    rp, delta = report.get("random_policy", {}), report["delta"]
    lines = [f"{report['task']}; threshold = random {_fmt(rp.get('return_mean'), 2)} + {delta:g} = "
             f"{_fmt(report.get('threshold'), 2)} (trailing mean of {report['window']} updates)", "",
             *table_start(RUN_COLUMNS)]
    for r in report["runs"]:
        if "error" in r:
            lines.append(failed_row(r, len(RUN_COLUMNS)))
            continue
        start = r.get("startup_s")
        gain = None if r["return_final"] is None or "return_mean" not in rp else r["return_final"] - rp["return_mean"]
        lines.append(f"| {r['name']} | {r['repeat']} ({r.get('seed', '-')}) | {_fmt(r['frames'])} "
                     f"| {_fmt(r['time_to_threshold_s'])} "
                     f"| {_fmt(r['fps_loop'])} | {_fmt(r['fps_wall'])} | {_fmt(start)} | {_fmt(r['wall_s'])} "
                     f"| {_fmt(r['peak_rss_mib'], 0)} ({r['peak_processes']}) | {_fmt(r['peak_pss_mib'], 0)} "
                     f"| {_fmt(r['return_first'], 2)} -> {_fmt(r['return_final'], 2)} | {_fmt(gain, 2)} |")
    s = report.get("summary", {})
    if s.get("ratios"):
        lines += ["", "| ratio marlopt / jaxmarl (median over repeats) | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v, 2)} |" for k, v in s["ratios"].items()]
    if s.get("sides"):
        lines += ["", "| side | final - random, mean ± t95 over seeds | time to threshold s, median (reached) |",
                  "|---|---|---|"]
        for name, side in s["sides"].items():
            gain = "-" if side["gain_mean"] is None else f"{side['gain_mean']:+.1f} ± {_fmt(side['gain_t95'], 1)}"
            lines.append(f"| {name} | {gain} (n = {side['n']}) | {_fmt(side['time_to_threshold_median'])} "
                         f"({side['reached']}/{side['n']}) |")
    lines += ["", "compile / startup s: JaxMARL's XLA compile of the training program (its patch's timer); marlopt's "
              "seconds from process start to its first update. Time to threshold counts from process start in both. "
              "Repeat k runs seed (--seed + k) on both sides."]
    return "\n".join(lines)


def mean_t95(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and the half-width of its Student-t 95% interval (None where undefined)."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None
    from scipy.stats import t

    return mean, float(t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / len(values) ** 0.5)


def summarise(runs: list[dict[str, Any]], random_return: float | None = None) -> dict[str, Any]:
    """``ratios``: marlopt / JaxMARL per pair (frames/s, peak memory), median over the pairs;
    ``sides``: per side, final return − random (mean ± t95 over the repeats' seeds) and time to threshold."""
    from benchmark import pair_ratios

    per_pair = pair_ratios(runs, "jaxmarl", ["fps_loop", "fps_wall", "peak_rss_mib", "time_to_threshold_s"])
    ratios = {f"{key} ratio": statistics.median(vals) for key, vals in per_pair.items() if vals}
    sides: dict[str, Any] = {}
    for name in ("jaxmarl", "marlopt"):
        done = [r for r in runs if r["name"] == name and "error" not in r]
        if not done:
            continue
        gains = [r["return_final"] - random_return for r in done
                 if random_return is not None and r["return_final"] is not None]
        mean, half = mean_t95(gains)
        reached = [r["time_to_threshold_s"] for r in done if r["time_to_threshold_s"] is not None]
        sides[name] = {"n": len(done), "gain_mean": mean, "gain_t95": half, "gains": gains, "reached": len(reached),
                       "time_to_threshold_median": statistics.median(reached) if reached else None}
    return {"ratios": ratios, "sides": sides}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jaxmarl-dir", type=Path, default=DEFAULT_CHECKOUT, help="checkout of JaxMARL's public code")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the anchor venv (--setup creates it)")
    p.add_argument("--setup", action="store_true", help="create the venv, apply the patch, then exit")
    p.add_argument("--task", choices=tuple(TASKS), default="mpe")
    p.add_argument("--frames", type=int, default=300_000, help="frame budget of each run (default %(default)s)")
    p.add_argument("--repeats", type=int, default=1,
                   help="pairs, back to back; the order alternates; repeat k runs seed --seed + k on both sides")
    p.add_argument("--which", default="jaxmarl,marlopt", help="comma-separated subset of %(default)s")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mpe-backend", choices=("jax", "mpe2"), default="jax",
                   help="marlopt's MPE simulator (env.backend; default %(default)s: JaxMARL's own MPE)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra marlopt.train override, after the mapping's (repeatable; for ablations)")
    p.add_argument("--delta", type=float, default=None, help="threshold = random + delta (default: MPE 20, SMAX 0.5)")
    p.add_argument("--window", type=int, default=3, help="updates in the trailing mean of returns (default 3)")
    p.add_argument("--random-episodes", type=int, default=512)
    p.add_argument("--out", type=Path, default=None, help="JSON report (default docs/bench/jaxmarl_<task>.json)")
    p.add_argument("--workdir", type=Path, default=None, help="run directories (default: a new /tmp dir)")
    p.add_argument("--sample-interval", type=float, default=0.2, help="memory and row polling period, s")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    p.add_argument("--print-commands", action="store_true", help="print the commands and exit")
    p.add_argument("--_random-child", dest="_random_child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--_out", dest="_out", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.jaxmarl_python = str(args.venv / "bin" / "python")
    args.which_list = [w.strip() for w in args.which.split(",") if w.strip()]
    if set(args.which_list) - {"jaxmarl", "marlopt"}:
        p.error("--which: choose from jaxmarl,marlopt")
    args.delta = TASKS[args.task]["delta"] if args.delta is None else args.delta
    args.out = args.out or REPO / "docs" / "bench" / f"jaxmarl_{args.task}.json"
    return args


def main_vs(argv: list[str]) -> int:
    """``benchmark.py --vs jaxmarl [options]``: this script's ``main`` with the other options."""
    i = argv.index("--vs")
    if argv[i + 1: i + 2] != ["jaxmarl"]:
        print("benchmark: --vs takes jaxmarl (the only anchor with its own harness); e.g. --vs jaxmarl "
              "--jaxmarl-dir /work/anchors/JaxMARL", file=sys.stderr)
        return 2
    return main(argv[:i] + argv[i + 2:])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args._random_child:
        random_child(args.jaxmarl_dir, args.task, args.random_episodes, args.seed, args._out)
        return 0
    if args.setup:
        return setup(args.jaxmarl_dir, args.venv)
    from benchmark import anchor_workdir, marlopt_command, meta, run_alternating, write_report

    if args.print_commands:
        tmp = Path("<workdir>")
        print("jaxmarl:", " ".join(jaxmarl_command(args.jaxmarl_python, args.jaxmarl_dir, args.task, args.frames,
                                                   args.seed, tmp / "jaxmarl" / "hydra")))
        print("marlopt:", " ".join(marlopt_command(overrides_of(args), tmp / "marlopt" / "run")))
        return 0
    work = anchor_workdir("bench_jaxmarl", args.jaxmarl_python, f"python scripts/bench_jaxmarl.py --setup "
                          f"--jaxmarl-dir {args.jaxmarl_dir}", lambda: apply_patch(args.jaxmarl_dir), args.workdir)
    if work is None:
        return 2
    report: dict[str, Any] = {"meta": meta(args), "task": TASKS[args.task]["label"], "delta": args.delta,
                              "window": args.window, "jaxmarl_dir": str(args.jaxmarl_dir), "patch": PATCH.name,
                              "marlopt_overrides": overrides_of(args),
                              "unmatched": UNMATCHED, "runs": []}
    report["meta"]["platform"] = platform.platform()
    freeze = args.venv / "freeze.txt"
    report["jaxmarl_venv"] = freeze.read_text().split() if freeze.is_file() else None
    rp = random_policy(args.jaxmarl_python, args.jaxmarl_dir, args.task, args.random_episodes, args.seed, work)
    report["random_policy"] = rp
    threshold = rp["return_mean"] + args.delta if "return_mean" in rp else None
    report["threshold"] = threshold
    print(f"bench_jaxmarl: random policy {rp.get('return_mean')}, threshold {threshold}", flush=True)
    failed = "error" in rp

    def run(name: str, rep_args: argparse.Namespace, rdir: Path) -> dict[str, Any]:
        return (run_jaxmarl if name == "jaxmarl" else run_marlopt)(rep_args, rdir, threshold)

    def line(res: dict[str, Any]) -> str:
        return (f"{res['frames']} frames, fps loop {_fmt(res['fps_loop'])}, wall {_fmt(res['fps_wall'])}, "
                f"threshold at {_fmt(res['time_to_threshold_s'])} s, final return {_fmt(res['return_final'], 2)}, "
                f"peak RSS {res['peak_rss_mib']:.0f} MiB")

    failed |= run_alternating(args, work, report, "bench_jaxmarl", run, line)
    report["summary"] = summarise(report["runs"], rp.get("return_mean"))
    return write_report(report, markdown, args.out, "bench_jaxmarl", work, args.workdir is not None, failed)


if __name__ == "__main__":
    sys.exit(main())
