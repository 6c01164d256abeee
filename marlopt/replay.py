"""Episode replay for the off-policy branch: whole episodes, padded, sampled uniformly.

A slot holds one episode of at most ``T = spec.episode_limit`` steps, padded to ``T``::

    obs[T+1, N, O]  state[T+1, S, D]  avail[T+1, N, A]   inputs before each step, and at index
                                                         len the final ones (the TD target of the
                                                         last step reads them when it bootstraps)
    actions[T, N]   reward[T]   terminated[T]   filled[T]

``filled[t]``: step ``t`` was taken (``t < len``); padded steps are never counted.
``terminated[t]``: the episode truly ended at ``t`` (no bootstrap); an episode cut by its time
limit has ``terminated`` all false and its final inputs stored at ``len``, so its last target
bootstraps from them (time limits bootstrap, terminations do not). Episodes a crashed env lost
are never stored (the runner drops them).

Storage is CPU tensors (actions as ``int16``), ``capacity`` slots overwritten oldest first;
:meth:`EpisodeBuffer.sample` draws ``B`` distinct stored episodes uniformly (as PyMARL) and cuts
the batch to the longest sampled episode. Memory: :func:`episode_bytes` × capacity (per map in
docs/algorithms/qmix.md).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from marlopt.envs.base import EnvSpec


class EpisodeBatch(NamedTuple):
    """``B`` episodes, batch-major, cut to ``T`` = the longest one's length."""

    obs: Tensor  # [B, T+1, N, O] float32
    state: Tensor  # [B, T+1, S, D] float32
    avail: Tensor  # [B, T+1, N, A] bool
    actions: Tensor  # [B, T, N] int64
    reward: Tensor  # [B, T] float32
    terminated: Tensor  # [B, T] bool
    filled: Tensor  # [B, T] bool

    def to(self, device: torch.device) -> "EpisodeBatch":
        return EpisodeBatch(*(x.to(device, non_blocking=True) for x in self))


def _fields(spec: EnvSpec) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Per-episode ``(shape, dtype)`` of every stored field."""
    t, n, a = spec.episode_limit, spec.n_agents, spec.n_actions
    return {
        "obs": ((t + 1, n, spec.obs_dim), torch.float32),
        "state": ((t + 1, spec.state_rows, spec.state_dim), torch.float32),
        "avail": ((t + 1, n, a), torch.bool),
        "actions": ((t, n), torch.int16 if a < 2**15 else torch.int32),
        "reward": ((t,), torch.float32),
        "terminated": ((t,), torch.bool),
        "filled": ((t,), torch.bool),
    }


def episode_bytes(spec: EnvSpec) -> int:
    """Bytes one stored episode takes (padded to ``spec.episode_limit``)."""
    total = 0
    for shape, dtype in _fields(spec).values():
        total += int(np.prod(shape)) * torch.empty((), dtype=dtype).element_size()
    return total


class EpisodeBuffer:
    """A ring of ``capacity`` padded episodes (see the module docstring)."""

    def __init__(self, spec: EnvSpec, capacity: int):
        if spec.continuous:
            raise ValueError("episode replay stores discrete actions; this env's actions are continuous")
        self.spec, self.capacity = spec, int(capacity)
        self.data = {k: torch.zeros((self.capacity, *shape), dtype=dtype) for k, (shape, dtype) in _fields(spec).items()}
        self.lengths = torch.zeros(self.capacity, dtype=torch.long)
        self.size = 0  # stored episodes (<= capacity)
        self.next = 0  # the slot the next episode goes to
        self.inserted = 0  # episodes ever stored

    def nbytes(self) -> int:
        return self.capacity * episode_bytes(self.spec)

    def insert(self, episode: dict[str, np.ndarray], length: int) -> None:
        """Store one episode of ``length`` steps: ``episode[k]`` holds at least the steps of field
        ``k`` (``length + 1`` rows of obs/state/avail, ``length`` of actions/reward/terminated);
        ``filled`` is set from ``length``; the slot's padding is zeroed."""
        if not 1 <= length <= self.spec.episode_limit:
            raise ValueError(f"episode length {length} outside 1..episode_limit={self.spec.episode_limit}")
        slot = self.next
        for key, store in self.data.items():
            if key == "filled":
                store[slot] = torch.arange(self.spec.episode_limit) < length
                continue
            rows = length + 1 if store.shape[1] == self.spec.episode_limit + 1 else length
            store[slot, :rows] = torch.from_numpy(np.ascontiguousarray(episode[key][:rows])).to(store.dtype)
            store[slot, rows:] = 0
        self.lengths[slot] = length
        self.next = (slot + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)
        self.inserted += 1

    def can_sample(self, batch_size: int) -> bool:
        return self.size >= batch_size

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> EpisodeBatch:
        """``batch_size`` distinct stored episodes, uniformly, cut to the longest of them."""
        if not self.can_sample(batch_size):
            raise ValueError(f"the buffer holds {self.size} episodes, fewer than batch_size={batch_size}")
        index = torch.randperm(self.size, generator=generator)[:batch_size]
        t = int(self.lengths[index].max())
        d = self.data
        return EpisodeBatch(
            obs=d["obs"][index, : t + 1], state=d["state"][index, : t + 1], avail=d["avail"][index, : t + 1],
            actions=d["actions"][index, :t].long(), reward=d["reward"][index, :t],
            terminated=d["terminated"][index, :t], filled=d["filled"][index, :t],
        )

    # -- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The stored episodes only (``size`` slots), and the ring's position."""
        n = self.size
        return {"data": {k: v[:n].clone() for k, v in self.data.items()}, "lengths": self.lengths[:n].clone(),
                "size": n, "next": self.next, "inserted": self.inserted}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        n = int(state["size"])
        if n > self.capacity:
            raise ValueError(f"the saved buffer holds {n} episodes, more than this buffer's capacity {self.capacity}")
        for key, store in self.data.items():
            store.zero_()
            store[:n] = state["data"][key]
        self.lengths.zero_()
        self.lengths[:n] = state["lengths"]
        self.size, self.next, self.inserted = n, int(state["next"]), int(state["inserted"])
