"""``python -m marlopt.train algo=<name> env=<name> map=<name> [key=value ...]``.

With no arguments: MAPPO on MPE simple_spread (3 agents) on the CPU. ``-m`` sweeps with Hydra
(``-m seed=0,1,2 algo=mappo``). ``resume=<run_dir>`` continues a run from its newest readable
checkpoint (``checkpoint=step_N`` picks one; ``total_steps=`` may be raised at the same time, and is
kept for later resumes). Each run directory holds ``.hydra/``, ``metrics.jsonl``, ``tb/``,
``versions.json`` and ``checkpoints/``.

Everything that can be checked before training is checked before Hydra creates a directory
(marlopt/preflight.py); what fails later ends in one ``marlopt: error:`` line with the checkpoint and
the metrics left consistent. Exit status (docs/reliability.md):

====  =====================================================================================
0     finished (or ``max_iterations`` reached, or the resumed run had already finished)
1     an I/O failure during the run (a full disk, a directory gone): resume when it is fixed
2     refused before training: bad input, missing simulator, run directory in use or taken
3     diverged: ``nonfinite_patience`` consecutive optimiser steps had a non-finite loss or
      gradient; nothing was saved after the divergence
128+N stopped by signal N (130 SIGINT, 143 SIGTERM; 140 submitit's SIGUSR2, after which submitit
      requeues the job: docs/sweeps.md) after writing ``checkpoints/latest.pt``: resume it (a SLURM
      requeue can test for 143)
====  =====================================================================================
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import tempfile
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from marlopt.cli import (CONFIG_DIR, apply_renames, check_choices, compose, fail, job_overrides, load_run_config,
                         parse_overrides, usage)
from marlopt.config import ConfigError, TrainConfig, register_configs, to_objects

#: Keys a resumed run may change; everything else comes from the saved config. All but
#: ``max_iterations`` (a limit of one call) are kept in the run for later resumes.
RESUMABLE_CHANGES = ("total_steps", "device", "progress", "max_iterations", "torch_threads")

EXIT_IO_ERROR = 1
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS, errno.EIO, errno.ENOENT,
                errno.EFBIG, errno.ESTALE}
EXIT_DIVERGED = 3

MULTIRUN_FLAGS = {"-m", "--multirun"}
HELP_FLAGS = {"-h", "--help"}

_DIVERGED: list[Path] = []  # sweep jobs that diverged (the sweep goes on; the status says so at the end)
#: The file where sweep jobs running in other processes (the joblib and submitit launchers) add the
#: run directory of a job that diverged, for the sweep's final status; set by ``main`` for ``-m``.
DIVERGED_FILE_ENV = "MARLOPT_SWEEP_DIVERGED"


def _note(text: str) -> None:
    print(f"marlopt: {text}", file=sys.stderr, flush=True)


def _write_failure(exc: BaseException) -> str | None:
    """One line for an exception that means "the disk refused a write" (``None`` for others):
    an ``OSError`` of the file system (:data:`WRITE_ERRNOS`: a full disk or quota, no permission,
    a read-only or failing disk, a directory gone) and torch's serializer's ``RuntimeError``
    ("PytorchStreamWriter failed writing file ...")."""
    if isinstance(exc, OSError) and not isinstance(exc, ConnectionError) and exc.errno in WRITE_ERRNOS:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or exc}{where}"
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text or "file write failed" in text):
        return "a checkpoint write failed (disk full?): " + text.strip().splitlines()[-1][:200]
    return None


def run_training(cfg: TrainConfig, run_dir: Path, resume: bool = False, checkpoint: str | None = None,
                 changes: dict[str, str] | None = None, in_sweep: bool = False) -> str:
    """Train with an already validated config in ``run_dir``; returns why training stopped.

    ``resume``: continue from ``checkpoint`` (a name in ``checkpoints/``), by default the newest
    readable one; ``changes``: the resumable keys this call changed (kept with the run).
    ``in_sweep``: a divergence returns ``"diverged"`` (the sweep's other jobs go on) instead of
    exiting.
    """
    from marlopt.algos.registry import runner_class
    from marlopt.checkpoint import (CheckpointError, load_checkpoint, newest_checkpoint, remove_stale_temporaries,
                                    resolve_checkpoint)
    from marlopt.guard import NonFiniteError
    from marlopt.logger import RunLogger, VERSIONS_FILE, write_versions
    from marlopt.optim import set_speed_kit
    from marlopt.rundir import RunDirError, RunLock, save_changes

    set_speed_kit(cfg.speed_kit)
    try:
        lock = RunLock(run_dir)
    except RunDirError as exc:
        fail(str(exc))
    try:
        stale = remove_stale_temporaries(run_dir)
        if stale:
            _note(f"removed {len(stale)} temporary file(s) of a checkpoint write that was killed: {', '.join(stale)}")
        payload = None
        if resume:
            try:
                if checkpoint:
                    path = resolve_checkpoint(run_dir, checkpoint)
                    payload, notes = load_checkpoint(path), []
                else:
                    path, payload, notes = newest_checkpoint(run_dir)
            except CheckpointError as exc:
                fail(str(exc))
            _note(f"run directory: {run_dir}")
            for note in notes:
                _note(note)
            frames = int(payload["counters"]["frames"])
            _note(f"resuming from {path.name} at {frames:,} frames")
            if payload["counters"].get("finished") and frames >= int(cfg.total_steps):
                _note(f"this run already finished at {frames:,} frames (its final evaluation is in metrics.jsonl); "
                      "raise total_steps= to train longer")
                return "finished"
            if changes:
                save_changes(run_dir, changes)
        else:
            _note(f"run directory: {run_dir}")
        if not (run_dir / VERSIONS_FILE).exists():
            write_versions(run_dir)
        runner = runner_class(cfg.algo.family)(cfg, run_dir, payload)
        log_state = (payload or {}).get("log", {})
        logger = RunLogger(run_dir, runner.total_frames, start_frame=runner.frames, progress=cfg.progress,
                           rows=log_state.get("metrics_rows"), elapsed_s=log_state.get("elapsed_s", 0.0),
                           wandb=cfg.logger, wandb_id=log_state.get("wandb_id"), config=cfg)
        for note in logger.notes:
            _note(note)
        try:
            reason = runner.train(logger)
        finally:
            logger.close()
            runner.close()
    except NonFiniteError as exc:
        if not in_sweep:
            fail(str(exc), EXIT_DIVERGED)
        _note(f"error: {exc} (run directory: {run_dir})")
        _record_diverged(run_dir)
        return "diverged"
    except (OSError, RuntimeError) as exc:
        line = _write_failure(exc)
        if line is None:
            raise
        fail(f"{line}; the last complete checkpoint and the metrics up to it are kept: free space or fix the "
             f"path, then resume with: python -m marlopt.train resume={run_dir}", EXIT_IO_ERROR)
    finally:
        lock.release()
    _note(f"{reason} at {runner.frames:,} frames; run directory: {run_dir}")
    final = getattr(runner, "final_eval", None)
    if final:
        line = f"final greedy evaluation: return {final['return_mean']:.3f}"
        if "return_std" in final:
            line += f" ± {final['return_std']:.3f}"
        if "episodes" in final:
            line += f" over {int(final['episodes'])} episodes"
        if "win_rate" in final:
            line += f", win rate {final['win_rate']:.3f}"
        _note(line)
    if reason != "finished":
        _note(f"continue with: python -m marlopt.train resume={run_dir}")
    return reason


def _record_diverged(run_dir: Path) -> None:
    """Note a diverged sweep job for the sweep's exit status: in this process, and in the sweep's
    file when the job runs in a launcher's worker process (best effort: the job's own line and
    ``metrics.jsonl`` say it too)."""
    _DIVERGED.append(run_dir)
    path = os.environ.get(DIVERGED_FILE_ENV)
    if path:
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{run_dir}\n")
        except OSError:
            pass


def _diverged_jobs() -> list[str]:
    """The diverged jobs of this sweep, in this process and in the launcher's workers (once each)."""
    found = [str(p) for p in _DIVERGED]
    path = os.environ.get(DIVERGED_FILE_ENV)
    if path and os.path.exists(path):
        found += Path(path).read_text(encoding="utf-8").splitlines()
    return list(dict.fromkeys(found))


