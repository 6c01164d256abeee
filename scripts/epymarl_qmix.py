"""EPyMARL's QMIX on PettingZoo MPE ``simple_spread`` (3 agents, 25 steps, discrete): the QMIX anchor.

Runs EPyMARL's own entry point (``src/main.py --config=qmix --env-config=gymma with
env_args.key=pz-mpe-simple-spread-v3 env_args.time_limit=25 ...``, the command of EPyMARL's README)
in this process, with EPyMARL's DEFAULT QMIX settings (``CONFIG_KEYS`` below, or ``--print-config``),
then reads the sacred run directory EPyMARL writes (``config.json``, ``info.json``) and reports
frames/s and the return curves as JSON.

EPyMARL source: https://github.com/uoe-agents/epymarl at commit ``EPYMARL_COMMIT`` (main, 2024-09-24,
"Update README.md"; after tag v2.0.0), extracted to ``/tmp/epymarl-src`` unmodified except for the
recorded compatibility edit(s) in ``COMPAT_EDITS``:

1. ``src/envs/__init__.py`` line 6, ``from .smaclite_wrapper import SMACliteWrapper`` -> the same in a
   ``try: ... except ImportError: SMACliteWrapper = None``. Why: the import is unconditional and
   ``smaclite`` is installed only from GitHub (``env_requirements.txt``: ``git+https://...smaclite``),
   not from PyPI; gymma / PettingZoo never use it. Nothing else in the source is changed.

Other compatibility choices are install pins, not source edits (``PIP_PACKAGES``):

- ``pettingzoo==1.24.3``: EPyMARL's ``src/envs/pz_wrapper.py`` registers ``pz-<lib>-<env>`` gym ids
  by globbing ``pettingzoo/**/*_v?.py`` and imports ``pettingzoo.mpe.simple_spread_v3``; 1.24.3 is the
  last PettingZoo with ``pettingzoo.mpe`` (later releases moved MPE to the ``mpe2`` package that
  marlopt uses). Checked here: pettingzoo 1.24.3's ``simple_spread_v3.parallel_env()`` and mpe2
  1.1.1's (marlopt's venv) give bit-identical observations and rewards for 20 seeded episodes under
  the same random actions (defaults N=3, local_ratio=0.5, max_cycles=25, discrete actions).
- ``setuptools==80.9.0``: sacred 0.8.7 imports ``pkg_resources``, removed from setuptools >= 81.
- PyYAML 6 instead of ``requirements.txt``'s ``PyYAML==5.3.1`` (no Python 3.11 wheel; EPyMARL only
  uses ``yaml.load(..., Loader=yaml.FullLoader)``, unchanged in 6). The rest of ``requirements.txt``
  (tensorboard-logger, matplotlib, seaborn, ...) is not needed for this path and not installed.
- torch 2.13.0 (CPU): EPyMARL indexes tensors with a list of slices (``episode_buffer.py``), which
  torch still reads as a tuple (it warns "deprecated ... will be changed in pytorch 2.9"; checked:
  ``x[[slice(None), 1]]`` selects a column in 2.13.0).

Team reward (``common_reward=True``, ``reward_scalarisation="sum"``, EPyMARL's defaults): EPyMARL's
gymma wrapper sums the agents' PettingZoo rewards, ``float(sum(rewards))`` (``src/envs/gymma.py``),
i.e. the SUM over the 3 agents, like marlopt's team reward; ``return_mean`` / ``test_return_mean``
are means over episodes of that summed episode return.

KNOWN EPyMARL BEHAVIOUR, LAST STEP (checked here by stepping both side by side): with PettingZoo's
MPE, EPyMARL's ``PettingZooWrapper.step`` (``src/envs/pz_wrapper.py``) gets an empty agent list on
the step where PettingZoo truncates (``max_cycles``, default 25 = ``time_limit``), so it returns
``done=True`` and replaces that step's rewards by zeros: with the README command the 25th step's reward
is LOST (learned from as 0 and missing from the logged returns, which are sums of 24 steps' rewards;
e.g. -75.57 instead of -79.08 for one random episode). ``--full-last-reward`` passes
``env_args.max_cycles=26`` (a PettingZoo kwarg, forwarded by gym.make; sacred needs ``--force`` to
accept the new key) so that PettingZoo does not truncate and gymnasium's ``TimeLimit(25)`` ends the
episode: then all 25 rewards are counted, identical to the PettingZoo sum (checked). Either way the
time-limit end is stored as ``terminated`` (no bootstrap from the last state): the episode runner
stores ``terminated or truncated`` unless the env's info has ``episode_limit``, which gymma's lacks.

Setup (once; a separate venv, never the project's environment)::

    python3 scripts/epymarl_qmix.py --setup
    # = python3 -m venv /tmp/epymarl-venv
    #   /tmp/epymarl-venv/bin/pip install torch==2.13.0 sacred==0.8.7 PyYAML==6.0.4 numpy==2.4.6 \
    #       gymnasium==1.4.0 pettingzoo==1.24.3 pygame==2.6.1 setuptools==80.9.0
    #   git --git-dir=<epymarl git dir> archive <EPYMARL_COMMIT> | tar -x -C /tmp/epymarl-src
    #   + the COMPAT_EDITS, and /tmp/epymarl-src/MARLOPT_SETUP.json recording commit and edits

The source comes from ``--epymarl-tarball`` if given (a GitHub tarball of the commit), else from
``--epymarl-git-dir`` (default ``/work/.mirror/uoe-agents+epymarl/repo``, a bare clone holding the
commit) if it exists, else from GitHub's tarball of the commit (needs access to GitHub).

Run (any python: the script re-executes itself with the venv's python)::

    python3 scripts/epymarl_qmix.py --frames 20000 --seed 0 --out /tmp/epymarl_qmix.json
    python3 scripts/epymarl_qmix.py --frames 20000 --seed 0 --out r.json --set test_interval=5000 lr=0.001
    python3 scripts/epymarl_qmix.py --print-config        # the key-by-key table of EPyMARL's defaults

which runs, in ``/tmp/epymarl-src`` with ``OMP_NUM_THREADS=1`` (``--threads``; EPyMARL's main.py
also calls ``torch.set_num_threads(1)``)::

    python src/main.py --config=qmix --env-config=gymma with env_args.key=pz-mpe-simple-spread-v3 \
        env_args.time_limit=25 seed=<S> t_max=<N-1> [<--set key=value> ...]

Only these differ from EPyMARL's QMIX/gymma defaults: ``env_args.key`` (default null: required),
``env_args.time_limit=25`` (gymma.yaml's default is 100; EPyMARL's README uses 25 for MPE),
``seed`` (default: sacred draws one) and ``t_max=N-1`` (default 2_050_000): EPyMARL's loop runs
``while t_env <= t_max``, one whole 25-step episode at a time, so ``t_max=N-1`` stops at exactly
``N`` frames when N is a multiple of 25 (else at the next multiple). Frames = ``t_env`` = env steps
of training episodes (test episodes are not counted), the same unit as marlopt's frames.

Tests (greedy, ``evaluation_epsilon=0``, ``test_nepisode=100`` episodes) run after the first training
episode (t_env=25) and then whenever ``t_env - last_test_t >= test_interval`` (default 50000), i.e. at
t_env = 25 + k*test_interval: with the defaults a 20k run has one test, at t_env=25. Use
``--set test_interval=...`` for a greedy curve, and ``--frames`` = 25 + k*test_interval to end on a
test. The training ``return_mean`` (epsilon-greedy episodes, mean since the last log) is logged after
the first episode and then every ``runner_log_interval`` (10000) frames.

Output JSON: ``frames``; ``wall_s`` (this whole process: imports, setup, loop, teardown), ``run_s``
(EPyMARL's ``run_sequential``: env, buffer, networks, loop), ``loop_s`` (first ``runner.run`` call
to the end of the training loop: rollouts, updates, tests, logging), with ``rollout_s`` (training
episodes, epsilon-greedy, incl. network inference), ``update_s`` (``QLearner.train``), ``test_s``
(test episodes); ``fps_loop`` = frames / loop_s (the headline), ``fps_loop_no_test`` = frames /
(loop_s - test_s), ``fps_wall`` = frames / wall_s; ``curves``: ``return_mean`` and
``test_return_mean`` (and their ``_std``) as ``[[t_env, value], ...]``; ``scalars``: every scalar
EPyMARL logged (loss, grad_norm, td_error_abs, q_taken_mean, target_mean, epsilon, ...); ``config``:
EPyMARL's full effective config (sacred ``config.json``; its ``use_cuda: true`` is the pre-check value,
switched off at run time without CUDA); ``sacred_dir``; ``epymarl_command``; versions. The timings
come from wrappers around ``EpisodeRunner.run``, ``QLearner.train`` and ``run.run_sequential``
installed in this process; EPyMARL's code is not changed for them.

Verified on this project's 2-core CPU machine (shared with other jobs, so +-15 %), 20000 frames,
seed 0: README settings + ``--set test_interval=5000 runner_log_interval=2500``: fps_loop 379
(loop 52.8 s = rollout 25.0 + update 12.2 (769 gradient steps) + test 14.9 (400 episodes)),
fps_loop_no_test 527, train return_mean -80.3 (t=25) -> -74.9 (t=17525), test_return_mean -108.5
(t=25) -> -93.3 (t=15025); the same with ``--full-last-reward``: fps_loop 437, return_mean
-82.6 -> -75.5, test -116.0 -> -83.7; pure defaults (one test, at t=25): fps_loop 428,
fps_loop_no_test 456. A fresh ``--setup`` reproduces the same package set and the same seeded returns.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

T_PERF_START = time.perf_counter()

HERE = Path(__file__).resolve().parent
EPYMARL_REPO = "uoe-agents/epymarl"
EPYMARL_COMMIT = "cbc38c09588064eab978501d0f12c2cf58fa7fc2"
DEFAULT_VENV = Path("/tmp/epymarl-venv")
DEFAULT_SRC = Path("/tmp/epymarl-src")
DEFAULT_GIT_DIR = Path("/work/.mirror/uoe-agents+epymarl/repo")
SETUP_RECORD = "MARLOPT_SETUP.json"
ENV_KEY = "pz-mpe-simple-spread-v3"
TIME_LIMIT = 25
N_AGENTS = 3

# The versions this script was verified with (Python 3.11.7). torch==2.13.0 resolves to the local
# CPU wheel; an unpinned torch pulls GBs of CUDA wheels.
PIP_PACKAGES = [
    "torch==2.13.0",
    "sacred==0.8.7",
    "PyYAML==6.0.4",
    "numpy==2.4.6",
    "gymnasium==1.4.0",
    "pettingzoo==1.24.3",
    "pygame==2.6.1",
    "setuptools==80.9.0",
]

# (file, exact old text, new text, why). Applied by --setup, idempotently; each old text must occur once.
COMPAT_EDITS: list[tuple[str, str, str, str]] = [
    (
        "src/envs/__init__.py",
        "from .smaclite_wrapper import SMACliteWrapper\n",
        "try:  # marlopt compat edit: smaclite is a git-only dependency, unused for gymma\n"
        "    from .smaclite_wrapper import SMACliteWrapper\n"
        "except ImportError:\n"
        "    SMACliteWrapper = None\n",
        "line 6 imports smaclite unconditionally; smaclite is not on PyPI (git-only) and gymma never uses it",
    ),
]

# EPyMARL's QMIX configuration on gymma, key by key: (key, effective value, where it is set, meaning).
# Effective = default.yaml, then envs/gymma.yaml, then algs/qmix.yaml (later files win; main.py merges
# env config before alg config), then the command line. "[set]" marks what this script passes.
CONFIG_KEYS: list[tuple[str, str, str, str]] = [
    # --- env ---
    ("env", "gymma", "gymma.yaml (default.yaml: sc2)", "GymmaWrapper over gym.make(env_args.key); obs padded "
     "to the longest, flattened per agent"),
    ("env_args.key", "pz-mpe-simple-spread-v3 [set]", "gymma.yaml: null", "PettingZoo simple_spread_v3"
     ".parallel_env() with its defaults: N=3, local_ratio=0.5, max_cycles=25, continuous_actions=False "
     "(5 discrete actions)"),
    ("env_args.time_limit", "25 [set]", "gymma.yaml: 100", "gymnasium TimeLimit; also episode_limit "
     "(buffer length 26)"),
    ("env_args.pretrained_wrapper", "null", "gymma.yaml", "only for MPE tag/adversary"),
    ("env_args.seed", "= seed", "main.py", "env reset(seed) once at construction; later resets unseeded"),
    ("common_reward", "True", "default.yaml", "one team reward (QMIX requires it)"),
    ("reward_scalarisation", "sum", "default.yaml", "team reward = SUM of the agents' rewards ('mean' divides by "
     "n_agents); see the last-step note in the module docstring"),
    ("state", "54 = 3 x 18", "gymma.py get_state", "concatenation of the agents' (padded) observations"),
    # --- runner / loop ---
    ("runner", "episode", "default.yaml, qmix.yaml", "EpisodeRunner: ONE env in-process, one whole episode per "
     "iteration ('parallel' = ParallelRunner: batch_size_run envs in subprocesses)"),
    ("batch_size_run", "1", "default.yaml", "envs per iteration (EpisodeRunner asserts 1)"),
    ("t_max", "2050000 -> N-1 [set]", "gymma.yaml", "loop runs while t_env <= t_max, 25 frames per iteration"),
    ("batch_size", "32", "default.yaml", "EPISODES per gradient step, sampled uniformly without replacement; ONE "
     "gradient step per collected episode, from the time the buffer holds >= 32 episodes (t_env >= 800)"),
    ("buffer_size", "5000", "qmix.yaml (default.yaml: 32)", "replay buffer capacity in EPISODES (125k "
     "transitions), oldest overwritten first"),
    ("buffer_cpu_only", "True", "default.yaml", "buffer on CPU"),
    ("use_cuda", "True -> False", "default.yaml", "switched off at run time when no CUDA device"),
    # --- agent network ---
    ("mac", "basic_mac", "default.yaml", "one agent network shared by all agents (parameter sharing)"),
    ("agent", "rnn", "default.yaml", "RNNAgent: fc1(in, 64) ReLU -> (GRUCell if use_rnn else Linear(64, 64) ReLU) "
     "-> fc2(64, n_actions); torch default init"),
    ("use_rnn", "False", "qmix.yaml", "so the agent is a feed-forward MLP 21 -> 64 -> 64 -> 5 (no recurrence)"),
    ("hidden_dim", "64", "default.yaml", "agent hidden width"),
    ("obs_agent_id", "True", "default.yaml, qmix.yaml", "one-hot agent id appended to the obs (18 + 3 = 21 inputs)"),
    ("obs_last_action", "False", "qmix.yaml (default.yaml: True)", "previous one-hot action NOT appended"),
    ("obs_individual_obs", "False", "qmix.yaml", "critics only; unused by QMIX"),
    ("agent_output_type", "q", "qmix.yaml", "agent outputs Q-values"),
    # --- exploration / test ---
    ("action_selector", "epsilon_greedy", "qmix.yaml", "per agent: uniform random available action with prob. epsilon"),
    ("epsilon_start", "1.0", "qmix.yaml", "linear decay in t_env ..."),
    ("epsilon_finish", "0.05", "qmix.yaml", "... to this ..."),
    ("epsilon_anneal_time", "50000", "qmix.yaml", "... over this many frames, then flat"),
    ("evaluation_epsilon", "0.0", "qmix.yaml", "test episodes are greedy"),
    ("test_greedy", "True", "default.yaml, qmix.yaml", "used by the multinomial selector only"),
    ("test_interval", "50000", "gymma.yaml (default.yaml: 2000)", "test after the first episode, then at t_env = 25 + "
     "k*test_interval"),
    ("test_nepisode", "100", "gymma.yaml (default.yaml: 20)", "greedy test episodes per test (not counted in t_env)"),
    ("log_interval", "50000", "gymma.yaml", "console summary"),
    ("runner_log_interval", "10000", "gymma.yaml", "training return_mean/std, epsilon, ep_length logged every this "
     "many frames (mean over the episodes since the last log)"),
    ("learner_log_interval", "10000", "gymma.yaml", "loss, grad_norm, td_error_abs, q_taken_mean, target_mean"),
    # --- learner ---
    ("learner", "q_learner", "qmix.yaml", "QLearner: 1-step TD on Q_tot; target r + gamma (1 - terminated) "
     "Q_tot_target(s', a'); masked mean of squared TD errors over real timesteps"),
    ("gamma", "0.99", "default.yaml", "discount"),
    ("double_q", "True", "qmix.yaml", "a' = argmax of the online agent net (avail-masked), valued by the target net"),
    ("mixer", "qmix", "qmix.yaml", "monotonic hypernetwork mixer on the state"),
    ("mixing_embed_dim", "32", "qmix.yaml", "mixer hidden width: |W1| (3 x 32) + b1 -> ELU -> |W2| (32 x 1) + V(s)"),
    ("hypernet_layers", "2", "qmix.yaml", "hyper_w_1, hyper_w_final = Linear(54, 64) ReLU Linear(64, .); abs() of "
     "the weights; hyper_b_1 = Linear(54, 32); V = Linear(54, 32) ReLU Linear(32, 1)"),
    ("hypernet_embed", "64", "qmix.yaml", "hypernetwork hidden width"),
    ("lr", "0.0005", "default.yaml", "learning rate"),
    ("optimizer", "Adam (torch defaults: betas 0.9/0.999, eps 1e-8)", "q_learner.py", "Adam(params, lr) over agent + "
     "mixer parameters; NOT RMSProp"),
    ("optim_alpha", "0.99", "default.yaml", "RMSProp alpha: UNUSED by q_learner"),
    ("optim_eps", "1e-05", "default.yaml", "RMSProp eps: UNUSED by q_learner (Adam keeps eps 1e-8)"),
    ("grad_norm_clip", "10", "default.yaml", "clip_grad_norm_ over agent + mixer parameters together"),
    ("target_update_interval_or_tau", "200", "qmix.yaml", "> 1: hard copy of agent + mixer every 200 gradient steps "
     "(= 200 episodes = 5000 frames); <= 1: Polyak tau per step"),
    ("standardise_rewards", "True", "qmix.yaml", "rewards -> (r - mean) / std with a running mean/var updated from "
     "every sampled batch (sampled transitions are counted again each time)"),
    ("standardise_returns", "False", "qmix.yaml", "no target/return normalisation"),
    ("td_lambda", "(absent)", "-", "not a QMIX key in this version: 1-step targets"),
    ("q_nstep", "(absent for qmix)", "-", "n-step only in the actor-critic configs"),
    ("add_value_last_step", "True", "default.yaml", "read by no code in this version (unused)"),
    ("terminated at the time limit", "stored as terminal", "episode_runner.py", "no bootstrap at t = 25 (gymma's "
     "info has no 'episode_limit')"),
    ("seed", "sacred random -> S [set]", "main.py", "np.random.seed, torch.manual_seed, env seed"),
    ("torch threads", "1", "main.py", "torch.set_num_threads(1) in main.py's __main__"),
]


def config_table_markdown() -> str:
    lines = ["| key | EPyMARL value | set in | meaning |", "| --- | --- | --- | --- |"]
    lines += [f"| `{k}` | {v} | {src} | {m} |" for k, v, src, m in CONFIG_KEYS]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- setup


def _extract_source(dest: Path, git_dir: Path | None, tarball: Path | None) -> str:
    """Extract EPyMARL at EPYMARL_COMMIT into ``dest``; returns where it came from."""
    dest.mkdir(parents=True, exist_ok=True)
    if tarball is None and git_dir is not None and git_dir.exists():
        archive = subprocess.run(["git", f"--git-dir={git_dir}", "archive", "--format=tar", EPYMARL_COMMIT],
                                 check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tf:
            tf.extractall(dest, filter="data")
        return f"git archive {EPYMARL_COMMIT} from {git_dir}"
    if tarball is None:
        url = f"https://codeload.github.com/{EPYMARL_REPO}/tar.gz/{EPYMARL_COMMIT}"
        print(f"epymarl_qmix: no git dir; downloading {url}", flush=True)
        data = urllib.request.urlopen(url, timeout=120).read()
        origin = url
    else:
        data = tarball.read_bytes()
        origin = str(tarball)
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:  # GitHub tarballs hold one top folder: strip it
        members = []
        for m in tf.getmembers():
            parts = m.name.split("/", 1)
            if len(parts) == 2 and parts[1]:
                m.name = parts[1]
                members.append(m)
        tf.extractall(dest, members=members, filter="data")
    return origin


def apply_compat_edits(src: Path) -> list[dict]:
    applied = []
    for rel, old, new, why in COMPAT_EDITS:
        path = src / rel
        text = path.read_text()
        if new in text:
            state = f"already applied at line {text[: text.index(new)].count(chr(10)) + 1}"
        else:
            if text.count(old) != 1:
                raise SystemExit(f"epymarl_qmix: compat edit for {rel} does not apply (expected text found "
                                 f"{text.count(old)} times)")
            line = text[: text.index(old)].count("\n") + 1
            path.write_text(text.replace(old, new))
            state = f"applied at line {line}"
        applied.append({"file": rel, "state": state, "why": why,
                        "sha256_after": hashlib.sha256(path.read_bytes()).hexdigest()})
        print(f"epymarl_qmix: compat edit {rel}: {state} ({why})", flush=True)
    return applied


def setup(venv: Path, src: Path, git_dir: Path | None, tarball: Path | None, skip_pip: bool) -> int:
    record_path = src / SETUP_RECORD
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    if record.get("commit") != EPYMARL_COMMIT:
        if src.exists() and any(src.iterdir()):
            raise SystemExit(f"epymarl_qmix: {src} exists but is not EPyMARL {EPYMARL_COMMIT} set up by this "
                             f"script; remove it first")
        origin = _extract_source(src, git_dir, tarball)
        print(f"epymarl_qmix: extracted EPyMARL {EPYMARL_COMMIT} to {src} ({origin})", flush=True)
        record = {"repo": EPYMARL_REPO, "commit": EPYMARL_COMMIT, "source": origin}
    edits = apply_compat_edits(src)
    record.update(compat_edits=edits, pip=PIP_PACKAGES)
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    if skip_pip:
        return 0
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    cmd = [str(venv / "bin" / "pip"), "install", *PIP_PACKAGES]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


# ------------------------------------------------------------------------------------------------ run


def _value(v):
    """sacred's info.json stores numpy scalars as {'py/object': 'numpy.float64', 'value': x}."""
    if isinstance(v, dict) and "value" in v:
        return v["value"]
    if hasattr(v, "item"):
        return v.item()
    return v


