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
    agents (``rows == 1``); otherwise it runs per agent (``rows == N``).
    """

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        super().__init__()
        n = spec.n_agents
        self.n_agents = n
        self.use_agent_id = cfg.critic_agent_id and n > 1
        self.rows = n if (spec.state_per_agent or self.use_agent_id) else 1
        in_features = spec.state_dim + (n if self.use_agent_id else 0)
        self.trunk = Trunk(1, in_features, cfg)
        self.head = GroupedLinear(1, self.trunk.out_features, 1, gain=1.0)
        self.hidden_size = self.trunk.hidden_size

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch, self.rows, self.hidden_size, device=device)

    def forward(self, state: Tensor, h: Tensor | None, starts: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Values ``[L, B, R]`` for states ``[L, B, S, D]`` starting from ``h[B, R, H]``."""
        if state.shape[-2] != self.rows:
            state = state.expand(*state.shape[:-2], self.rows, state.shape[-1])
        if self.use_agent_id:
            state = with_agent_id(state, self.n_agents)
        feats, h = self.trunk(state, h, starts)
        return self.head.forward(feats).squeeze(-1), h

    @torch.inference_mode()
    def value(self, state: Tensor, h: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """One rollout step: ``state[B, S, D] -> values[B, R]``."""
        values, h = self(state.unsqueeze(0), h, None)
        return values[0], h