def exit_status(reason: str) -> int:
    """The process's exit status for why training stopped (the table in the module docstring)."""
    if reason.startswith("stopped by "):
        return 128 + signal.Signals[reason.removeprefix("stopped by ")].value
    return EXIT_DIVERGED if reason == "diverged" else 0


def _hydra_task(cfg: DictConfig) -> None:
    """One job of ``python -m marlopt.train`` (a run, or a job of a ``-m`` sweep), in the process of
    its launcher (docs/sweeps.md): jobs running side by side share the cores (``marlopt.sweep.share_cores``);
    a submitit job whose directory already holds its run (requeued after preemption) resumes it,
    and one stopped by submitit's preemption signal hands over to submitit's requeue."""
    from marlopt import sweep as sweep_support

    try:
        typed = to_objects(cfg)
    except ConfigError as exc:
        fail(str(exc))
    hydra_cfg = HydraConfig.get()
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir = Path(hydra_cfg.runtime.output_dir)
    resume = False
    if sweep_support.under_submitit():
        try:
            resume = sweep_support.requeued_run(run_dir, cfg) == "resume"
            if resume:  # the run's config (the job's), with the changes earlier resumes kept
                typed = sweep_support.with_kept_changes(cfg, run_dir)
        except ConfigError as exc:
            fail(str(exc))
    sweep_support.fix_start_method()
    typed, shared = sweep_support.share_cores(typed, hydra_cfg.launcher)
    if shared:
        _note(shared)
    reason = run_training(typed, run_dir, resume=resume, in_sweep=in_sweep)
    if reason.startswith("stopped by "):  # a signal stops the whole sweep, not just this job
        sys.exit(sweep_support.hand_over(reason, run_dir))


