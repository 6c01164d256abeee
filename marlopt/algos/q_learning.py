"""Value decomposition on episode replay: QMIX, VDN, GPVD and GRASP-QMIX (one rule, ``q_learning``).

One gradient step on ``B`` sampled episodes (docs/algorithms/qmix.md)::

    Q_i(τ_t, ·) = agent(o_t, a_{t-1}, id)             all steps at once, GRU from the episode start
    Q_tot(t)    = mixer(Q_i(τ_t, a_t), s_t)           VDN: sum; QMIX: monotonic hypernetwork
    Q'_{t+1}    = target_mixer(Q^-_i(τ_{t+1}, a'_i), s_{t+1})
                  a'_i = argmax of the online utilities (double Q) or of the target's (plain max),
                  both over the available actions only
    y_t         = TD(λ) of r_t (+ r_int) and Q'_{t+1}   (λ = 0: r_t + γ (1 - term_t) Q'_{t+1}); a
                  time limit bootstraps from the final inputs, a termination does not
    L           = Σ_t filled_t · w_t · (Q_tot(t) - y_t)² / Σ_t filled_t

``w = 1`` for QMIX/VDN. GPVD (``weighting: gpvd``; docs/algorithms/gpvd.md): ``w`` from
:func:`marlopt.objectives.gpvd_weights` over the batch's filled steps, grouped by the SimHash code
of ``s_t`` (or by equal states, the "w/o SimHash" ablation), with ``greedy_values = max_a Q_tot(τ_t, a)``
(for a monotonic mixer, the mixer of each agent's max utility); and the count bonus
``r_int = β / sqrt(N(φ(s_t))) + κ`` added to ``r_t`` in the target, ``N`` counting every stored
step's state code (a table kept with the checkpoint). GRASP-QMIX (``consensus: grasp``;
docs/algorithms/grasp_qmix.md): the agent network's gradient is ``Σ_i Γ_i (g_i + u*)`` with
``g_i`` agent ``i``'s share of the TD-loss gradient (through its utility only), ``u*`` their
min-norm consensus and ``Γ_i`` GRASP's factor (eq. 37-38); the mixer gets the plain TD gradient.
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from marlopt.config import ModelConfig, QLearningConfig
from marlopt.envs.base import EnvSpec
from marlopt.guard import admit
from marlopt.models.mixers import make_mixer
from marlopt.models.q_agent import QAgent
from marlopt.objectives.gpvd import gpvd_weights, simhash
from marlopt.objectives.grasp import consensus_direction, grasp_qmix_directions, min_norm_coefficients_cvxpy
from marlopt.optim import adam, clip_grad_norm
from marlopt.replay import EpisodeBatch
from marlopt.returns import td_lambda_targets


def mask_unavailable(q: Tensor, avail: Tensor) -> Tensor:
    """``q`` with unavailable actions at ``-inf``; a row with no available action (padding) keeps
    every action, so no max or argmax sees an all ``-inf`` row."""
    avail = avail | ~avail.any(-1, keepdim=True)
    return q.masked_fill(~avail, float("-inf"))


def epsilon_greedy(q: Tensor, avail: Tensor | None, epsilon: float) -> Tensor:
    """``actions[..., N]``: the greedy available action, or with probability ``epsilon`` one drawn
    uniformly among the available actions (never an unavailable one; ``avail=None``: all are)."""
    if avail is not None:
        q = mask_unavailable(q, avail)
    greedy = q.argmax(-1)
    if epsilon <= 0:
        return greedy
    explore = torch.rand(greedy.shape, device=q.device) < epsilon
    if not bool(explore.any()):  # acting runs on the CPU: no device sync
        return greedy
    if avail is None:
        random = torch.randint(q.shape[-1], greedy.shape, device=q.device)
    else:  # the argmax of i.i.d. uniforms over the available actions: uniform among them
        keys = torch.rand(q.shape, device=q.device).masked_fill_(~(avail | ~avail.any(-1, keepdim=True)), -1.0)
        random = keys.argmax(-1)
    return torch.where(explore, random, greedy)


class QPolicy:
    """The deployed policy of a value-decomposition run (the ``marlopt.policy.Policy`` protocol):
    each agent acts on its own utilities. ``state[E, N, H + 1]`` holds the GRU state and, in its
    last channel, the agent's previous action (``-1`` at an episode start); ``None`` for an agent
    with neither (an MLP that does not read its previous action). ``greedy=False``: ε-greedy with
    ``epsilon``."""

    def __init__(self, agent: QAgent, epsilon: float):
        self.agent, self.epsilon = agent, epsilon
        self.memory = agent.hidden_size > 0 or agent.last_action

    @property
    def device(self) -> torch.device:
        return next(self.agent.parameters()).device

    def initial_state(self, n_envs: int) -> Tensor | None:
        if not self.memory:
            return None
        state = torch.zeros(n_envs, self.agent.n_agents, self.agent.hidden_size + 1, device=self.device)
        state[..., -1] = -1.0
        return state

    def step(self, obs: Tensor, avail: Tensor | None, state: Tensor | None,
             epsilon: float) -> tuple[Tensor, Tensor | None]:
        """One step on tensors: ``(actions[E, N], next state)``."""
        if state is None:  # no memory: the input is the observation (and the id) alone
            q, _ = self.agent.forward(obs.unsqueeze(0), None, None)
            return epsilon_greedy(q[0], avail, epsilon), None
        h, last = state[..., :-1], state[..., -1].long()
        q, h = self.agent.forward(obs.unsqueeze(0), last.unsqueeze(0), h if self.agent.hidden_size else None)
        actions = epsilon_greedy(q[0], avail, epsilon)
        parts = ([h] if h is not None else []) + [actions.unsqueeze(-1).to(state.dtype)]
        return actions, torch.cat(parts, dim=-1)

    @torch.inference_mode()
    def act(self, obs: np.ndarray, avail: np.ndarray | None, state: Tensor | None,
            greedy: bool = True) -> tuple[np.ndarray, Tensor | None]:
        device = self.device
        avail_t = None if avail is None else torch.as_tensor(avail, device=device)
        actions, state = self.step(torch.as_tensor(obs, device=device), avail_t, state, 0.0 if greedy else self.epsilon)
        return actions.cpu().numpy(), state


class CountTable:
    """Visit counts ``N(code)`` of hashed states (GPVD's count bonus), kept in the checkpoint."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def add(self, codes: np.ndarray) -> None:
        keys, n = np.unique(codes, return_counts=True)
        for k, c in zip(keys.tolist(), n.tolist()):
            self.counts[k] = self.counts.get(k, 0) + c

    def lookup(self, codes: Tensor) -> Tensor:
        """``N`` of every code (at least 1: a code never stored counts once)."""
        flat = codes.reshape(-1).cpu().numpy()
        keys, inverse = np.unique(flat, return_inverse=True)
        values = np.array([self.counts.get(k, 0) for k in keys.tolist()], dtype=np.float32)
        return torch.from_numpy(np.maximum(values[inverse], 1.0)).view(codes.shape).to(codes.device)

    def state_dict(self) -> dict[str, Tensor]:
        keys = np.fromiter(self.counts.keys(), dtype=np.int64, count=len(self.counts))
        values = np.fromiter(self.counts.values(), dtype=np.int64, count=len(self.counts))
        return {"codes": torch.from_numpy(keys), "counts": torch.from_numpy(values)}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.counts = dict(zip(state["codes"].tolist(), state["counts"].tolist()))


class RunningMeanStd:
    """Running mean and variance of ``[..., D]`` samples (Chan et al.'s parallel update, float64),
    kept in the checkpoint: PyMARL's reward standardisation and the mixer's state normalisation."""

    def __init__(self, dim: int, device: torch.device):
        self.count = 0.0
        self.mean = torch.zeros(dim, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(dim, dtype=torch.float64, device=device)

    def update(self, x: Tensor) -> None:
        """Add the rows of ``x[M, D]``."""
        if x.shape[0] == 0:
            return
        x = x.double()
        n, total = float(x.shape[0]), self.count + float(x.shape[0])
        batch_mean = x.mean(0)
        delta = batch_mean - self.mean
        self.m2 = self.m2 + ((x - batch_mean) ** 2).sum(0) + delta**2 * self.count * n / total
        self.mean = self.mean + delta * n / total
        self.count = total

    def normalise(self, x: Tensor, min_std: float = 1e-8, clip: float | None = None) -> Tensor:
        """``(x - mean) / max(std, min_std)``, clipped to ``±clip`` when given."""
        std = (self.m2 / max(self.count, 1.0)).sqrt().clamp_min(min_std)
        out = (x - self.mean) / std
        return (out if clip is None else out.clamp(-clip, clip)).to(x.dtype)

    def state_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.count = float(state["count"])
        self.mean, self.m2 = state["mean"].to(self.mean.device), state["m2"].to(self.m2.device)


class QLearningRule:
    """Agent network, mixer, their target copies and one optimiser (see the module docstring)."""

    def __init__(self, spec: EnvSpec, algo: QLearningConfig, model: ModelConfig, device: torch.device):
        self.spec, self.cfg, self.device = spec, algo, device
        self.agent = QAgent(spec, model, algo.obs_last_action).to(device)
        state_dim = spec.state_rows * spec.state_dim
        self.mixer = make_mixer(algo.mixer, spec.n_agents, state_dim, algo.mixing_embed_dim, algo.hypernet_embed).to(device)
        self.target_agent = copy.deepcopy(self.agent).requires_grad_(False)
        self.target_mixer = copy.deepcopy(self.mixer).requires_grad_(False)
        self.agent_params = list(self.agent.parameters())
        self.params = self.agent_params + list(self.mixer.parameters())  # the mixer in the optimiser too
        if algo.optimizer == "adam":
            self.optim = adam(self.params, lr=algo.lr, eps=algo.optim_eps)
        else:
            self.optim = torch.optim.RMSprop(self.params, lr=algo.lr, alpha=algo.optim_alpha, eps=algo.optim_eps)
        # GPVD: a fixed Gaussian projection (SimHash), drawn from the seeded global RNG
        hashing = algo.weighting == "gpvd" or algo.count_bonus > 0
        self.projection = torch.randn(algo.hash_bits, state_dim).to(device) if hashing else None
        self.counts = CountTable()
        self.reward_stats = RunningMeanStd(1, device)  # standardise_rewards
        self.state_stats = RunningMeanStd(state_dim, device)  # mixer_state_norm
        self.updates = 0
        self.last_target_episode = 0

    # -- what the runner uses ------------------------------------------------------------------
    def eval_policy(self) -> QPolicy:
        return QPolicy(self.agent, self.cfg.epsilon_finish)

    def extra_eval_policies(self) -> dict[str, Any]:
        return {}

    def modules(self) -> dict[str, nn.Module]:
        """The networks, online and target (what :func:`marlopt.guard.check_parameters` checks after
        each update)."""
        return {"agent": self.agent, "mixer": self.mixer, "target_agent": self.target_agent,
                "target_mixer": self.target_mixer}

    def epsilon(self, frames: int) -> float:
        """ε after ``frames`` env frames: linear from ``epsilon_start`` to ``epsilon_finish``."""
        c = self.cfg
        if c.epsilon_anneal_steps <= 0:
            return c.epsilon_finish
        frac = min(1.0, frames / c.epsilon_anneal_steps)
        return c.epsilon_start + frac * (c.epsilon_finish - c.epsilon_start)

    def state_codes(self, state: Tensor) -> Tensor:
        """The group code of each state ``[..., S, D]``: its SimHash, or (``grouping: exact``) a
        64-bit polynomial hash of its bytes, equal for equal states and stable across processes."""
        flat = state.reshape(*state.shape[:-2], -1)
        if self.cfg.grouping == "simhash":
            return simhash(flat, self.projection)
        words = np.ascontiguousarray(flat.detach().cpu().numpy(), dtype=np.float32).view(np.uint32).astype(np.uint64)
        powers = np.cumprod(np.full(words.shape[-1], 1_000_003, dtype=np.uint64), dtype=np.uint64)
        with np.errstate(over="ignore"):
            codes = (words * powers).sum(-1, dtype=np.uint64)  # wraps modulo 2^64
        return torch.from_numpy(codes.view(np.int64)).to(state.device)

    def observe(self, episode: dict[str, np.ndarray], length: int) -> None:
        """An episode was stored: count its states (GPVD's count bonus)."""
        if self.cfg.count_bonus > 0:
            states = torch.from_numpy(np.ascontiguousarray(episode["state"][:length])).to(self.device)
            self.counts.add(self.state_codes(states).cpu().numpy())

    # -- the update ------------------------------------------------------------------------------
    def _standardise(self, reward: Tensor, filled: Tensor) -> Tensor:
        """Rewards centred and scaled by running statistics of the sampled rewards (PyMARL's
        ``standardise_rewards``); the statistics are updated with this batch first."""
        self.reward_stats.update(reward[filled].unsqueeze(-1))
        return self.reward_stats.normalise(reward.unsqueeze(-1)).squeeze(-1)

    def mixer_states(self, state: Tensor, filled: Tensor) -> Tensor:
        """The states ``[T+1, B, S, D]`` as the mixers read them, ``[T+1, B, S·D]``: flattened and,
        with ``mixer_state_norm``, standardised by running statistics updated with this batch's
        taken steps first (a feature's std is floored at 0.01 and the result clipped to ±10, so a
        feature constant so far cannot explode when it first changes)."""
        flat = state.flatten(-2)
        if not self.cfg.mixer_state_norm:
            return flat
        self.state_stats.update(flat[:-1][filled])
        return self.state_stats.normalise(flat, min_std=0.01, clip=10.0)

    def update(self, batch: EpisodeBatch, episodes: int) -> dict[str, float]:
        """One gradient step on ``batch`` (``[B, T]`` episodes); ``episodes``: episodes stored so far
        (the hard target update's clock). Returns the step's metrics."""
        cfg, t0 = self.cfg, time.perf_counter()
        b = batch.to(self.device)
        obs, state, avail = (x.transpose(0, 1) for x in (b.obs, b.state, b.avail))  # [T+1, B, ...]
        actions = b.actions.transpose(0, 1)  # [T, B, N]
        reward, terminated, filled = (x.transpose(0, 1) for x in (b.reward, b.terminated, b.filled))  # [T, B]
        last_actions = torch.cat([torch.full_like(actions[:1], -1), actions])  # [T+1, B, N]
        n_batch = obs.shape[1]
        h0 = self.agent.initial_hidden(n_batch, self.device) if self.agent.hidden_size else None
        mixer_state = self.mixer_states(state, filled)  # [T+1, B, S·D]
        q, _ = self.agent(obs, last_actions, h0)  # [T+1, B, N, A]
        chosen = q[:-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # [T, B, N]
        q_tot = self.mixer(chosen, mixer_state[:-1])  # [T, B]
        with torch.no_grad():
            target_q, _ = self.target_agent(obs, last_actions, h0)
            online = mask_unavailable(q.detach(), avail)
            if cfg.double_q:
                next_actions = online[1:].argmax(-1, keepdim=True)
                next_q = target_q[1:].gather(-1, next_actions).squeeze(-1)
            else:
                next_q = mask_unavailable(target_q[1:], avail[1:]).max(-1).values
            next_tot = self.target_mixer(next_q, mixer_state[1:])  # [T, B]
            rewards = self._standardise(reward, filled) if cfg.standardise_rewards else reward
            metrics: dict[str, float] = {}
            if cfg.count_bonus > 0:
                n_visits = self.counts.lookup(self.state_codes(state[:-1]))
                r_int = cfg.count_bonus / n_visits.sqrt() + cfg.count_offset
                rewards = rewards + r_int
                metrics["gpvd/r_int_mean"] = float(r_int[filled].mean())
            ends = filled & ~torch.cat([filled[1:], torch.zeros_like(filled[:1])])
            targets = td_lambda_targets(rewards, next_tot, terminated.to(rewards.dtype), ends.to(rewards.dtype),
                                        cfg.gamma, cfg.td_lambda)
        td = torch.where(filled, q_tot - targets, 0.0)  # selected, not multiplied: padding cannot leak
        mask = filled.to(td.dtype)
        weights = torch.ones_like(td)
        if cfg.weighting == "gpvd":
            with torch.no_grad():
                greedy = self.greedy_values(q[:-1].detach(), avail[:-1], mixer_state[:-1])
                weights = gpvd_weights(self.state_codes(state[:-1]).reshape(-1), actions.reshape(-1, actions.shape[-1]),
                                       targets.reshape(-1), td.detach().reshape(-1), greedy.reshape(-1),
                                       alpha=cfg.gpvd_alpha, optimal_weight=cfg.gpvd_optimal_weight,
                                       valid=filled.reshape(-1)).view_as(td)
            metrics["gpvd/frac_downweighted"] = float(((weights < 1) & filled).sum() / filled.sum())
            metrics["gpvd/frac_candidates"] = float(((targets > greedy) & filled).sum() / filled.sum())
        loss = (weights * td.pow(2)).sum() / mask.sum()
        self.optim.zero_grad(set_to_none=True)
        if cfg.consensus == "grasp":
            metrics.update(self._grasp_gradients(loss, chosen))
        else:
            loss.backward()
        grad_norm = clip_grad_norm(self.params, cfg.max_grad_norm)
        # the non-finite guard (marlopt.guard): a NaN or infinite TD loss or gradient skips the step
        # (parameters and optimiser state unchanged, so the target networks copy finite weights only);
        # the runner's guard counts it and stops the run after nonfinite_patience skips in a row. One host sync.
        finite, values = admit("td", loss=loss, grad_norm=grad_norm)
        if finite:
            self.optim.step()
        else:
            self.optim.zero_grad(set_to_none=True)
        self.updates += 1
        self._update_targets(episodes)
        n = mask.sum()
        metrics.update({
            "train/td_loss": values["loss"], "train/td_error_abs": float((td.detach().abs() * mask).sum() / n),
            "train/q_taken_mean": float((q_tot.detach() * mask).sum() / n),
            "train/target_mean": float(targets[filled].mean()), "train/grad_norm": values["grad_norm"],
            "time/learn_s": time.perf_counter() - t0,
        })
        return metrics

    def greedy_values(self, q: Tensor, avail: Tensor, mixer_state: Tensor) -> Tensor:
        """``max_a Q_tot(τ, a)`` over the available joint actions, from utilities ``q[..., N, A]`` and
        the mixer's states ``[..., S·D]`` (``mixer_states``): for a monotonic mixer (VDN, QMIX), the
        mixer of each agent's best available utility."""
        return self.mixer(mask_unavailable(q, avail).max(-1).values, mixer_state)

    def _grasp_gradients(self, loss: Tensor, chosen: Tensor) -> dict[str, float]:
        """Set the agent network's gradient to ``Σ_i Γ_i (g_i + u*)`` and the mixer's to the plain TD
        gradient. ``g_i``: the loss's gradient through agent ``i``'s utilities only."""
        n = self.spec.n_agents
        mixer_params = self.params[len(self.agent_params):]
        d_chosen, *mixer_grads = torch.autograd.grad(loss, [chosen, *mixer_params], retain_graph=True, allow_unused=True)
        cotangents = d_chosen.unsqueeze(0) * torch.eye(n, device=chosen.device, dtype=chosen.dtype).view(n, 1, 1, n)
        try:
            grads = torch.autograd.grad(chosen, self.agent_params, grad_outputs=cotangents, is_grads_batched=True,
                                        allow_unused=True)
            flat = torch.cat([(g if g is not None else torch.zeros(n, *p.shape, device=p.device)).reshape(n, -1)
                              for g, p in zip(grads, self.agent_params)], dim=1)
        except RuntimeError:  # an op without a batching rule: one backward per agent
            rows = []
            for i in range(n):
                gi = torch.autograd.grad(chosen, self.agent_params, grad_outputs=cotangents[i], retain_graph=True,
                                         allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(gi, self.agent_params)]))
            flat = torch.stack(rows)
        if not bool(torch.isfinite(flat).all()):  # diverged: the solvers refuse non-finite gradients
            for p, g in zip(self.agent_params, torch.split(flat.sum(0), [p.numel() for p in self.agent_params])):
                p.grad = g.view_as(p).clone()  # the plain TD gradient, non-finite: the guard skips the step
            for p, g in zip(mixer_params, mixer_grads):
                p.grad = g
            nan = float("nan")
            return {"grasp/gamma_mean": nan, "grasp/gamma_min": nan, "grasp/u_norm": nan, "grasp/c_max": nan}
        if self.cfg.consensus_solver == "cvxpy":
            c = torch.as_tensor(min_norm_coefficients_cvxpy(flat), dtype=flat.dtype, device=flat.device)
            u = c @ flat
        else:
            u, c = consensus_direction(flat)
        directions, gamma = grasp_qmix_directions(flat, u.to(flat.dtype))
        total = directions.sum(0)
        for p, g in zip(self.agent_params, torch.split(total, [p.numel() for p in self.agent_params])):
            p.grad = g.view_as(p).clone()
        for p, g in zip(mixer_params, mixer_grads):
            p.grad = None if g is None else g
        return {"grasp/gamma_mean": float(gamma.mean()), "grasp/gamma_min": float(gamma.min()),
                "grasp/u_norm": float(u.norm()), "grasp/c_max": float(c.max())}

    def _update_targets(self, episodes: int) -> None:
        tau = self.cfg.target_tau
        if tau is not None:
            with torch.no_grad():
                for online, target in ((self.agent, self.target_agent), (self.mixer, self.target_mixer)):
                    for p, tp in zip(online.parameters(), target.parameters()):
                        tp.lerp_(p, tau)
        elif episodes - self.last_target_episode >= self.cfg.target_update_interval:
            self.target_agent.load_state_dict(self.agent.state_dict())
            self.target_mixer.load_state_dict(self.mixer.state_dict())
            self.last_target_episode = episodes

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "agent": self.agent.state_dict(), "mixer": self.mixer.state_dict(),
            "target_agent": self.target_agent.state_dict(), "target_mixer": self.target_mixer.state_dict(),
            "optim": self.optim.state_dict(), "projection": self.projection, "counts": self.counts.state_dict(),
            "reward_stats": self.reward_stats.state_dict(), "state_stats": self.state_stats.state_dict(),
            "updates": self.updates, "last_target_episode": self.last_target_episode,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        self.mixer.load_state_dict(state["mixer"])
        self.target_agent.load_state_dict(state["target_agent"])
        self.target_mixer.load_state_dict(state["target_mixer"])
        self.optim.load_state_dict(state["optim"])
        if state["projection"] is not None:
            self.projection = state["projection"].to(self.device)
        self.counts.load_state_dict(state["counts"])
        self.reward_stats.load_state_dict(state["reward_stats"])
        self.state_stats.load_state_dict(state["state_stats"])
        self.updates, self.last_target_episode = int(state["updates"]), int(state["last_target_episode"])

