"""What every on-policy update rule shares: networks, optimisers, value estimation, GAE, chunking.

An update rule owns its networks, its optimisers and all of the learning; the runner owns the envs,
the acting loop and the buffer. What the runner calls:

- ``rollout_actor`` — the network that acts during rollouts (MAGPO: its centralised guider),
- ``eval_policy()`` — the deployed :class:`~marlopt.policy.Policy` (MAGPO: the decentralised learner),
  and ``extra_eval_policies()`` — others worth evaluating beside it (MAGPO: the guider),
- ``initial_value_state(n_envs)`` and ``estimate_values(batch, value_state, tail)`` — the critic's
  values, hidden states and time-limit bootstraps of a finished rollout, in one batched pass,
- ``update(batch) -> metrics`` — one iteration's optimisation on a :class:`RolloutBatch`,

plus ``state_dict``/``load_state_dict`` for checkpoints. Subclasses implement ``update_policy``;
this class estimates values and advantages and offers the critic step and minibatching they reuse.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from marlopt.buffers import RolloutBatch, RolloutTail
from marlopt.config import ModelConfig, OnPolicyConfig
from marlopt.envs.base import EnvSpec
from marlopt.models import Actor, Critic
from marlopt.objectives import masked_mean, value_loss
from marlopt.optim import adam, clip_and_step
from marlopt.policy import ActorPolicy
from marlopt.returns import ValueNorm, gae


@dataclass
class Chunks:
    """Training data cut into BPTT chunks: ``[L, C, ...]`` with C = (T / L) · E sequences."""

    obs: Tensor
    state: Tensor
    avail: Tensor
    actions: Tensor
    logp: Tensor
    values: Tensor
    active: Tensor
    critic_active: Tensor
    starts: Tensor
    advantages: Tensor  # [L, C, N]
    # [L, C, R] the critic's targets: in its (normalised) space, or, where ``returns_raw``, in
    # environment units (algo.value_norm_update=minibatch: each critic step updates ValueNorm with
    # its minibatch's returns and normalises them, ``OnPolicyRule.critic_targets``)
    returns: Tensor
    h_actor: Tensor | None  # [C, N, H] hidden state at each chunk's first step
    h_critic: Tensor | None  # [C, R, H]
    factor: Tensor | None = None  # [L, C, 1] sequential updates: product of earlier agents' ratios
    # Whole-batch facts found once per update (``prepare``): every sample active / every action
    # (continuous: every action dim) available. Then the masks change nothing, and the update
    # leaves them out (``active_mask``, ``avail_mask``): ~60 small ops fewer per minibatch.
    all_active: bool = False
    all_avail: bool = False
    returns_raw: bool = False  # ``returns`` in environment units, normalised per critic step

    def select(self, index: Tensor | slice) -> "Chunks":
        """The sequences ``index`` (dim 1; hidden states dim 0); a slice gives views, no copy."""
        out = {}
        for f in fields(self):
            x = getattr(self, f.name)
            if isinstance(x, Tensor):
                x = x[index] if f.name.startswith("h_") else x[:, index]
            out[f.name] = x
        return type(self)(**out)

    @property
    def active_mask(self) -> Tensor | None:
        """The actor's sample mask, or ``None`` where every sample counts (the same means)."""
        return None if self.all_active else self.active

    @property
    def critic_mask(self) -> Tensor | None:
        """The critic's row mask, or ``None`` where every sample counts."""
        return None if self.all_active else self.critic_active

    @property
    def avail_mask(self) -> Tensor | None:
        """Available actions for the policy, or ``None`` where all are (masking would be a no-op)."""
        return None if self.all_avail else self.avail

    @property
    def num_sequences(self) -> int:
        return self.obs.shape[1]


