"""What a job of a Hydra sweep needs to know about its launcher (docs/sweeps.md).

- **The launcher's plugin** (:func:`check_launcher`): ``hydra/launcher=parallel|slurm|joblib|submitit_*``
  without its plugin installed is refused in one line with the install command, before anything runs.
- **Parallel jobs on one machine** (``hydra/launcher=parallel`` or the plugin's ``joblib``):
  :func:`share_cores` gives each job ``max(1, usable_cpus // n_jobs)`` torch threads when it asked
  for all cores (``torch_threads=0``), and as many env worker processes when ``env.n_workers=0``
  (``hybrid`` one fewer; a share of 1 steps the envs in-process), so the jobs do not fight over the
  cores. An explicit ``torch_threads=``/``env.n_workers=`` wins. Under submitit,
  ``hydra.launcher.cpus_per_task`` is the share when set (SLURM pins it already; ``submitit_local``
  does not). :func:`fix_start_method` lets a joblib (loky) worker spawn env workers.
- **Preemption under submitit** (``hydra/launcher=slurm`` or ``submitit_local``): submitit's
  preemption/timeout signal (``SIGUSR2``, or ``$SUBMITIT_PREEMPT_SIGNAL``) goes through the runner's
  :class:`marlopt.runners.common.StopFlag` like SIGTERM does: ``checkpoints/latest.pt`` is written at
  the end of the iteration, then :func:`hand_over` calls submitit's own handler, which resubmits the
  same job (same overrides, same output directory) and requeues it. The requeued job finds its
  directory holding the run and resumes it (:func:`requeued_run`, :func:`with_kept_changes`), after
  checking that the run's config is the job's (:func:`check_same_config`).

Nothing here imports submitit, joblib or torch; the code runs in the job's process (the launcher
check, in the sweep's, before Hydra starts).
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from marlopt.config import ConfigError, TrainConfig

#: Where the first start of a submitit job keeps a copy of the ``.hydra/`` files Hydra writes:
#: a requeued job's Hydra rewrites ``.hydra/config.yaml`` before marlopt runs, so this copy is what
#: the run's config is compared against (and restored from when the job's config differs).
FIRST_START = "first_start"
HYDRA_FILES = ("config.yaml", "overrides.yaml", "hydra.yaml")

#: The exit status of submitit's local executor that makes its controller start the job again.
LOCAL_REQUEUE_STATUS = 144


def _note(text: str) -> None:
    print(f"marlopt: {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------
# The launcher's plugin

#: The packages each family of launchers needs (all in the ``sweep`` extra).
LAUNCHER_PACKAGES = {"joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
                     "submitit": ("hydra_plugins.hydra_submitit_launcher", "submitit")}


def installed(module: str) -> bool:
    """Whether ``module`` can be imported (without importing it; a missing parent package, such as
    ``hydra_plugins`` when no Hydra plugin is installed, counts as not installed)."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def check_launcher(argv: list[str]) -> None:
    """Raise ``ImportError`` (one line, with the install command) when ``hydra/launcher=NAME`` on
    the command line needs a plugin that is not installed: ``parallel``/``joblib`` need
    hydra-joblib-launcher, ``slurm``/``submitit_*`` hydra-submitit-launcher (marlopt's own launcher
    configs, ``configs/hydra/launcher/``, are named by the plugin config they extend)."""
    from marlopt.cli import CONFIG_DIR

    for arg in argv:
        key, _, name = arg.partition("=")
        if key.lstrip("+~") != "hydra/launcher" or not name:
            continue
        base = name
        own = CONFIG_DIR / "hydra" / "launcher" / f"{name}.yaml"
        if own.is_file():
            defaults = OmegaConf.load(own).get("defaults") or []
            base = str(defaults[0]) if defaults else name
        family = next((f for f in LAUNCHER_PACKAGES if base.startswith(f)), None)
        if family is None:
            continue
        missing = [m for m in LAUNCHER_PACKAGES[family] if not installed(m)]
        if missing:
            raise ImportError(f"hydra/launcher={name} needs the {family} launcher ({missing[0]} is not installed); "
                              'install it with: pip install -e ".[sweep]"')


# ---------------------------------------------------------------------------------------------------
# Cores shared by parallel jobs