def _curve(info: dict, key: str) -> list[list[float]]:
    return [[int(t), float(_value(v))] for t, v in zip(info.get(f"{key}_T", []), info.get(key, []))]


def run_epymarl(args: argparse.Namespace) -> dict:
    src_root = args.src.resolve()
    record_path = src_root / SETUP_RECORD
    if not record_path.is_file() or json.loads(record_path.read_text()).get("commit") != EPYMARL_COMMIT:
        raise SystemExit(f"epymarl_qmix: {src_root} is not set up; run: python3 {__file__} --setup")
    t_max = args.frames - 1
    updates = [f"env_args.key={ENV_KEY}", f"env_args.time_limit={TIME_LIMIT}", f"seed={args.seed}", f"t_max={t_max}"]
    force = list(args.force)
    if args.full_last_reward:
        updates.append("env_args.max_cycles=26")
        force = ["--force"]
    updates += args.set
    main_py = src_root / "src" / "main.py"
    argv = [str(main_py), "--config=qmix", "--env-config=gymma", *force, "with", *updates]
    command = f"cd {src_root} && OMP_NUM_THREADS={args.threads} python src/main.py " + " ".join(argv[1:])
    print(f"epymarl_qmix: {command}", flush=True)

    sys.path.insert(0, str(src_root / "src"))
    cwd = os.getcwd()
    os.chdir(src_root)
    import runpy

    import run as epy_run  # EPyMARL's src/run.py
    from learners.q_learner import QLearner
    from runners.episode_runner import EpisodeRunner

    t: dict = {"rollout_s": 0.0, "test_s": 0.0, "update_s": 0.0, "n_updates": 0, "n_train_episodes": 0,
               "n_test_episodes": 0, "loop_start": None, "loop_end": None, "run_start": None, "run_end": None,
               "t_env": 0, "sacred_dir": None}
    orig_runner_run, orig_train = EpisodeRunner.run, QLearner.train
    orig_run, orig_run_sequential = epy_run.run, epy_run.run_sequential

    def runner_run(self, test_mode=False):
        t0 = time.perf_counter()
        if t["loop_start"] is None:
            t["loop_start"] = t0
        try:
            return orig_runner_run(self, test_mode=test_mode)
        finally:
            dt = time.perf_counter() - t0
            if test_mode:
                t["test_s"] += dt
                t["n_test_episodes"] += 1
            else:
                t["rollout_s"] += dt
                t["n_train_episodes"] += 1
                t["t_env"] = self.t_env

    def learner_train(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_train(self, *a, **k)
        finally:
            t["update_s"] += time.perf_counter() - t0
            t["n_updates"] += 1

    def run_sequential(*a, **k):
        t["run_start"] = time.perf_counter()
        try:
            return orig_run_sequential(*a, **k)
        finally:
            t["run_end"] = t["loop_end"] = time.perf_counter()

    def run(_run, _config, _log):
        obs = [o for o in _run.observers if getattr(o, "dir", None)]
        t["sacred_dir"] = obs[0].dir if obs else None
        return orig_run(_run, _config, _log)

    EpisodeRunner.run, QLearner.train = runner_run, learner_train
    epy_run.run, epy_run.run_sequential = run, run_sequential
    sys.argv = argv
    exit_code = 0
    try:
        runpy.run_path(str(main_py), run_name="__main__")
    except SystemExit as e:  # sacred exits non-zero when the run fails
        exit_code = e.code if isinstance(e.code, int) else 1
    finally:
        EpisodeRunner.run, QLearner.train = orig_runner_run, orig_train
        epy_run.run, epy_run.run_sequential = orig_run, orig_run_sequential
        os.chdir(cwd)
    if exit_code or t["sacred_dir"] is None or t["loop_end"] is None:
        raise SystemExit(f"epymarl_qmix: EPyMARL run failed (exit {exit_code}, sacred dir {t['sacred_dir']})")

    sacred_dir = Path(t["sacred_dir"])
    config = json.loads((sacred_dir / "config.json").read_text())
    info = json.loads((sacred_dir / "info.json").read_text())
    run_json = json.loads((sacred_dir / "run.json").read_text())
    frames = int(t["t_env"])
    wall_s = time.perf_counter() - T_PERF_START
    loop_s = t["loop_end"] - t["loop_start"]
    run_s = t["run_end"] - t["run_start"]
    scalars = {k: _curve(info, k) for k in info if not k.endswith("_T") and f"{k}_T" in info}
    curves = {k: scalars.get(k, []) for k in ("return_mean", "return_std", "test_return_mean", "test_return_std")}

    import gymnasium
    import numpy
    import pettingzoo
    import sacred
    import torch

    out = {
        "library": "EPyMARL",
        "repo": EPYMARL_REPO,
        "commit": EPYMARL_COMMIT,
        "algorithm": "qmix",
        "env_key": ENV_KEY,
        "seed": args.seed,
        "frames": frames,
        "frames_requested": args.frames,
        "t_max": t_max,
        "last_step_reward": "included (env_args.max_cycles=26)" if args.full_last_reward
        else "dropped by EPyMARL's PettingZooWrapper (logged returns sum only the first 24 of the 25 steps' rewards)",
        "team_reward": f"{config.get('reward_scalarisation')} over the {N_AGENTS} agents' rewards",
        "wall_s": wall_s,
        "run_s": run_s,
        "loop_s": loop_s,
        "rollout_s": t["rollout_s"],
        "update_s": t["update_s"],
        "test_s": t["test_s"],
        "other_loop_s": loop_s - t["rollout_s"] - t["update_s"] - t["test_s"],
        "startup_s": t["loop_start"] - T_PERF_START,
        "fps_loop": frames / loop_s if loop_s > 0 else float("nan"),
        "fps_loop_no_test": frames / (loop_s - t["test_s"]) if loop_s > t["test_s"] else float("nan"),
        "fps_wall": frames / wall_s if wall_s > 0 else float("nan"),
        "n_train_episodes": t["n_train_episodes"],
        "n_updates": t["n_updates"],
        "n_test_episodes": t["n_test_episodes"],
        "curves": curves,
        "final_return_mean": curves["return_mean"][-1] if curves["return_mean"] else None,
        "final_test_return_mean": curves["test_return_mean"][-1] if curves["test_return_mean"] else None,
        "scalars": scalars,
        "config": config,
        "sacred_dir": str(sacred_dir),
        "sacred_status": run_json.get("status"),
        "epymarl_command": command,
        "threads": {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.get_num_threads()},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
                     "gymnasium": gymnasium.__version__, "pettingzoo": pettingzoo.__version__,
                     "sacred": sacred.__version__},
    }
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setup", action="store_true", help="create the venv, extract EPyMARL and apply the compat edits")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="default %(default)s")
    p.add_argument("--src", type=Path, default=DEFAULT_SRC, help="EPyMARL source folder (default %(default)s)")
    p.add_argument("--epymarl-git-dir", type=Path, default=DEFAULT_GIT_DIR,
                   help="git dir holding EPYMARL_COMMIT, for --setup (default %(default)s)")
    p.add_argument("--epymarl-tarball", type=Path, default=None, help="or a GitHub tarball of EPYMARL_COMMIT")
    p.add_argument("--skip-pip", action="store_true", help="--setup: only extract/patch the source")
    p.add_argument("--print-config", action="store_true", help="print the key-by-key table of EPyMARL's QMIX config")
    p.add_argument("--frames", type=int, default=20_000, help="training frames (t_max = frames - 1; whole episodes)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="write the JSON summary here")
    p.add_argument("--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                   help="extra sacred config updates passed after 'with' (e.g. test_interval=5000)")
    p.add_argument("--force", action="store_const", const=["--force"], default=[],
                   help="pass sacred's --force (needed for --set keys that EPyMARL's config does not have)")
    p.add_argument("--full-last-reward", action="store_true",
                   help="env_args.max_cycles=26 so that the 25th step's reward is not dropped (see docstring)")
    p.add_argument("--threads", type=int, default=1, help="OMP/MKL threads (default 1; main.py sets torch to 1)")
    args = p.parse_args(argv)

    if args.print_config:
        print(config_table_markdown())
        return 0
    if args.setup:
        return setup(args.venv, args.src, args.epymarl_git_dir, args.epymarl_tarball, args.skip_pip)

    venv_python = args.venv / "bin" / "python"
    if Path(sys.prefix).resolve() != args.venv.resolve():
        if not venv_python.exists():
            print(f"epymarl_qmix: no venv at {args.venv}; run: python3 {__file__} --setup", file=sys.stderr)
            return 2
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        os.execve(str(venv_python), [str(venv_python), str(Path(__file__).resolve()), *argv], env)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    summary = run_epymarl(args)
    text = json.dumps(summary, indent=2) + "\n"
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    c = summary["curves"]
    print(f"epymarl_qmix: {summary['frames']} frames; fps_loop {summary['fps_loop']:.1f} "
          f"(loop {summary['loop_s']:.1f} s: rollout {summary['rollout_s']:.1f}, "
          f"update {summary['update_s']:.1f}, test {summary['test_s']:.1f}); "
          f"fps_loop_no_test {summary['fps_loop_no_test']:.1f}; fps_wall {summary['fps_wall']:.1f} "
          f"(wall {summary['wall_s']:.1f} s)", flush=True)
    print(f"epymarl_qmix: return_mean {c['return_mean']}", flush=True)
    print(f"epymarl_qmix: test_return_mean {c['test_return_mean']}", flush=True)
    if args.out:
        print(f"epymarl_qmix: wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
