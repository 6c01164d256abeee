"""Everything that can be checked before Hydra creates a run directory, checked there.

``python -m marlopt.train`` calls :func:`check_command` on the command line before anything is
written. For a sweep (``-m``) every job of the product is composed and checked, so a bad value in
job 7 fails before job 0 trains. Each job is checked for:

- its config (types, ranges, unknown keys: :func:`marlopt.config.to_objects`);
- its update rule (:func:`marlopt.algos.registry.check_algo`) and device (CUDA present, index valid);
- ``logger.wandb=true``: the wandb package installed (:func:`marlopt.logger.check_wandb`);
- its env: simulator installed (:func:`marlopt.envs.registry.check_env`), the vector mode offered,
  and the env actually built once with the run's options and closed (``env.continuous`` on a map
  without Box actions, ``env.options.n_agents=0``, an unknown option: the maker's own message);
- its run directory: creatable and writable, and not already holding a run (resume that instead).

Each failure is a :class:`marlopt.config.ConfigError` whose message is the one line printed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from marlopt.config import ConfigError, TrainConfig, to_objects
from marlopt.rundir import RunDirError, check_writable, has_run

#: The maker's errors that mean "these options do not make an env" (anything else is a bug: raised).
ENV_OPTION_ERRORS = (ValueError, TypeError, KeyError, AssertionError, NotImplementedError)


def check_device(name: str) -> None:
    """``device=cuda``/``cuda:N`` needs a CUDA build of torch and that GPU (``auto`` always works)."""
    import torch

    if not name.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"device={name} but CUDA is not available (torch {torch.__version__}); use device=cpu "
                          "(or device=auto), or install a CUDA build of torch")
    index = int(name.split(":", 1)[1]) if ":" in name else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(f"device={name} but this machine has {torch.cuda.device_count()} GPU(s); "
                          f"use cuda:0 … cuda:{torch.cuda.device_count() - 1}")


def check_env_builds(cfg: TrainConfig, built: set[Any] | None = None) -> None:
    """Build the run's env once with its options (and close it); ``built`` caches what passed."""
    from marlopt.envs.registry import VECTOR_MAKERS, check_env, make_env

    env = cfg.env
    check_env(env.name, env.map_name)  # the simulator (ImportError with the install hint)
    if env.vector == "batched" and env.name not in VECTOR_MAKERS:
        raise ConfigError(f"env.vector=batched: env={env.name} has no batched vector env (available for: "
                          f"{', '.join(sorted(VECTOR_MAKERS))}); use env.vector=auto, inproc or subproc")
    options = env.maker_options()
    key = (env.name, env.map_name, repr(sorted(options.items())))
    if built is not None and key in built:
        return
    try:
        made = make_env(env.name, env.map_name, options)
    except ENV_OPTION_ERRORS as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"env={env.name} map={env.map_name} cannot be built with these options: {message}") from None
    made.close()
    if built is not None:
        built.add(key)


def check_job(cfg: TrainConfig, built: set[Any] | None = None) -> None:
    """The checks of one job's typed config that need no run directory."""
    from marlopt.algos.registry import check_algo

    check_algo(cfg.algo)
    check_device(cfg.device)
    if cfg.logger.wandb:
        from marlopt.logger import check_wandb

        check_wandb(cfg.logger)
    check_env_builds(cfg, built)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs of ``-m`` with these overrides, as Hydra's basic sweeper forms them (the cartesian
    product of the comma lists and ranges, in its order)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(overrides)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def output_dir(job: list[str], hydra_overrides: list[str], job_num: int | None) -> Path:
    """Where Hydra will write this job: ``hydra.run.dir``, or ``hydra.sweep.dir/subdir`` in a sweep."""
    from hydra import compose, initialize_config_dir

    from marlopt.cli import CONFIG_DIR

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*job, *hydra_overrides], return_hydra_config=True)
    if job_num is None:
        return Path(str(OmegaConf.select(cfg, "hydra.run.dir")))
    OmegaConf.update(cfg, "hydra.job.num", job_num)
    return Path(str(OmegaConf.select(cfg, "hydra.sweep.dir"))) / str(OmegaConf.select(cfg, "hydra.sweep.subdir"))


def check_output_dir(path: Path, in_sweep: bool) -> None:
    try:
        check_writable(path)
    except RunDirError as exc:
        raise ConfigError(str(exc)) from None
    if has_run(path):
        key = "hydra.sweep.dir" if in_sweep else "hydra.run.dir"
        raise ConfigError(f"{path} already holds a run; continue it with resume={path}, or choose another {key}")


def check_command(job_argv: list[str], hydra_argv: list[str], multirun: bool,
                  compose_job: Any) -> list[TrainConfig]:
    """Check every job of a command line; returns their typed configs. ``job_argv``: the overrides
    that make a job's config; ``hydra_argv``: Hydra's own (``hydra.run.dir=...``);
    ``compose_job(overrides) -> DictConfig`` composes one job."""
    jobs = sweep_jobs(job_argv) if multirun else [job_argv]
    built: set[Any] = set()
    typed = []
    for number, job in enumerate(jobs):
        where = f"sweep job {number} ({' '.join(job)}): " if multirun and len(jobs) > 1 else ""
        try:
            composed: DictConfig = compose_job(job)
            cfg = to_objects(composed)
            check_job(cfg, built)
            check_output_dir(output_dir(job, hydra_argv, number if multirun else None), multirun)
        except (ConfigError, ImportError) as exc:
            raise ConfigError(f"{where}{exc}") from None
        typed.append(cfg)
    return typed