def parallel_jobs(launcher: Any, cpus: int) -> int:
    """How many jobs of the sweep run at once on this machine's ``cpus`` cores under ``launcher``
    (``hydra.launcher``): joblib's ``n_jobs`` (negative counts back from the cores as joblib does,
    ``-1`` = all of them); 1 under any other launcher."""
    target = str(OmegaConf.select(launcher, "_target_", default="") or "") if launcher is not None else ""
    if not target.endswith("JoblibLauncher"):
        return 1
    n_jobs = OmegaConf.select(launcher, "n_jobs", default=None)
    if n_jobs is None:
        return 1
    n_jobs = int(n_jobs)
    return max(1, cpus + 1 + n_jobs if n_jobs < 0 else n_jobs)


def thread_share(cpus: int, jobs: int) -> int:
    """The cores each of ``jobs`` parallel jobs gets: ``max(1, cpus // jobs)``."""
    return max(1, cpus // max(1, jobs))


def share_cores(cfg: TrainConfig, launcher: Any) -> tuple[TrainConfig, str | None]:
    """``cfg`` with ``torch_threads`` and the env workers capped to this job's share of the cores
    (where they are 0, "all cores") when the launcher runs jobs side by side, and the note saying
    so (``None`` when nothing changed). A share of 1 steps the envs in this process
    (``env.vector=inproc``); ``env.vector=hybrid`` counts this process as one of its share.
    Changes the typed config only: the saved config keeps what was asked for."""
    from marlopt.envs.common import usable_cpus

    cpus = usable_cpus()
    jobs = parallel_jobs(launcher, cpus)
    per_task = OmegaConf.select(launcher, "cpus_per_task", default=None) if launcher is not None else None
    target = str(OmegaConf.select(launcher, "_target_", default="") or "") if launcher is not None else ""
    if jobs > 1:
        share, why = thread_share(cpus, jobs), f"{jobs} parallel jobs share {cpus} cores"
    elif "submitit" in target and per_task:
        share, why = min(cpus, int(per_task)), f"hydra.launcher.cpus_per_task={per_task}"
    else:
        return cfg, None
    if share >= cpus:
        return cfg, None
    changed = []
    if cfg.torch_threads == 0:
        cfg.torch_threads = share
        changed.append(f"torch_threads={share}")
    env = cfg.env
    if env.n_workers == 0 and env.vector in ("auto", "subproc", "hybrid"):
        workers = share - 1 if env.vector == "hybrid" else share
        if workers < 1 or (workers == 1 and env.vector == "auto"):
            env.vector = "inproc"
            changed.append("env.vector=inproc")
        else:
            env.n_workers = workers
            changed.append(f"env.n_workers={workers}")
    if not changed:
        return cfg, None
    return cfg, f"note: {why}: {', '.join(changed)} (set them to override)"


def fix_start_method() -> None:
    """In a joblib (loky) worker, make ``multiprocessing`` start env workers with ``spawn``: loky
    sets its own start method as the process default, which the spawned env workers cannot find."""
    import multiprocessing

    if multiprocessing.get_start_method(allow_none=True) not in (None, *multiprocessing.get_all_start_methods()):
        multiprocessing.set_start_method("spawn", force=True)


# ---------------------------------------------------------------------------------------------------
# Submitit: preemption, requeue, resume


def under_submitit() -> bool:
    """Whether this process is a job that submitit started (it sets ``SUBMITIT_EXECUTOR``)."""
    return bool(os.environ.get("SUBMITIT_EXECUTOR"))


def preemption_signals() -> tuple[signal.Signals, ...]:
    """The signals submitit sends a job on preemption or near its time limit (``--signal``): its
    ``SUBMITIT_PREEMPT_SIGNAL`` (default ``USR2``), as submitit's ``JobEnvironment`` reads it; none
    outside a submitit job."""
    if not under_submitit():
        return ()
    name = "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")
    sig = getattr(signal, name, None)
    return (sig,) if isinstance(sig, signal.Signals) else ()


def hand_over(reason: str, run_dir: Path) -> int:
    """After training stopped on submitit's preemption signal (``reason`` = ``"stopped by SIGUSR2"``,
    ``checkpoints/latest.pt`` written): call submitit's handler of that signal, which resubmits this
    job unchanged and requeues it (on SLURM with ``scontrol requeue``). Returns the exit status:
    128+N (submitit's local executor needs its own status 144 to start the job again: raised as is);
    when submitit does not requeue (timed out ``max_num_timeout`` times), a line says how to resume."""
    sig = signal.Signals[reason.removeprefix("stopped by ")]
    status = 128 + sig.value
    handler = signal.getsignal(sig)
    if sig not in preemption_signals() or not callable(handler):
        return status
    try:
        handler(sig, None)
    except SystemExit as exc:  # submitit requeued the job and exits
        if exc.code == LOCAL_REQUEUE_STATUS and os.environ.get("SUBMITIT_EXECUTOR") == "local":
            raise
        return status
    except Exception as exc:  # noqa: BLE001 - submitit's UncompletedJobError: not requeued
        _note(f"not requeued ({str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}); "
              f"continue by hand with: python -m marlopt.train resume={run_dir}")
    return status