def _resume(argv: list[str]) -> None:
    from marlopt.preflight import check_job
    from marlopt.rundir import RunDirError, check_writable

    given = parse_overrides(argv)
    run_dir = Path(given.pop("resume"))
    checkpoint = given.pop("checkpoint", None)
    unknown = sorted(set(given) - set(RESUMABLE_CHANGES))
    if unknown:
        raise ConfigError(f"resume takes the run's saved config; only {', '.join(RESUMABLE_CHANGES)} may be "
                          f"changed (got {', '.join(unknown)})")
    _, typed = load_run_config(run_dir, {"max_iterations": "null", **given})  # per-call: not inherited
    check_job(typed)
    try:
        check_writable(run_dir)
    except RunDirError as exc:
        raise ConfigError(str(exc)) from None
    kept = {k: v for k, v in given.items() if k != "max_iterations"}
    sys.exit(exit_status(run_training(typed, run_dir, resume=True, checkpoint=checkpoint, changes=kept)))


def hydra_overrides(argv: list[str]) -> list[str]:
    """Hydra's own settings on the command line (``hydra.run.dir=...``), which decide where jobs write."""
    return [a for a in argv if "=" in a and not a.startswith("-") and a.lstrip("+~").startswith("hydra.")
            and not a.lstrip("+~").startswith("hydra.searchpath=")]


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if HELP_FLAGS & set(argv):
        print(usage(argv))
        return
    from marlopt.checkpoint import CheckpointError
    from marlopt.preflight import check_command
    from marlopt.sweep import check_launcher

    multirun = bool(MULTIRUN_FLAGS & set(argv))
    try:
        argv = apply_renames(argv)  # an old algorithm name (algo=mars_asym): its new name, with a notice
        given = parse_overrides(argv)
        if "resume" in given:
            if given["resume"].strip() == "":
                raise ConfigError("resume= needs the run directory to continue: "
                                  "resume=runs/<env>/<map>/<algo>/seed<N>_<time> (leave it out to start a new run)")
            if given["resume"] != "null":
                if multirun:
                    raise ConfigError("resume= continues one run; it does not go with -m")
                _resume(argv)
                return
            argv = [a for a in argv if not a.lstrip("+~").startswith("resume=")]
        if "checkpoint" in given:
            raise ConfigError("checkpoint= goes with resume=<run_dir> (which checkpoint to continue from)")
        check_launcher(argv)
        check_choices(argv)
        check_command(job_overrides(argv), hydra_overrides(argv), multirun, compose)
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
    report = None
    if multirun:  # jobs in other processes report a divergence here
        fd, report = tempfile.mkstemp(prefix="marlopt-sweep-", suffix=".diverged")
        os.close(fd)
        os.environ[DIVERGED_FILE_ENV] = report
    try:
        hydra.main(config_path=str(CONFIG_DIR), config_name="config", version_base="1.3")(_hydra_task)()
        diverged = _diverged_jobs()
    finally:
        if report is not None:
            os.environ.pop(DIVERGED_FILE_ENV, None)
            Path(report).unlink(missing_ok=True)
    if diverged:
        fail(f"{len(diverged)} sweep job(s) diverged: {', '.join(diverged)}", EXIT_DIVERGED)


if __name__ == "__main__":
    main()
