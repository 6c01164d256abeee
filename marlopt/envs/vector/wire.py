"""What the process vector env and its workers exchange: array layouts, the step block, the tags.

Every output of a slice of ``n`` envs is a named array (``StepArrays``: the array fields of
``VecStep``; ``ResetArrays``: what a reset gives). ``step_layout(spec)`` says the per-env shape and
dtype of each. A worker answers a step with one binary block (``StepBlock``): 16 header bytes
(``BLOCK_TAG``, then the worker's restart count as int64 at offset 8), then each field of
``StepArrays`` for its slice, in field order, 8-byte aligned; both sides keep numpy views on a
reusable buffer, so nothing is pickled on the step path. A step command is ``STEP_TAG`` followed
by the raw bytes of the slice's actions (``action_layout``); every other message is a pickled
tuple (pickles start with ``b"\\x80"``, never with ``STEP_TAG``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from marlopt.envs.base import EnvSpec, VecStep

#: Seconds a worker (and the parent, waiting for a step reply) busy-polls its pipe before it
#: blocks. Waking a blocked process can cost more than a cheap env step on VMs (docs/benchmarks.md).
DEFAULT_SPIN = 0.01

BLOCK_TAG = ord("K")  # first byte of a step reply block (a pickled error starts with 0x80)
STEP_TAG = b"S"  # a step command: b"S" + the raw action bytes

F32, BOOL, I64 = np.dtype(np.float32), np.dtype(np.bool_), np.dtype(np.int64)

Layout = tuple[tuple[int, ...], np.dtype]  # the per-env shape and the dtype of one field


class StepArrays(NamedTuple):
    """The array fields of ``VecStep`` (all but ``restarts``, same names, same order) for a slice of
    envs, or their per-env layouts (``step_layout``)."""

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray
    active: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    dropped: np.ndarray
    final_state: np.ndarray
    final_active: np.ndarray
    final_obs: np.ndarray
    final_avail: np.ndarray
    won: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray

    def to_vec_step(self, restarts: int) -> VecStep:
        """These arrays and ``restarts`` as a ``VecStep`` (same field names, same order: tested)."""
        return VecStep._make((*self, restarts))  # positional: cheaper than by keyword, on the step path



class ResetArrays(NamedTuple):
    """What resetting a slice of envs gives: ``obs[n, N, O]``, ``state[n, S, D]``, ``avail[n, N, A]``."""

    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray


def step_layout(spec: EnvSpec) -> StepArrays:
    """The per-env ``(shape, dtype)`` of every ``StepArrays`` field for envs of ``spec``."""
    n, o, s, d, a = spec.n_agents, spec.obs_dim, spec.state_rows, spec.state_dim, spec.n_actions
    return StepArrays(
        obs=((n, o), F32), state=((s, d), F32), avail=((n, a), BOOL), active=((n,), BOOL),
        reward=((), F32), terminated=((), BOOL), truncated=((), BOOL), dropped=((), BOOL),
        final_state=((s, d), F32), final_active=((n,), BOOL), final_obs=((n, o), F32), final_avail=((n, a), BOOL),
        won=((), BOOL), episode_return=((), F32), episode_length=((), I64),
    )  # type: ignore[arg-type]  # fmt: skip


def reset_layout(layout: StepArrays) -> ResetArrays:
    """The ``ResetArrays`` part of a step layout."""
    return ResetArrays(obs=layout.obs, state=layout.state, avail=layout.avail)


def action_layout(spec: EnvSpec) -> Layout:
    """Per-env shape and dtype of the actions on the wire: int64 ``[N]`` or float64 ``[N, A]``."""
    if spec.continuous:
        return (spec.n_agents, spec.n_actions), np.dtype(np.float64)
    return (spec.n_agents,), I64


def alloc(n: int, layout: StepArrays | ResetArrays) -> StepArrays | ResetArrays:
    """Fresh (uninitialised) arrays of ``layout`` for ``n`` envs, as the same named tuple."""
    return type(layout)._make(np.empty((n, *shape), dtype) for shape, dtype in layout)


def zeros(n: int, layout: StepArrays | ResetArrays) -> StepArrays | ResetArrays:
    """Zeroed arrays of ``layout`` for ``n`` envs, as the same named tuple."""
    return type(layout)._make(np.zeros((n, *shape), dtype) for shape, dtype in layout)


class StepBlock(NamedTuple):
    """A reusable step reply buffer and numpy views on it."""

    buf: bytearray
    restarts: np.ndarray  # int64 [1]: the worker's restart count
    arrays: StepArrays  # the slice's outputs


def step_block(n: int, layout: StepArrays) -> StepBlock:
    """The reply block of a worker that owns ``n`` envs (see the module docstring)."""
    counts = [n * int(np.prod(shape, dtype=np.int64)) for shape, _ in layout]
    sizes = [count * dtype.itemsize for count, (_, dtype) in zip(counts, layout)]
    offsets, offset = [], 16
    for size in sizes:
        offsets.append(offset)
        offset += (size + 7) // 8 * 8
    buf = bytearray(offset)
    buf[0] = BLOCK_TAG
    restarts = np.frombuffer(buf, dtype=np.int64, count=1, offset=8)
    views = StepArrays._make(
        np.frombuffer(buf, dtype=dtype, count=count, offset=off).reshape(n, *shape)
        for (shape, dtype), count, off in zip(layout, counts, offsets)
    )
    return StepBlock(buf, restarts, views)
