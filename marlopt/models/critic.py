"""The centralised critic ``V(s)``: shared by all agents, over the env state the wrapper gives."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.actor import with_agent_id
from marlopt.models.layers import GroupedLinear
from marlopt.models.trunk import Trunk


class Critic(nn.Module):
    """``state[..., S, D] -> values[..., R]`` (normalised space when ValueNorm is on).

    ``S`` is 1 for one global state (EP) or N for agent-specific states (FP). With one global state
    and no agent id the critic runs once per (t, env) and the runner broadcasts the value to the N
    agents (``rows == 1``); otherwise it runs per agent (``rows == N``). Its layers are the actor's
    unless ``model.critic_hidden_sizes`` / ``model.critic_recurrent`` say otherwise
    (:meth:`marlopt.config.ModelConfig.critic_config`).
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        super().__init__()
        n = spec.n_agents
        self.n_agents = n
        self.use_agent_id = cfg.critic_agent_id and n > 1
        self.rows = n if (spec.state_per_agent or self.use_agent_id) else 1
        in_features = spec.state_dim + (n if self.use_agent_id else 0)
        self.trunk = Trunk(1, in_features, cfg.critic_config())
        self.head = GroupedLinear(1, self.trunk.out_features, 1, gain=1.0)
        self.hidden_size = self.trunk.hidden_size

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch, self.rows, self.hidden_size, device=device)

    def forward(
        self, state: Tensor, h: Tensor | None, starts: Tensor | None, hidden_sequence: list[Tensor] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """Values ``[L, B, R]`` for states ``[L, B, S, D]`` starting from ``h[B, R, H]``."""
        if state.shape[-2] != self.rows:
            state = state.expand(*state.shape[:-2], self.rows, state.shape[-1])
        if self.use_agent_id:
            state = with_agent_id(state, self.n_agents)
        feats, h = self.trunk(state, h, starts, hidden_sequence)
        return self.head.forward(feats).squeeze(-1), h

    @torch.inference_mode()
    def rollout_values(
        self, states: Tensor, h0: Tensor | None, starts: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Values of a whole rollout in one batched pass, instead of one call per env step.

        ``states[T, E, S, D]``, ``starts[T, E, 1]`` (1 where the hidden state is zeroed before
        step t), ``h0[E, R, H]``. Returns ``values[T, E, R]`` and, for a recurrent critic, its
        state *after* each step ``[T, E, R, H]`` (before any zeroing at the next start): what a
        step-by-step rollout would have computed, up to floating-point summation order.
        """
        sequence: list[Tensor] = []
        values, _ = self.forward(states, h0, starts, hidden_sequence=sequence)
        return values, (sequence[0] if sequence else None)

    @torch.inference_mode()
    def value(self, state: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One rollout step: ``state[B, S, D] -> values[B, R]``."""
        values, h = self(state.unsqueeze(0), h, None)
        return values[0], h
