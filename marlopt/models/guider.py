"""MAGPO's guider: a centralised policy, autoregressive over the agents (docs/algorithms/magpo.md).

``μ_φ(a | x) = Π_j μ^{j}(a^{j} | x, a^{1:j-1})`` with the agents in the fixed order ``0..N-1``:

- ``x`` is the joint observation (the paper's choice: every agent's observation, concatenated) or
  the env state (``algo.guider_input=state``);
- an **encoder** (``Trunk``: input LayerNorm → MLP → GRU when ``model.recurrent``) maps ``x`` to one
  feature vector per env and step; its GRU carries the guider's memory across steps, one hidden
  row per env (``hidden_rows = 1``), zeroed at episode starts like the actors';
- a **decoder** (MLP → policy head, shared by all agents) gives agent ``j``'s distribution from
  ``[encoder features, one-hot of j, the actions of agents 0..j-1]`` (discrete actions one-hot,
  continuous ones as they are; the later agents' slots are zero).

In a rollout the decoder runs once per agent in order (each call batched over envs); in training
the stored actions are known, so all agents' distributions come from one pass ("teacher forcing"),
each agent seeing only its predecessors' actions through a strictly lower-triangular mask.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from marlopt.config import GUIDER_INPUTS, ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.distributions import DiagGaussian, MaskedCategorical
from marlopt.models.layers import GroupedLinear
from marlopt.models.trunk import Trunk

class Guider(nn.Module):
    """Centralised autoregressive policy. Tensors keep the agent axis: ``obs[..., N, obs_dim]``."""

    def __init__(self, spec: EnvSpec, cfg: ModelConfig, guider_input: str = "joint_obs"):
        super().__init__()
        if guider_input not in GUIDER_INPUTS:
            raise ValueError(f"guider_input must be one of {', '.join(GUIDER_INPUTS)} (got {guider_input!r})")
        n, a = spec.n_agents, spec.n_actions
        self.n_agents, self.n_actions, self.continuous = n, a, spec.continuous
        self.guider_input = guider_input
        in_features = n * spec.obs_dim if guider_input == "joint_obs" else spec.state_rows * spec.state_dim
        self.encoder = Trunk(1, in_features, cfg)
        # the decoder is feed-forward within a step: the encoder already carries the memory
        decoder_cfg = dataclasses.replace(cfg, recurrent=False, feature_norm=False)
        self.decoder = Trunk(1, self.encoder.out_features + n + n * a, decoder_cfg)
        self.head = GroupedLinear(1, self.decoder.out_features, a, gain=cfg.head_gain)
        if spec.continuous:
            self.log_std = nn.Parameter(torch.full((a,), cfg.log_std_init))
        self.hidden_size = self.encoder.hidden_size
        self.hidden_rows = 1  # one memory per env, not per agent
        # prev_mask[j, k·A:(k+1)·A] = 1 for k < j: agent j sees the actions of agents before it
        prev_mask = torch.tril(torch.ones(n, n), diagonal=-1).repeat_interleave(a, dim=1)
        self.register_buffer("prev_mask", prev_mask, persistent=False)
        self.register_buffer("agent_ids", torch.eye(n), persistent=False)

    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch, 1, self.hidden_size, device=device)

    # -- pieces ---------------------------------------------------------------------------------
    def inputs(self, obs: Tensor, env_state: Tensor | None) -> Tensor:
        """``x[..., 1, D]``: the joint observation, or the state's rows concatenated."""
        if self.guider_input == "joint_obs":
            return obs.reshape(*obs.shape[:-2], 1, obs.shape[-2] * obs.shape[-1])
        if env_state is None:
            raise ValueError("algo.guider_input=state: the guider needs the env state (env_state=...)")
        return env_state.reshape(*env_state.shape[:-2], 1, env_state.shape[-2] * env_state.shape[-1])

    def encode_actions(self, actions: Tensor) -> Tensor:
        """``actions[..., N]`` (int) or ``[..., N, A]`` (float) → ``[..., N·A]``."""
        if self.continuous:
            return actions.reshape(*actions.shape[:-2], -1)
        onehot = F.one_hot(actions.long(), self.n_actions).to(self.prev_mask.dtype)
        return onehot.reshape(*onehot.shape[:-2], -1)

    def distribution(self, logits: Tensor, avail: Tensor | None) -> MaskedCategorical | DiagGaussian:
        if self.continuous:
            return DiagGaussian(logits, self.log_std, avail)
        return MaskedCategorical(logits, avail)

    def _decode(self, feats: Tensor, ids: Tensor, prev: Tensor) -> Tensor:
        """Logits from ``decoder([feats, ids, prev])``, with the first layer split by its input
        blocks: ``W [f; id; prev] + b = W_f f + (W_rest [id; prev] + b)``. The encoder features are the
        same for every agent of an env, so ``W_f f`` runs once per env (``feats[..., 1, F]``
        broadcasts over the agent rows) instead of once per agent: the same function and parameters
        as the plain decoder (tested), a third fewer multiply-adds in the guider's widest layer."""
        first = self.decoder.linears[0]
        width = feats.shape[-1]
        x = F.linear(feats, first.weight[:, :width]) + F.linear(
            torch.cat([ids, prev], dim=-1), first.weight[:, width:], first.bias)  # type: ignore[index]
        return self.head.forward(self.decoder.hidden_layers(x, preactivated=True))

    # -- rollouts: one agent after another -------------------------------------------------------
    def act(
        self, obs: Tensor, avail: Tensor | None, h: Tensor | None, deterministic: bool = False,
        env_state: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One rollout step for ``obs[B, N, O]``: ``(actions, logp[B, N], h')``; agent ``j`` acts
        on the actions of agents ``0..j-1`` drawn just before it. Runs in inference mode."""
        if not torch.is_inference_mode_enabled():
            with torch.inference_mode():
                return self.act(obs, avail, h, deterministic, env_state)
        feats, h = self.encoder.forward(self.inputs(obs, env_state).unsqueeze(0), h, None)
        feats = feats[0, :, 0]  # [B, F]
        b, n, a = feats.shape[0], self.n_agents, self.n_actions
        prev = feats.new_zeros(b, n * a)
        actions, logps = [], []
        for j in range(n):
            logits = self._decode(feats, self.agent_ids[j].expand(b, n), prev)
            dist = self.distribution(logits, None if avail is None else avail[:, j])
            action = dist.mode() if deterministic else dist.sample()
            actions.append(action)
            logps.append(dist.log_prob(action))
            if j + 1 < n:
                prev[:, j * a : (j + 1) * a] = action if self.continuous else F.one_hot(action, a).to(prev.dtype)
        return torch.stack(actions, dim=1), torch.stack(logps, dim=1), h

    # -- training: every agent at once, on the stored actions -----------------------------------
    def dist(
        self, obs: Tensor, avail: Tensor | None, actions: Tensor, h0: Tensor | None, starts: Tensor | None,
        env_state: Tensor | None = None,
    ) -> MaskedCategorical | DiagGaussian:
        """``μ^j(· | x_t, a_t^{0:j-1})`` for chunks ``obs[L, B, N, O]`` and their stored ``actions``:
        a distribution over ``[L, B, N]``; the encoder starts from ``h0[B, 1, H]``."""
        feats, _ = self.encoder.forward(self.inputs(obs, env_state), h0, starts)  # [L, B, 1, F]
        n = self.n_agents
        prev = self.encode_actions(actions).unsqueeze(-2) * self.prev_mask  # [L, B, N, N·A]
        ids = self.agent_ids.expand(*prev.shape[:-2], n, n)
        return self.distribution(self._decode(feats, ids, prev), avail)  # feats broadcast over the agents

    def evaluate(
        self, obs: Tensor, avail: Tensor | None, actions: Tensor, h0: Tensor | None, starts: Tensor | None,
        env_state: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies ``[L, B, N]`` of the stored actions."""
        dist = self.dist(obs, avail, actions, h0, starts, env_state)
        return dist.log_prob(actions), dist.entropy()
