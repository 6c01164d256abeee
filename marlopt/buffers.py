"""On-policy rollout storage: preallocated ``[T, E, N, ...]`` tensors on the training device.

Time ``T`` (rollout length) first, then env ``E``, then agent ``N`` (or ``R`` critic rows, or 1
for per-env quantities). Nothing stored here carries an autograd graph (pymarl PR#73's leak):
every write is a copy of a no-grad tensor.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import Tensor

from marlopt.envs.base import EnvSpec


@dataclass
class RolloutBatch:
    """One iteration of experience. Shapes: ``[T, E, N, ...]`` unless noted."""

    obs: Tensor  # [T, E, N, obs_dim]
    state: Tensor  # [T, E, S, state_dim]
    avail: Tensor  # [T, E, N, A] bool
    actions: Tensor  # [T, E, N] long, or [T, E, N, A] float (continuous)
    logp: Tensor  # [T, E, N] behaviour log-probabilities
    rewards: Tensor  # [T, E, 1] team reward
    terminated: Tensor  # [T, E, 1] bool
    truncated: Tensor  # [T, E, 1] bool (time limit, or a dropped episode's cut)
    active: Tensor  # [T, E, N] bool: the sample counts (agent alive, episode not dropped)
    starts: Tensor  # [T, E, 1] float: 1 where an episode starts at step t (hidden state zeroed)
    h_actor: Tensor  # [T, E, N, H] rollout actor's hidden state before step t (MAGPO's guider: [T, E, 1, H])
    # Filled by the update rule's value estimation (the runner stores none of them):
    values: Tensor | None = None  # [T, E, R] critic output (normalised space)
    bootstrap_values: Tensor | None = None  # [T, E, R] V(state after step t) (normalised space); see gae
    h_critic: Tensor | None = None  # [T, E, R, H] critic hidden state before step t (recurrent critic)
    # Per-step tensors [T, E, ...] a rule adds in its value estimation for its own update
    # (MAGPO: the rollout learner's log-probs of the taken actions and its hidden states)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "RolloutBatch":
        tensors = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extras"}
        return RolloutBatch(**{k: None if v is None else v.to(device) for k, v in tensors.items()},
                            extras={k: v.to(device) for k, v in self.extras.items()})


@dataclass
class RolloutTail:
    """What value estimation needs beyond the stored steps (``OnPolicyRule.estimate_values``)."""

    next_state: Tensor  # [E, S, state_dim] the state after the last step
    next_starts: Tensor  # [E, 1] 1 where an episode starts after the last step
    # time limits hit during the rollout: (step t, the envs truncated at t, their final states [k, S, D])
    truncations: list[tuple[int, np.ndarray, np.ndarray]]


class RolloutBuffer:
    """Holds one :class:`RolloutBatch` and fills it step by step."""

    def __init__(self, spec: EnvSpec, n_envs: int, length: int, actor_hidden: int, device: torch.device | str,
                 hidden_rows: int | None = None):
        """``hidden_rows``: rows of the rollout actor's memory per env (N for decentralised actors,
        1 for MAGPO's guider, whose memory is one per env)."""
        t, e, n = length, n_envs, spec.n_agents
        z = dict(device=device)
        act_shape = (t, e, n, spec.n_actions) if spec.continuous else (t, e, n)
        self.batch = RolloutBatch(
            obs=torch.zeros(t, e, n, spec.obs_dim, **z),
            state=torch.zeros(t, e, spec.state_rows, spec.state_dim, **z),
            avail=torch.zeros(t, e, n, spec.n_actions, dtype=torch.bool, **z),
            actions=torch.zeros(act_shape, dtype=torch.float32 if spec.continuous else torch.long, **z),
            logp=torch.zeros(t, e, n, **z),
            rewards=torch.zeros(t, e, 1, **z),
            terminated=torch.zeros(t, e, 1, dtype=torch.bool, **z),
            truncated=torch.zeros(t, e, 1, dtype=torch.bool, **z),
            active=torch.zeros(t, e, n, dtype=torch.bool, **z),
            starts=torch.zeros(t, e, 1, **z),
            h_actor=torch.zeros(t, e, n if hidden_rows is None else hidden_rows, actor_hidden, **z),
        )
        self.length = length
        # On the CPU, per-step writes go through numpy views of the same memory: a numpy slice
        # assignment is faster on CPU than a tensor select + copy_ (docs/benchmarks.md), and a
        # rollout makes ~10 per step.
        self._arrays = (
            {f.name: getattr(self.batch, f.name).numpy() for f in fields(self.batch)
             if isinstance(getattr(self.batch, f.name), torch.Tensor)}
            if torch.device(device).type == "cpu" else None
        )

    def insert(self, t: int, **values: Tensor | np.ndarray) -> None:
        """Write step ``t`` of each named field (a tensor or array of the field's step shape)."""
        arrays = self._arrays
        for name, value in values.items():
            if arrays is not None:
                arrays[name][t] = value.detach().numpy() if isinstance(value, Tensor) else value
            else:
                getattr(self.batch, name)[t].copy_(torch.as_tensor(value))

    def drop_episode(self, env: int, start: int, t: int) -> None:
        """Exclude env ``env``'s steps ``start..t`` (an episode lost to a crash) from training.

        The samples are masked out and the recursion of GAE is cut at ``t`` (marked truncated), so
        no terminal transition is fabricated and no value leaks across the restart.
        """
        self.batch.active[start : t + 1, env] = False
        self.batch.truncated[t, env] = True
