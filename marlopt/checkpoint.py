"""Atomic, resumable checkpoints.

A checkpoint is one ``torch.save`` payload: the update rule (models, optimisers, ValueNorm), RNG
states, the vector env's state (pickled envs, mid-episode), the runner's carried tensors and its
counters. Writes go to a temporary file in the same directory, are fsynced and then renamed over
the target (``os.replace`` is atomic), so a crash mid-write never leaves a corrupt ``latest.pt``.
Loading uses ``torch.load(..., weights_only=True)``: a checkpoint cannot execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

LATEST = "latest.pt"
TMP_MARK = ".tmp"  # a write in progress: ``.<name>.tmp<pid>`` beside its target

#: Bumped whenever a checkpoint written by an older marlopt would load *wrongly* rather than fail.
#: 2: linear weights are stored ``[out, in]`` (``nn.Linear``'s layout); format 1 stored ``[in, out]``,
#: and its square hidden layers would load silently transposed.
FORMAT = 2


class CheckpointError(RuntimeError):
    """A checkpoint is missing or unreadable; the message says which file and what to do."""


_NUMPY = "__numpy__"


def encode_numpy(obj: Any) -> Any:
    """Replace numpy arrays/scalars (not loadable with ``weights_only=True``) by tensors, recursively."""
    if isinstance(obj, np.ndarray):
        return {_NUMPY: torch.from_numpy(np.ascontiguousarray(obj)).clone(), "dtype": str(obj.dtype)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: encode_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(encode_numpy(v) for v in obj)
    return obj


def decode_numpy(obj: Any) -> Any:
    """Inverse of :func:`encode_numpy`."""
    if isinstance(obj, dict):
        if _NUMPY in obj:
            return obj[_NUMPY].numpy().astype(obj["dtype"], copy=True)
        return {k: decode_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(decode_numpy(v) for v in obj)
    return obj


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (plus the format number) atomically to ``path``."""
    payload = {**payload, "format": FORMAT}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk, a signal: the old file stays, the partial one goes
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_temporaries(run_dir: Path) -> list[str]:
    """Delete the temporary files of checkpoint writes that were killed mid-way (``kill -9``, a lost
    node). Call it only while holding the run's lock: then no write of this run is in flight."""
    directory = checkpoint_dir(run_dir)
    stale = sorted(directory.glob(f".*{TMP_MARK}*")) if directory.is_dir() else []
    for path in stale:
        path.unlink(missing_ok=True)
    return [p.name for p in stale]


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means a bad file
        others = sorted(p.name for p in path.parent.glob("*.pt") if p != path)
        hint = f"; other checkpoints there: {', '.join(others)}" if others else ""
        raise CheckpointError(f"corrupt or incompatible checkpoint {path}: {type(exc).__name__}: {exc}"[:400] + hint) from None
    if not isinstance(payload, dict) or "rule" not in payload:
        raise CheckpointError(f"{path} is not a marlopt checkpoint (no 'rule' entry)")
    found = payload.get("format", 1)
    if found != FORMAT:
        raise CheckpointError(
            f"{path} has checkpoint format {found}, this marlopt reads format {FORMAT} (see FORMAT in "
            "marlopt/checkpoint.py for what changed): evaluate or resume it with the marlopt commit in the "
            "run's versions.json, or start a new run"
        )
    return payload


def checkpoint_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints"


def resolve_checkpoint(run_dir: Path, name: str = "latest") -> Path:
    """``latest``, a file name in ``checkpoints/`` (``step_100000`` or ``step_100000.pt``), or a path."""
    candidate = Path(name)
    if candidate.suffix == ".pt" and candidate.is_file():
        return candidate
    directory = checkpoint_dir(run_dir)
    file = directory / (name if name.endswith(".pt") else f"{name}.pt")
    if not file.is_file():
        have = sorted(p.stem for p in directory.glob("*.pt")) if directory.is_dir() else []
        raise CheckpointError(
            f"no checkpoint '{name}' in {directory}" + (f"; available: {', '.join(have)}" if have else " (none saved yet)")
        )
    return file


def _step_frames(path: Path) -> int:
    """The frame count in a ``step_<frames>.pt`` name (-1 for any other name)."""
    stem = path.stem
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else -1


def _skipped(path: Path, exc: CheckpointError) -> str:
    """The note for an unreadable checkpoint: its name and why (the error without its path)."""
    return f"skipped {path.name}: {str(exc).split(': ', 1)[-1][:200]}"


def newest_checkpoint(run_dir: Path) -> tuple[Path, dict[str, Any], list[str]]:
    """The readable checkpoint with the most frames, its payload, and a note per file skipped.

    ``latest.pt`` is refreshed every ``latest_interval`` frames and ``step_<N>.pt`` every
    ``save_interval``, so either can be the newer one when a run dies. Candidates are tried from the
    most frames down (``latest.pt`` is read first to learn its count); an unreadable one is skipped
    with a note (and left on disk for inspection), so a corrupt newest file falls back to the next.
    Raises :class:`CheckpointError` when none is readable.
    """
    directory = checkpoint_dir(run_dir)
    steps = sorted((p for p in directory.glob("step_*.pt") if _step_frames(p) >= 0), key=_step_frames, reverse=True)
    notes: list[str] = []
    latest, latest_payload, latest_frames = directory / LATEST, None, -1
    if latest.is_file():
        try:
            latest_payload = load_checkpoint(latest)
            latest_frames = int(latest_payload["counters"]["frames"])
        except CheckpointError as exc:
            notes.append(_skipped(latest, exc))
    for path in steps:
        if _step_frames(path) <= latest_frames:
            break
        try:
            return path, load_checkpoint(path), notes
        except CheckpointError as exc:
            notes.append(_skipped(path, exc))
    if latest_payload is not None:  # (with latest.pt unreadable, every step file was tried above)
        return latest, latest_payload, notes
    detail = f" ({'; '.join(notes)})" if notes else ""
    raise CheckpointError(f"no readable checkpoint in {directory}{detail}; start a new run instead of resuming")