def to_chunks(x: Tensor, length: int) -> Tensor:
    """``[T, E, ...] -> [L, (T/L)·E, ...]``; sequence index = chunk_number · E + env."""
    t, e = x.shape[:2]
    return x.reshape(t // length, length, e, *x.shape[2:]).transpose(0, 1).reshape(length, (t // length) * e, *x.shape[2:])


def chunk_starts(x: Tensor, length: int) -> Tensor:
    """The value of ``x[T, E, ...]`` at each chunk's first step: ``[(T/L)·E, ...]``."""
    t, e = x.shape[:2]
    return x.reshape(t // length, length, e, *x.shape[2:])[:, 0].reshape((t // length) * e, *x.shape[2:])


def states_before_steps(h0: Tensor, h_after: Tensor, starts: Tensor) -> Tensor:
    """A recurrent network's state before each step ``[T, E, R, H]``, from its state before the
    rollout ``h0[E, R, H]`` and after each step ``h_after[T, E, R, H]``, zeroed where an episode
    starts at that step (``starts[T, E, 1]``): what a step-by-step rollout stores."""
    keep = (1.0 - starts[1:]).unsqueeze(-1)
    return torch.cat([h0.unsqueeze(0), h_after[:-1] * keep])


def normalise_advantages(adv: Tensor, mask: Tensor) -> Tensor:
    """``(A - mean) / (std + 1e-5)`` over active samples only (dead agents left out, as HARL)."""
    m = mask.to(adv.dtype)
    count = m.sum().clamp_min(1.0)
    mean = (adv * m).sum() / count
    var = (((adv - mean) ** 2) * m).sum() / count
    return (adv - mean) / (var.sqrt() + 1e-5)


class MetricMeans:
    """Averages per-step metric dicts over an update (one entry per optimiser step)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.count = 0

    def add(self, stats: dict[str, float]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.sums.items()}


class OnPolicyRule:
    """Base of the on-policy update rules: actor, centralised critic, ValueNorm, optimisers."""

    def __init__(self, spec: EnvSpec, algo: OnPolicyConfig, model: ModelConfig, device: torch.device):
        self.spec, self.cfg, self.model_cfg, self.device = spec, algo, model, device
        self.actor = Actor(spec, model).to(device)
        self.critic = Critic(spec, model).to(device)
        self.value_norm = ValueNorm().to(device) if algo.use_valuenorm else None  # scalar statistics
        self.actor_optim = self.make_actor_optimiser()
        self.critic_optim = adam(self.critic.parameters(), lr=algo.critic_lr, eps=algo.adam_eps)
        self.chunk_length = model.data_chunk_length if model.recurrent else 1

    def make_actor_optimiser(self) -> torch.optim.Optimizer:
        return adam(self.actor.parameters(), lr=self.cfg.lr, eps=self.cfg.adam_eps)

    # -- what the runner uses ------------------------------------------------------------------
    @property
    def rollout_actor(self) -> Actor:
        return self.actor

    @property
    def eval_actor(self) -> Actor:
        return self.actor

    def eval_policy(self) -> ActorPolicy:
        """The deployed policy (evaluation, ``marlopt.evaluate``, ``marlopt.load_policy``)."""
        return ActorPolicy(self.eval_actor)

    def extra_eval_policies(self) -> dict[str, Any]:
        """Policies evaluated beside the deployed one, by metric prefix (MAGPO: ``{"guider_": ...}``
        gives ``eval/guider_return_mean``); none here."""
        return {}

    def initial_value_state(self, n_envs: int) -> Tensor:
        """The rule's memory between rollouts, ``[E, ...]`` on the CPU: here the critic's, ``[E, R, H]``
        (``H = 0`` for a feed-forward critic). The runner keeps it between rollouts and in
        checkpoints, and zeroes an env's row where that env restarts; it reads nothing else of it."""
        return self.critic.initial_hidden(n_envs)

    @torch.no_grad()
    def estimate_values(self, batch: RolloutBatch, value_state: Tensor, tail: RolloutTail) -> Tensor:
        """Fill ``batch.values``, ``batch.h_critic`` and ``batch.bootstrap_values`` for a whole rollout
        in one batched critic pass (per-step inference of small networks is launch-bound), and
        return the critic's memory for the next rollout (``value_state`` as the runner passed it
        in, advanced; on the CPU).

        ``bootstrap[t] = V(s_{t+1})`` (``V(tail.next_state)`` for the last step), ``0`` where step
        ``t`` ended the episode, and ``V(final state of step t)`` where it hit a time limit,
        evaluated with the critic state reached after step ``t``: the numbers a step-by-step
        rollout computes (docs/algorithms/on_policy_machinery.md).
        """
        device = batch.state.device
        h0 = value_state.to(device)
        values, h_after = self.critic.rollout_values(batch.state, h0, batch.starts)  # h_after[t]: after step t
        batch.values = values.clone()  # a normal tensor: the update differentiates next to it
        next_h = h0
        if h_after is not None:
            batch.h_critic = states_before_steps(h0, h_after, batch.starts)
            next_h = h_after[-1] * (1.0 - tail.next_starts.to(device)).unsqueeze(-1)
        last_values, _ = self.critic.value(tail.next_state.to(device), next_h)
        bootstrap = torch.empty_like(batch.values)
        bootstrap[:-1] = batch.values[1:]
        bootstrap[-1] = last_values
        bootstrap.masked_fill_(batch.truncated, 0.0)  # a dropped episode's cut bootstraps nothing
        if tail.truncations:
            ts = torch.from_numpy(np.concatenate([np.full(len(e), t) for t, e, _ in tail.truncations])).to(device)
            es = torch.from_numpy(np.concatenate([e for _, e, _ in tail.truncations])).to(device)
            final_states = torch.from_numpy(np.concatenate([s for _, _, s in tail.truncations])).to(device)
            h_final = None if h_after is None else h_after[ts, es]
            bootstrap[ts, es] = self.critic.value(final_states, h_final)[0]
        batch.bootstrap_values = bootstrap
        return next_h.clone().cpu()

    def schedule_learning_rates(self, frames: int, total_frames: int) -> None:
        """Before an iteration's update. ``algo.lr_schedule=linear``: every optimiser's learning rate
        is ``lr_0 * (1 - frames / total_frames)``, ``lr_0`` its configured value (kept in each param
        group's ``initial_lr``, as torch's schedulers keep it, so checkpoints carry it); the MAPPO
        reference's ``use_linear_lr_decay`` and JaxMARL's ``ANNEAL_LR``. ``constant``: nothing."""
        if self.cfg.lr_schedule != "linear":
            return
        factor = max(0.0, 1.0 - frames / total_frames)
        for optim in self.optimisers().values():
            for group in optim.param_groups:
                group.setdefault("initial_lr", group["lr"])
                group["lr"] = group["initial_lr"] * factor

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        chunks = self.prepare(batch)
        self.actor.train()
        self.critic.train()
        return self.update_policy(chunks)

    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        raise NotImplementedError

    def modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"actor": self.actor, "critic": self.critic}
        if self.value_norm is not None:
            mods["value_norm"] = self.value_norm
        return mods

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {"actor_optim": self.actor_optim, "critic_optim": self.critic_optim}

    def state_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {k: m.state_dict() for k, m in self.modules().items()}
        out.update({k: o.state_dict() for k, o in self.optimisers().items()})
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for k, m in self.modules().items():
            m.load_state_dict(state[k])
        for k, o in self.optimisers().items():
            o.load_state_dict(state[k])

    # -- shared machinery ----------------------------------------------------------------------
    def critic_active(self, active: Tensor) -> Tensor:
        return active if self.critic.rows == active.shape[-1] else active.any(-1, keepdim=True)

    def denormalise(self, v: Tensor) -> Tensor:
        return v if self.value_norm is None else self.value_norm.denormalize(v)

    @property
    def critic_beside_actor(self) -> bool:
        """Whether a minibatch's critic step may run on a second thread beside the actor's
        (:func:`marlopt.optim.side_by_side`): a recurrent model on the CPU with two or more intra-op
        threads for the update; MLP updates use both cores in their matmuls already."""
        return self.model_cfg.recurrent and self.device.type == "cpu" and torch.get_num_threads() >= 2

    @property
    def value_norm_per_minibatch(self) -> bool:
        """ValueNorm updated in every critic step (``algo.value_norm_update=minibatch``)."""
        return self.value_norm is not None and getattr(self.cfg, "value_norm_update", "batch") == "minibatch"

    @torch.no_grad()
    def prepare(self, batch: RolloutBatch) -> Chunks:
        """GAE on denormalised values, ValueNorm update, advantage normalisation, chunking.

        ``A = gae(r, V, V_boot, terminated, truncated, γ, λ)`` (docs/algorithms/on_policy_machinery.md):
        values are denormalised *before* GAE (marlbenchmark/on-policy issue #12); the critic's targets are
        the returns normalised with the just-updated statistics (``algo.value_norm_update=batch``), or
        the returns in environment units, which every critic step folds into ValueNorm and normalises
        (``minibatch``, the MAPPO/HARL reference; ``critic_targets``).
        """
        critic_active = self.critic_active(batch.active)
        adv, returns = gae(
            batch.rewards.expand_as(batch.values),
            self.denormalise(batch.values),
            self.denormalise(batch.bootstrap_values),
            batch.terminated.expand_as(batch.values),
            batch.truncated.expand_as(batch.values),
            self.cfg.gamma,
            self.cfg.gae_lambda,
        )
        per_minibatch = self.value_norm_per_minibatch
        if self.value_norm is not None and not per_minibatch:
            self.value_norm.update(returns, mask=critic_active)
            returns = self.value_norm.normalize(returns)
        adv = adv.expand_as(batch.logp) if adv.shape[-1] != batch.logp.shape[-1] else adv
        if self.cfg.advantage_norm:
            adv = normalise_advantages(adv, batch.active)
        length = self.chunk_length
        recurrent = self.model_cfg.recurrent
        return Chunks(
            obs=to_chunks(batch.obs, length),
            state=to_chunks(batch.state, length),
            avail=to_chunks(batch.avail, length),
            actions=to_chunks(batch.actions, length),
            logp=to_chunks(batch.logp, length),
            values=to_chunks(batch.values, length),
            active=to_chunks(batch.active, length),
            critic_active=to_chunks(critic_active, length),
            starts=to_chunks(batch.starts, length),
            advantages=to_chunks(adv, length),
            returns=to_chunks(returns, length),
            h_actor=chunk_starts(batch.h_actor, length) if recurrent else None,
            h_critic=chunk_starts(batch.h_critic, length) if recurrent and self.critic.hidden_size else None,
            all_active=bool(batch.active.all()),
            all_avail=bool(batch.avail.all()),
            returns_raw=per_minibatch,
        )

    def minibatches(self, chunks: Chunks) -> Iterator[Chunks]:
        """A fresh random split of the sequences into ``num_minibatches`` (global torch RNG).

        The data is shuffled once (one gather per field) and the minibatches are consecutive
        slices of it: the same minibatches as gathering each ``perm.chunk(k)`` on its own, with
        one indexing op per field and epoch instead of one per field and minibatch.
        """
        n = chunks.num_sequences
        perm = torch.randperm(n, device=chunks.obs.device)
        shuffled = chunks.select(perm)
        start = 0
        for index in perm.chunk(min(self.cfg.num_minibatches, n)):
            yield shuffled.select(slice(start, start + len(index)))
            start += len(index)

    def evaluate_actions(
        self, mb: Chunks, actor: Actor | None = None, agent: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies of ``mb``'s actions; ``agent``: ``mb`` holds that agent alone
        (agent axis of size 1, :func:`marlopt.algos.sequential.agent_slice`)."""
        actor = actor or self.actor
        return actor.evaluate(mb.obs, mb.avail_mask, mb.actions, mb.h_actor, mb.starts, agent)

    @torch.no_grad()
    def critic_targets(self, mb: Chunks) -> Tensor:
        """The critic's targets for ``mb`` in its (normalised) space. With per-minibatch ValueNorm
        (``mb.returns_raw``), as the MAPPO reference's ``cal_value_loss`` (and HARL's
        ``VCritic.cal_value_loss``): ``value_normalizer.update(return_batch)`` first, then
        ``normalize(return_batch)`` with the just-updated statistics; the batch moments count the
        critic-active samples only, as the once-per-iteration update does (the reference counts all)."""
        if not mb.returns_raw:
            return mb.returns
        assert self.value_norm is not None
        self.value_norm.update(mb.returns, mask=mb.critic_mask)
        return self.value_norm.normalize(mb.returns)

    def critic_step(self, mb: Chunks) -> dict[str, float]:
        """One clipped (Huber) value-loss step in normalised space (docs/algorithms/on_policy_machinery.md)."""
        values, _ = self.critic(mb.state, mb.h_critic, mb.starts)
        loss = value_loss(
            values, mb.values, self.critic_targets(mb), clip=self.cfg.value_clip, huber_delta=self.cfg.huber_delta,
            mask=mb.critic_mask,
        )
        norm = clip_and_step(
            self.critic_optim, list(self.critic.parameters()), self.cfg.value_loss_coef * loss, self.cfg.max_grad_norm,
            name="critic",
        )
        return {"critic/value_loss": loss.item(), "critic/grad_norm": norm}

    def entropy_term(self, entropy: Tensor, mask: Tensor | None) -> Tensor:
        return masked_mean(entropy, mask)