def keep_first_start(run_dir: Path) -> None:
    """At a submitit job's first start: copy the ``.hydra/`` files Hydra wrote to
    ``.hydra/first_start/`` (a requeue compares against them)."""
    hydra_dir = run_dir / ".hydra"
    keep = hydra_dir / FIRST_START
    keep.mkdir(parents=True, exist_ok=True)
    for name in HYDRA_FILES:
        if (hydra_dir / name).is_file():
            shutil.copy2(hydra_dir / name, keep / name)


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(_flat(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: node}


def config_difference(saved: DictConfig, job: DictConfig) -> list[str]:
    """The keys whose values differ between two configs, as ``key: saved -> job`` (sorted)."""
    a = _flat(OmegaConf.to_container(saved, resolve=False))
    b = _flat(OmegaConf.to_container(job, resolve=False))
    missing = object()
    return [f"{k}: {a.get(k, '(none)')} -> {b.get(k, '(none)')}" for k in sorted(set(a) | set(b))
            if a.get(k, missing) != b.get(k, missing)]


def check_same_config(run_dir: Path, job_cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` (one line) unless the run in ``run_dir`` was started with the
    job's config (``.hydra/first_start/config.yaml``; without it, nothing to compare). On a
    mismatch the run's own ``.hydra/`` files are put back first, so it stays resumable as it was."""
    keep = run_dir / ".hydra" / FIRST_START
    if not (keep / "config.yaml").is_file():
        return
    try:
        saved = OmegaConf.load(keep / "config.yaml")
    except Exception as exc:  # noqa: BLE001 - a damaged copy: say which file
        raise ConfigError(f"{keep / 'config.yaml'} is damaged ({type(exc).__name__}); compare the run's config "
                          f"by hand, then resume with: python -m marlopt.train resume={run_dir}") from None
    assert isinstance(saved, DictConfig)
    diff = config_difference(saved, OmegaConf.create(OmegaConf.to_yaml(job_cfg)))  # as Hydra saved it
    if not diff:
        return
    for name in HYDRA_FILES:
        if (keep / name).is_file():
            shutil.copy2(keep / name, run_dir / ".hydra" / name)
    more = f" (and {len(diff) - 3} more)" if len(diff) > 3 else ""
    raise ConfigError(f"requeued job: {run_dir} holds a run of another config ({'; '.join(diff[:3])}{more}); "
                      f"resume that run with: python -m marlopt.train resume={run_dir}, or give this job "
                      "another hydra.sweep.dir")


def requeued_run(run_dir: Path, job_cfg: DictConfig) -> str:
    """What a submitit job does with its output directory: ``"new"`` (a fresh run: first start, or
    the run left no checkpoint, whose logs are then cleared) or ``"resume"`` (it holds this job's
    run with a checkpoint). Raises :class:`ConfigError` when it holds a run of another config."""
    from marlopt.checkpoint import checkpoint_dir
    from marlopt.logger import METRICS_FILE
    from marlopt.rundir import has_run

    if not has_run(run_dir):
        keep_first_start(run_dir)
        return "new"
    check_same_config(run_dir, job_cfg)
    if any(checkpoint_dir(run_dir).glob("*.pt")):
        return "resume"
    _note(f"requeued job: {run_dir} has no checkpoint yet (stopped before its first one): starting it over")
    (run_dir / METRICS_FILE).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tb", ignore_errors=True)
    return "new"


def with_kept_changes(job_cfg: DictConfig, run_dir: Path) -> TrainConfig:
    """The typed config a requeued job resumes with: its own (the run's, checked by
    :func:`check_same_config`) with the changes earlier ``resume=`` calls kept
    (``.hydra/resume_changes.yaml``: a raised ``total_steps`` holds), as ``resume=`` loads it."""
    from marlopt.cli import parse_value
    from marlopt.config import to_objects
    from marlopt.rundir import saved_changes

    cfg = job_cfg.copy()
    for key, value in saved_changes(run_dir).items():
        OmegaConf.update(cfg, key, parse_value(value), merge=False)
    return to_objects(cfg)
