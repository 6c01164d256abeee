"""Who may write a run directory, and what a resume changed.

- :class:`RunLock`: one process at a time per run directory. ``fcntl.flock`` on ``<run>/.lock``
  (holding the owner's pid and host); the kernel releases it when the process dies however it dies
  (``kill -9``, a lost node's job), so a stale lock never needs clearing by hand. A second process
  on the same run refuses in one line. (``flock`` is advisory and local: on NFS it holds between
  processes of one machine only.)
- :func:`check_writable`: the run's output directory can be created and written, checked before
  anything is created.
- :func:`saved_changes` / :func:`save_changes`: the keys a resume may change (``total_steps``,
  ``device``, ...) are kept in ``.hydra/resume_changes.yaml``, so a run extended with
  ``resume=<run> total_steps=<more>`` and then preempted continues to its new length when resumed
  again, and ``.hydra/config.yaml`` stays the run's original config.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

LOCK_FILE = ".lock"
CHANGES_FILE = "resume_changes.yaml"


class RunDirError(RuntimeError):
    """The run directory cannot be used (taken by another process, not writable); one line."""


class RunLock:
    """An exclusive, non-blocking lock on a run directory for the life of the process (or until
    :meth:`release`)."""

    def __init__(self, run_dir: Path):
        import fcntl

        self.path = run_dir / LOCK_FILE
        run_dir.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a+")
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            self._file.seek(0)
            owner = self._file.read().strip() or "another process"
            self._file.close()
            raise RunDirError(f"run directory {run_dir} is in use by {owner}; wait for it to end (or stop it) "
                              "before resuming or evaluating into it") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            self._file.close()  # closing the descriptor releases the flock


def check_writable(path: Path) -> None:
    """Raise :class:`RunDirError` unless ``path`` (a directory, existing or not) could be created and
    written: its nearest existing ancestor must be a directory in which a file can be created (a
    real write, not ``os.access``, which says yes to root on a read-only mount)."""
    path = Path(path).absolute()
    ancestor = path
    while not ancestor.exists():
        if ancestor.parent == ancestor:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise RunDirError(f"cannot create the run directory {path}: {ancestor} is a file, not a directory; "
                          "choose another hydra.run.dir")
    try:
        fd, probe = tempfile.mkstemp(prefix=".marlopt-write-test", dir=ancestor)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise RunDirError(f"cannot write the run directory {path}: {ancestor}: {exc.strerror or exc}; choose a "
                          "writable hydra.run.dir (or hydra.sweep.dir)") from None


def has_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` already holds (part of) a run: its lock, metrics or checkpoints."""
    return any((run_dir / name).exists() for name in (LOCK_FILE, "metrics.jsonl", "checkpoints"))


def saved_changes(run_dir: Path) -> dict[str, str]:
    """The changes earlier resumes made (key -> command-line value), oldest first."""
    path = run_dir / ".hydra" / CHANGES_FILE
    if not path.is_file():
        return {}
    data: Any = OmegaConf.to_container(OmegaConf.load(path))
    return {str(k): str(v) for k, v in (data or {}).items()}


def save_changes(run_dir: Path, changes: dict[str, str]) -> None:
    """Record ``changes`` on top of the earlier ones (atomically)."""
    merged = {**saved_changes(run_dir), **changes}
    path = run_dir / ".hydra" / CHANGES_FILE
    tmp = path.with_name(f".{CHANGES_FILE}.tmp")
    OmegaConf.save(OmegaConf.create(merged), tmp)
    os.replace(tmp, path)
