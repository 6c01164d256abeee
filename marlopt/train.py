"""``python -m marlopt.train algo=<name> env=<name> map=<name> [key=value ...]``.

With no arguments: MAPPO on MPE simple_spread (3 agents) on the CPU. ``-m`` sweeps with Hydra
(``-m seed=0,1,2 algo=mappo``). ``resume=<run_dir>`` continues a run from its latest checkpoint
(``total_steps=`` may be raised at the same time). Each run directory holds ``.hydra/``,
``metrics.jsonl``, ``tb/``, ``versions.json`` and ``checkpoints/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from marlopt.cli import CONFIG_DIR, check_choices, compose, fail, job_overrides, load_run_config, parse_overrides, usage
from marlopt.config import ConfigError, TrainConfig, register_configs, to_objects
from marlopt.envs.registry import check_env

#: Keys a resumed run may change; everything else comes from the saved config.
RESUMABLE_CHANGES = ("total_steps", "device", "progress", "max_iterations", "torch_threads")


MULTIRUN_FLAGS = {"-m", "--multirun"}
HELP_FLAGS = {"-h", "--help"}


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False) -> str:
    """Train with an already validated config in ``run_dir``; returns why training stopped."""
    from marlopt.algos.registry import runner_class
    from marlopt.checkpoint import load_checkpoint, resolve_checkpoint
    from marlopt.logger import RunLogger, VERSIONS_FILE, write_versions
    from marlopt.optim import set_speed_kit

    set_speed_kit(cfg.speed_kit)
    run_dir.mkdir(parents=True, exist_ok=True)
    payload = load_checkpoint(resolve_checkpoint(run_dir, "latest")) if resume else None
    if not (run_dir / VERSIONS_FILE).exists():
        write_versions(run_dir)
    runner = runner_class(cfg.algo.family)(cfg, run_dir, payload)
    logger = RunLogger(run_dir, runner.total_frames, start_frame=runner.frames, progress=cfg.progress)
    try:
        reason = runner.train(logger)
    finally:
        logger.close()
        runner.close()
    print(f"marlopt: {reason} at {runner.frames:,} frames; run directory: {run_dir}", file=sys.stderr)
    if reason != "finished":
        print(f"marlopt: continue with: python -m marlopt.train resume={run_dir}", file=sys.stderr)
    return reason


def _hydra_task(cfg: DictConfig) -> None:
    try:
        typed = to_objects(cfg)
    except ConfigError as exc:
        fail(str(exc))
    run_training(typed, Path(HydraConfig.get().runtime.output_dir))


def _resume(argv: list[str]) -> None:
    given = parse_overrides(argv)
    run_dir = Path(given.pop("resume"))
    unknown = sorted(set(given) - set(RESUMABLE_CHANGES))
    if unknown:
        raise ConfigError(f"resume takes the run's saved config; only {', '.join(RESUMABLE_CHANGES)} may be "
                          f"changed (got {', '.join(unknown)})")
    _, typed = load_run_config(run_dir, {"max_iterations": "null", **given})  # per-call: not inherited
    run_training(typed, run_dir, resume=True)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if HELP_FLAGS & set(argv):
        print(usage(argv))
        return
    from marlopt.algos.registry import check_algo
    from marlopt.checkpoint import CheckpointError

    try:
        if "resume" in parse_overrides(argv) and parse_overrides(argv)["resume"] not in ("", "null"):
            _resume(argv)
            return
        check_choices(argv)
        if not MULTIRUN_FLAGS & set(argv):  # sweeps validate per job
            typed = to_objects(compose(job_overrides(argv)))
            check_algo(typed.algo)  # rule, family, runner, objective
            check_env(typed.env.name, typed.env.map_name)  # simulator installed?
    except (ConfigError, CheckpointError, ImportError) as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - Hydra/OmegaConf composition errors: one line
        if type(exc).__module__.split(".")[0] not in ("hydra", "omegaconf"):
            raise
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if exc.__cause__ is not None:
            lines.append(str(exc.__cause__).splitlines()[0])
        fail("; ".join(lines[:2]))
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_hydra_task)()


if __name__ == "__main__":
    main()
