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
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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
