"""BenchMARL's MAPPO on PettingZoo MPE ``simple_spread`` (3 agents, 25 steps): the speed baseline.

Runs BenchMARL's own Hydra entry (``benchmarl/run.py``: ``algorithm=mappo
task=pettingzoo/simple_spread``) in this process with BenchMARL's DEFAULT MAPPO and experiment
settings, changing only what a speed benchmark on this machine needs, then reads BenchMARL's CSV
logs and reports frames/s.

Setup (once; a separate venv, never the project's environment)::

    python3 scripts/benchmarl_mappo.py --setup            # creates /tmp/benchmarl-venv
    # = python3 -m venv /tmp/benchmarl-venv &&
    #   /tmp/benchmarl-venv/bin/pip install -c scripts/constraints-benchmarl.txt \
    #       torch==2.13.0 benchmarl "pettingzoo[mpe]" psutil

``scripts/constraints-benchmarl.txt`` pins the CPU torch (2.13.0; pip finds the local ``+cpu``
wheel through its find-links; an unpinned torch would pull GBs of CUDA wheels), pettingzoo 1.24.3
(the last release whose ``pettingzoo.mpe`` exists; torchrl's PettingZoo wrapper imports it) and
the BenchMARL / torchrl / tensordict versions this script was verified with. pip also installs
torchvision 0.28.0 (a BenchMARL dependency), whose C ops fail to load against the CPU torch;
nothing on this path imports it (video rendering would), so it is left as is.

Run::

    /tmp/benchmarl-venv/bin/python scripts/benchmarl_mappo.py --frames 12000 --out-dir /tmp/bm
    # extra BenchMARL Hydra overrides may follow "--":  ... -- experiment.lr=0.0003

Only these differ from BenchMARL's defaults (Hydra overrides passed to ``benchmarl.run``)::

    task.max_cycles=25                       # BenchMARL's simple_spread default is 100; the benchmark task is 25
    experiment.max_n_frames=<--frames>       # default 3_000_000
    experiment.evaluation=false              # default true (first iteration and every 120k frames)
    experiment.render=false                  # default true (renders the evaluation episodes)
    experiment.loggers=[csv]                 # default [csv, wandb]
    experiment.create_json=false             # default true (marl-eval json)
    experiment.sampling_device=cpu, train_device=cpu, buffer_device=cpu   # already the defaults
    experiment.prefer_continuous_actions=<--actions == continuous>        # default true (continuous)
    experiment.save_folder=<out-dir>, hydra.run.dir=<out-dir>/hydra, seed=<--seed> (default 0)

BenchMARL 1.5.2 defaults in effect (``conf/experiment/base_experiment.yaml``,
``conf/algorithm/mappo.yaml``, ``conf/model/layers/mlp.yaml``,
``conf/task/pettingzoo/simple_spread.yaml``)::

    on_policy_collected_frames_per_batch = 6000   (frames = env steps summed over the envs)
    on_policy_n_envs_per_worker          = 10     (PettingZoo is not vectorised: a torchrl SerialEnv
                                                   steps the 10 envs one after another in this process;
                                                   parallel_collection=false)
    on_policy_minibatch_size             = 400    (env steps, i.e. 400 x 3 agent samples)
    on_policy_n_minibatch_iters          = 45     (passes over the batch: 45 x 6000/400 = 675 steps
                                                   per optimiser per iteration)
    lr = 5e-5 (actor and critic, separate Adam optimisers), adam_eps = 1e-6,
    clip_grad_norm = true, clip_grad_val = 5, gamma = 0.99
    mappo: share_param_critic = true, clip_epsilon = 0.2, entropy_coef = 0.0, critic_coef = 1.0,
           loss_critic_type = l2, lmbda (GAE) = 0.9, scale_mapping = biased_softplus_1.0,
           use_tanh_normal = true, minibatch_advantage = false; torchrl ClipPPOLoss with
           normalize_advantage = false and no value clipping; no value normalisation
    model (actor and critic): MLP num_cells = [256, 256], Tanh, no norm layers, torch default init;
           actor shared by the 3 agents (share_policy_params = true), no agent id input;
           critic = one centralised MLP on the global state (PettingZoo ``state()``, the agents'
           observations concatenated), one value expanded to the agents
    actions: continuous (prefer_continuous_actions = true): TanhNormal with a state-dependent scale
    rewards: each agent's own PettingZoo reward (local_ratio = 0.5), GAE per agent
    seed = 0, checkpoint_interval = 0, torch threads = torch's default (all cores)

Frames/s: BenchMARL logs ``timers/iteration_time`` per iteration (collection + training + its
logging) and ``timers/total_time`` (their running sum, i.e. the training loop without startup).
This script reports ``fps_loop = frames / timers/total_time`` and, for reference,
``fps_run = frames / wall time of Experiment.run()`` (loop + closing the collector) and
``fps_process = frames / wall time of this whole process`` (imports and experiment construction
included). ``timers/collection_time`` and ``timers/training_time`` give the rollout/update split.

Returns: ``collection/reward/episode_reward_mean`` is the mean over agents of each agent's
episode return (per-agent, not the team sum marlopt logs; ``team_return_*`` multiplies it by 3).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

T_PROCESS_START = time.time()

HERE = Path(__file__).resolve().parent
DEFAULT_VENV = Path("/tmp/benchmarl-venv")
CONSTRAINTS = HERE / "constraints-benchmarl.txt"
N_AGENTS = 3


def setup_venv(venv: Path) -> int:
    """Create the BenchMARL venv and install BenchMARL with the CPU torch pinned."""
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", "-c", str(CONSTRAINTS),
           "torch==2.13.0", "benchmarl", "pettingzoo[mpe]", "psutil"]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def read_scalar(scalars: Path, name: str) -> list[float]:
    """One BenchMARL CSV scalar (rows ``step,value``) as a list of values in step order."""
    path = scalars / f"{name}.csv"
    if not path.is_file():
        return []
    with open(path) as f:
        rows = [(int(float(r[0])), float(r[1])) for r in csv.reader(f) if len(r) >= 2]
    return [v for _, v in sorted(rows)]


def find_scalars(out_dir: Path) -> Path:
    found = sorted(out_dir.glob("**/scalars/timers_total_time.csv"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"benchmarl_mappo: no BenchMARL CSV logs under {out_dir} (did the run fail?)")
    return found[-1].parent


def summarise(out_dir: Path, timing: dict[str, float]) -> dict:
    s = find_scalars(out_dir)
    frames = read_scalar(s, "counters_total_frames")
    total_time = read_scalar(s, "timers_total_time")
    collection = read_scalar(s, "timers_collection_time")
    training = read_scalar(s, "timers_training_time")
    ret = read_scalar(s, "collection_reward_episode_reward_mean")
    n_frames = int(frames[-1]) if frames else 0
    loop_s = total_time[-1] if total_time else float("nan")
    run_s = timing.get("run_end", float("nan")) - timing.get("run_start", float("nan"))
    process_s = time.time() - T_PROCESS_START
    out = {
        "frames": n_frames,
        "iterations": len(total_time),
        "loop_s": loop_s,
        "collection_s": sum(collection),
        "training_s": sum(training),
        "run_s": run_s,
        "process_s": process_s,
        "startup_s": timing.get("run_start", float("nan")) - T_PROCESS_START,
        "fps_loop": n_frames / loop_s if loop_s > 0 else float("nan"),
        "fps_run": n_frames / run_s if run_s > 0 else float("nan"),
        "fps_process": n_frames / process_s if process_s > 0 else float("nan"),
        "return_per_agent_first": ret[0] if ret else None,
        "return_per_agent_last": ret[-1] if ret else None,
        "team_return_first": ret[0] * N_AGENTS if ret else None,
        "team_return_last": ret[-1] * N_AGENTS if ret else None,
        "scalars_dir": str(s),
    }
    try:
        import torch
        out["torch_threads"] = torch.get_num_threads()
        out["versions"] = {"torch": torch.__version__}
        import benchmarl, tensordict, torchrl  # noqa: E401
        out["versions"].update(benchmarl=getattr(benchmarl, "__version__", "?"), torchrl=torchrl.__version__,
                               tensordict=tensordict.__version__)
    except Exception:  # noqa: BLE001 - versions are informational
        pass
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", action="store_true", help="create the venv and install BenchMARL, then exit")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="venv for --setup (default %(default)s)")
    p.add_argument("--frames", type=int, default=12_000, help="experiment.max_n_frames (rounded up to whole "
                   "6000-frame batches by BenchMARL)")
    p.add_argument("--out-dir", type=Path, default=None, help="experiment.save_folder (default: a new /tmp dir)")
    p.add_argument("--actions", choices=("continuous", "discrete"), default="continuous",
                   help="continuous = BenchMARL's default (prefer_continuous_actions=true)")
    p.add_argument("--max-cycles", type=int, default=25, help="episode length (BenchMARL's default is 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument("--json", type=Path, default=None, help="also write the summary here")
    args = p.parse_args(argv)

    if args.setup:
        return setup_venv(args.venv)

    try:
        import benchmarl.run as benchmarl_run
        from benchmarl.experiment import Experiment
    except ImportError as err:
        print(f"benchmarl_mappo: cannot import BenchMARL ({err}); run this script with the BenchMARL venv's "
              f"python ({DEFAULT_VENV}/bin/python), after: python3 {__file__} --setup", file=sys.stderr)
        return 2
    if args.threads:
        import torch
        torch.set_num_threads(args.threads)

    if args.out_dir is None:
        import tempfile
        args.out_dir = Path(tempfile.mkdtemp(prefix="benchmarl-mappo-"))
    out_dir = args.out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    overrides = [
        "algorithm=mappo",
        "task=pettingzoo/simple_spread",
        f"task.max_cycles={args.max_cycles}",
        f"seed={args.seed}",
        f"experiment.max_n_frames={args.frames}",
        "experiment.evaluation=false",
        "experiment.render=false",
        "experiment.loggers=[csv]",
        "experiment.create_json=false",
        "experiment.sampling_device=cpu",
        "experiment.train_device=cpu",
        "experiment.buffer_device=cpu",
        f"experiment.prefer_continuous_actions={str(args.actions == 'continuous').lower()}",
        f"experiment.save_folder={out_dir}",
        f"hydra.run.dir={out_dir / 'hydra'}",
        *extra,
    ]
    print("benchmarl_mappo: python -m benchmarl.run " + " ".join(overrides), flush=True)

    timing: dict[str, float] = {}
    original_run = Experiment.run

    def timed_run(self, *a, **k):  # wall time of the training loop proper (no imports, no construction)
        timing["run_start"] = time.time()
        try:
            return original_run(self, *a, **k)
        finally:
            timing["run_end"] = time.time()

    Experiment.run = timed_run
    cwd = os.getcwd()
    sys.argv = [benchmarl_run.__file__, *overrides]
    try:
        benchmarl_run.hydra_experiment()
    finally:
        Experiment.run = original_run
        os.chdir(cwd)  # Hydra (version_base=None) changes into hydra.run.dir

    summary = {"overrides": overrides, "actions": args.actions, **summarise(out_dir, timing)}
    print("benchmarl_mappo: " + json.dumps(summary), flush=True)
    print(f"benchmarl_mappo: {summary['frames']} frames; fps_loop {summary['fps_loop']:.1f} "
          f"(frames / timers/total_time = {summary['loop_s']:.1f} s: collection {summary['collection_s']:.1f} s, "
          f"training {summary['training_s']:.1f} s); fps_process {summary['fps_process']:.1f} "
          f"(whole process {summary['process_s']:.1f} s, startup {summary['startup_s']:.1f} s)", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
