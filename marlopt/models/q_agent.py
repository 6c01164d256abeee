"""Per-agent utilities ``Q_i(τ_i, ·)`` of value decomposition (QMIX, VDN, GPVD, GRASP-QMIX).

PyMARL's recurrent agent, with PyTorch's default initialisation as PyMARL's: the input of agent
``i`` at step ``t`` is its observation, the one-hot of its previous action (zeros at ``t = 0``;
``algo.obs_last_action``) and its one-hot id (shared weights), then ``MLP → GRU → Linear`` to one
utility per action (docs/algorithms/qmix.md). The MLP is marlopt's
:class:`~marlopt.models.trunk.Trunk` without its GRU (so ``model.feature_norm`` and
``model.layer_norm`` apply; the QMIX configs turn both off, as PyMARL's agent has neither); the
GRU carries no LayerNorm and the utility head is linear.

Sharing follows ``model.sharing``: ``shared`` (one network, id appended), ``separate`` (one per
agent, batched) or ``hybrid`` (shared MLP and GRU, per-agent heads). Tensors keep the agent axis:
``x[L, B, N, ·]``.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.actor import with_agent_id
from marlopt.models.layers import GroupedGRUCell, GroupedLinear
from marlopt.models.trunk import Trunk


class QAgent(nn.Module):
    """``(obs, previous action) histories -> utilities [L, B, N, A]`` for ``N`` agents."""

    def __init__(self, spec: EnvSpec, cfg: ModelConfig, last_action: bool = True):
        super().__init__()
        if spec.continuous:
            raise ValueError("value decomposition needs discrete actions (the env has continuous ones)")
        n, a = spec.n_agents, spec.n_actions
        self.n_agents, self.n_actions = n, a
        body_groups = n if cfg.sharing == "separate" else 1
        head_groups = 1 if cfg.sharing == "shared" else n
        self.use_agent_id = cfg.agent_id and cfg.sharing != "separate" and n > 1
        self.last_action = last_action
        in_features = spec.obs_dim + (a if last_action else 0) + (n if self.use_agent_id else 0)
        self.mlp = Trunk(body_groups, in_features, dataclasses.replace(cfg, recurrent=False))
        width = self.mlp.out_features
        self.hidden_size = cfg.rnn_hidden if cfg.recurrent else 0
        self.gru = GroupedGRUCell(body_groups, width, cfg.rnn_hidden) if cfg.recurrent else None
        self.head = GroupedLinear(head_groups, self.hidden_size or width, a, gain=1.0)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """PyTorch's default initialisation, as PyMARL's agent (``nn.Linear``, ``nn.GRUCell``):
        weights and biases ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``fan_in`` = the GRU's hidden size
        for its gates), per agent group. marlopt's on-policy layers start orthogonal; for QMIX that
        start learned measurably slower than EPyMARL's at its own settings (docs/benchmarks.md §4)."""
        gru_maps = {id(m) for m in ([self.gru.input_map, self.gru.hidden_map] if self.gru is not None else [])}
        for module in self.modules():
            if isinstance(module, GroupedLinear):
                bound = 1.0 / math.sqrt(self.gru.hidden if id(module) in gru_maps else module.in_features)
                for param in module.parameters():
                    param.uniform_(-bound, bound)

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch, self.n_agents, self.hidden_size, device=device)

    def inputs(self, obs: Tensor, last_actions: Tensor | None) -> Tensor:
        """``obs[..., N, O]`` and ``last_actions[..., N]`` (int; ``-1`` = none; unused, may be
        ``None``, without ``last_action``) -> the network input."""
        if not self.last_action or last_actions is None:
            assert not self.last_action, "this agent reads its previous actions"
            return with_agent_id(obs, self.n_agents) if self.use_agent_id else obs
        onehot = F.one_hot(last_actions.clamp_min(0), self.n_actions).to(obs.dtype)
        onehot = onehot * (last_actions >= 0).unsqueeze(-1).to(obs.dtype)
        x = torch.cat([obs, onehot], dim=-1)
        return with_agent_id(x, self.n_agents) if self.use_agent_id else x

    def forward(self, obs: Tensor, last_actions: Tensor | None, h: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """Utilities over sequences: ``obs[L, B, N, O]``, ``last_actions[L, B, N]``, the GRU state
        before step 0 ``h[B, N, H]`` -> ``(q[L, B, N, A], h after the last step)``. Sequences are
        whole episodes from their first step (the learner) or single steps (acting): no resets
        inside a sequence."""
        x, _ = self.mlp.forward(self.inputs(obs, last_actions), None, None)
        if self.gru is not None:
            assert h is not None, "a recurrent agent needs its hidden state"
            x, h = self.gru(x, h)
        return self.head.forward(x), h

    def parameters_of(self, part: str) -> list[nn.Parameter]:
        """``body`` (MLP and GRU) or ``head`` parameters."""
        if part == "head":
            return list(self.head.parameters())
        return [*self.mlp.parameters(), *(self.gru.parameters() if self.gru is not None else [])]
