"""Decentralised actors ``π^i(a | o^i)`` with the three parameter-sharing modes.

- ``shared``: one network for all agents, the one-hot agent id appended to the observation.
- ``separate``: one network per agent (groups = N), run as one batched computation.
- ``hybrid``: a shared backbone (trunk) and per-agent heads (GRASP's "heads" gradient space).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.distributions import DiagGaussian, MaskedCategorical, gaussian_log_std
from marlopt.models.layers import GroupedLinear, GroupedModule
from marlopt.models.trunk import Trunk


_EYES: dict[tuple[int, torch.device, torch.dtype], Tensor] = {}


def _eye(n: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``torch.eye(n)``, built once per (n, device, dtype): rollouts append the id every step."""
    key = (n, device, dtype)
    eye = _EYES.get(key)
    if eye is None:
        with torch.inference_mode(False), torch.no_grad():  # a normal tensor, usable in autograd
            eye = _EYES[key] = torch.eye(n, device=device, dtype=dtype)
    return eye


def with_agent_id(x: Tensor, n_agents: int, agent: int | None = None) -> Tensor:
    """Append the one-hot agent id to ``x[..., N, d]`` (or agent ``agent``'s to ``x[..., 1, d]``)."""
    eye = _eye(n_agents, x.device, x.dtype)
    if agent is not None:
        eye = eye[agent : agent + 1]
    return torch.cat([x, eye.expand(*x.shape[:-1], eye.shape[-1])], dim=-1)


class Actor(nn.Module):
    """Policy network. Tensors keep the agent axis: ``obs[..., N, obs_dim]``."""

    def __init__(self, spec: EnvSpec, cfg: ModelConfig):
        super().__init__()
        n = spec.n_agents
        self.n_agents, self.continuous = n, spec.continuous
        self.sharing = cfg.sharing
        body_groups = n if cfg.sharing == "separate" else 1
        head_groups = 1 if cfg.sharing == "shared" else n
        self.use_agent_id = cfg.agent_id and cfg.sharing != "separate" and n > 1
        in_features = spec.obs_dim + (n if self.use_agent_id else 0)
        self.trunk = Trunk(body_groups, in_features, cfg)
        self.head = GroupedLinear(head_groups, self.trunk.out_features, spec.n_actions, gain=cfg.head_gain)
        if spec.continuous:
            # the learnable std parameter p (named log_std in both modes, as HARL names it):
            # model.std_param=log: σ = exp(p), p0 = log_std_init; harl: σ = sigmoid(p / x) y, p0 = x
            self.std_param, self.std_coefs = cfg.std_param, (float(cfg.std_x_coef), float(cfg.std_y_coef))
            init = cfg.log_std_init if cfg.std_param == "log" else cfg.std_x_coef
            self.log_std = nn.ParameterList(
                [nn.Parameter(torch.full((spec.n_actions,), float(init))) for _ in range(head_groups)]
            )
        self.hidden_size = self.trunk.hidden_size

    # -- construction helpers -------------------------------------------------------------------
    def initial_hidden(self, batch: int, device: torch.device | str = "cpu") -> Tensor:
        return torch.zeros(batch, self.n_agents, self.hidden_size, device=device)

    def agent_parameters(self, agent: int) -> list[nn.Parameter]:
        """Parameters used by agent ``agent`` only (separate: its whole network; hybrid: its head)."""
        if self.sharing == "shared":
            raise ValueError("agent_parameters needs model.sharing=separate or hybrid (shared has none)")
        params: list[nn.Parameter] = []
        for module in self.modules():
            if isinstance(module, GroupedModule) and module.groups == self.n_agents and not any(
                isinstance(child, GroupedModule) for child in module.children()
            ):
                params += module.group_parameters(agent)
        if self.continuous:
            params.append(self.log_std[agent])
        return params

    def head_parameters(self) -> list[nn.Parameter]:
        """The policy head's parameters (per-agent in hybrid/separate modes)."""
        return [*self.head.parameters(), *(self.log_std if self.continuous else [])]

    # -- forward passes -------------------------------------------------------------------------
    #
    # ``agent`` (evaluate, dist, features, distribution): the inputs hold agent ``agent`` alone,
    # agent axis of size 1 (``obs[L, B, 1, O]``). Per-agent weights then run only that agent's slice
    # (its trunk, head and log-std; a shared network appends its id): a sequential update (HAPPO)
    # evaluates one agent at the cost of one agent, not of all N. ``None``: all N agents.

    def distribution(
        self, feats: Tensor, avail: Tensor | None, agent: int | None = None
    ) -> MaskedCategorical | DiagGaussian:
        out = self.head.forward(feats, agent)
        if self.continuous:
            if len(self.log_std) == 1:
                log_std = self.log_std[0]
            elif agent is not None:
                log_std = self.log_std[agent]
            else:
                log_std = torch.stack(tuple(self.log_std))
            if self.std_param != "log":
                log_std = gaussian_log_std(log_std, self.std_param, *self.std_coefs)
            return DiagGaussian(out, log_std, avail)
        return MaskedCategorical(out, avail)

    def features(
        self, obs: Tensor, h: Tensor | None, starts: Tensor | None, agent: int | None = None,
        hidden_sequence: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``obs[L, B, N, O] -> feats[L, B, N, F]``; the GRU starts from ``h[B, N, H]``.
        ``hidden_sequence`` (a list to fill): receives the GRU state after every step."""
        if agent is not None and obs.shape[-2] != 1:
            raise ValueError(f"agent={agent} needs that agent's inputs alone, obs[..., 1, O]; got {tuple(obs.shape)}")
        if self.use_agent_id:
            obs = with_agent_id(obs, self.n_agents, agent)
        # no hooks here: skip nn.Module's call machinery
        return self.trunk.forward(obs, h, starts, hidden_sequence, agent)

    def act(
        self, obs: Tensor, avail: Tensor | None, h: Tensor | None, deterministic: bool = False,
        env_state: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One rollout step for ``obs[B, N, O]``: returns ``(actions, logp[B, N], h')``.

        ``avail[B, N, A]``: available actions (``None``: all of them). ``env_state`` is ignored (a
        decentralised actor; a centralised rollout actor such as MAGPO's guider reads it). Runs in
        inference mode.
        """
        if not torch.is_inference_mode_enabled():  # rollouts already are: skip the context's cost
            with torch.inference_mode():
                return self.act(obs, avail, h, deterministic)
        feats, h = self.features(obs.unsqueeze(0), h, None)
        dist = self.distribution(feats[0], avail)
        actions = dist.mode() if deterministic else dist.sample()
        return actions, dist.log_prob(actions), h

    def evaluate(
        self,
        obs: Tensor,
        avail: Tensor | None,
        actions: Tensor,
        h0: Tensor | None,
        starts: Tensor | None,
        agent: int | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies ``[L, B, N]`` of stored actions over chunks ``[L, B]``.

        ``agent``: the inputs are agent ``agent``'s alone (``N = 1``); equal to column ``agent`` of
        the evaluation of all agents.
        """
        dist = self.dist(obs, avail, h0, starts, agent)
        return dist.log_prob(actions), dist.entropy()

    def dist(
        self, obs: Tensor, avail: Tensor | None, h0: Tensor | None, starts: Tensor | None, agent: int | None = None
    ) -> MaskedCategorical | DiagGaussian:
        """The action distribution over chunks ``[L, B, N]`` (for KL terms: HATRPO, MAGPO)."""
        feats, _ = self.features(obs, h0, starts, agent)
        return self.distribution(feats, avail, agent)
