"""What every on-policy update rule shares: networks, optimisers, ValueNorm, GAE, chunking.

An update rule owns its networks and optimisers and exposes three things to the runner:

- ``rollout_actor`` — the policy that collects data (MAGPO: its centralised guider),
- ``eval_actor`` — the policy that is evaluated and deployed (MAGPO: the decentralised learner),
- ``update(batch) -> metrics`` — one iteration's optimisation on a :class:`RolloutBatch`,

plus ``state_dict``/``load_state_dict`` for checkpoints. Subclasses implement ``update_policy``;
this class prepares advantages and offers the critic step and minibatching they reuse.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from marlopt.buffers import RolloutBatch
from marlopt.config import ModelConfig, OnPolicyConfig
from marlopt.envs.base import EnvSpec
from marlopt.models import Actor, Critic
from marlopt.objectives import masked_mean, value_loss
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
    returns: Tensor  # [L, C, R] targets in the critic's (normalised) space
    h_actor: Tensor | None  # [C, N, H] hidden state at each chunk's first step
    h_critic: Tensor | None  # [C, R, H]
    factor: Tensor | None = None  # [L, C, 1] sequential updates: product of earlier agents' ratios
    # Whole-batch facts found once per update (``prepare``): every sample active / every action
    # (continuous: every action dim) available. Then the masks change nothing, and the update
    # leaves them out (``active_mask``, ``avail_mask``): ~60 small ops fewer per minibatch.
    all_active: bool = False
    all_avail: bool = False

    def select(self, index: Tensor | slice) -> "Chunks":
        """The sequences ``index`` (dim 1; hidden states dim 0); a slice gives views, no copy."""
        out = {}
        for f in fields(self):
            x = getattr(self, f.name)
            if isinstance(x, Tensor):
                x = x[index] if f.name.startswith("h_") else x[:, index]
            out[f.name] = x
        return Chunks(**out)

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


class LeanFusedAdam(torch.optim.Adam):
    """torch's fused Adam whose steps, once its state exists, call the fused kernel directly.

    ``Adam.step`` regroups the parameters and their state by device and dtype and runs its hook and
    profiling wrappers on every call: ≈ 100 µs of Python per step on this project's 2-core machines,
    more than the kernel itself (162 vs 66 µs for a 256² MLP; an update with BenchMARL's settings
    takes two steps per minibatch). After the first step (through torch, which creates the state)
    the tensor lists are kept and each step makes the same two calls torch's fused path makes,
    ``_foreach_add_(steps, 1)`` and ``_fused_adam_``: bit-identical results, the same
    ``state_dict``. Anything else — a closure, a missing gradient, several parameter groups,
    amsgrad, a tensor lr, a grad scaler, parameters on several devices — takes torch's own path.
    """

    def __init__(self, params: Iterable[nn.Parameter], **kwargs: Any):
        super().__init__(params, fused=True, **kwargs)
        self._lists: tuple[list[Tensor], ...] | None = None

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is None and self._lists is not None:
            params, exp_avgs, exp_avg_sqs, steps = self._lists
            grads = [p.grad for p in params]
            if all(g is not None for g in grads):
                group = self.param_groups[0]
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=group["lr"], beta1=beta1,
                                   beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                                   maximize=group["maximize"], grad_scale=None, found_inf=None)
                return None
        loss = super().step(closure)
        self._lists = self._direct_lists()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``p.grad = None`` for every parameter (torch's version: ≈ 20 µs of bookkeeping more)."""
        if set_to_none and self._lists is not None:
            for p in self._lists[0]:
                p.grad = None
            return
        super().zero_grad(set_to_none=set_to_none)

    def _direct_lists(self) -> tuple[list[Tensor], ...] | None:
        if len(self.param_groups) != 1 or hasattr(self, "grad_scale") or hasattr(self, "found_inf"):
            return None
        group = self.param_groups[0]
        unusual = ("amsgrad", "differentiable", "capturable", "decoupled_weight_decay", "foreach")
        if not group["fused"] or any(group.get(k) for k in unusual) or isinstance(group["lr"], Tensor):
            return None
        params = group["params"]
        states = [self.state.get(p, {}) for p in params]
        if not params or any("exp_avg" not in st for st in states):
            return None
        if any(p.device != params[0].device or p.dtype != params[0].dtype for p in params):
            return None
        return params, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states], [st["step"] for st in states]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # new state tensors: the next step goes through torch and lists them again

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._lists = None


def adam(params: Iterable[nn.Parameter], lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam, fused where this torch supports it (CPU since torch 2.4, CUDA): one kernel over all
    parameters instead of ~10 per tensor (measured 575 → 218 µs per step for a 256² MLP on CPU),
    stepped through :class:`LeanFusedAdam`."""
    params = list(params)
    try:
        return LeanFusedAdam(params, lr=lr, eps=eps)
    except (RuntimeError, TypeError, ValueError):  # older torch / an unsupported device or dtype
        return torch.optim.Adam(params, lr=lr, eps=eps)


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """``g <- g · min(1, max_norm / (‖g‖₂ + 1e-6))`` over all gradients; returns the pre-clip ‖g‖₂.

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (same ops, same result bit for bit), without
    its per-call grouping by device and dtype, which here cost as much as the arithmetic (129 vs
    67 µs for a 256² MLP). Gradients on several devices or dtypes go to torch's version.
    """
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype for g in grads):
        return nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


def clip_and_step(optim: torch.optim.Optimizer, params: list[nn.Parameter], loss: Tensor, max_norm: float) -> float:
    """Backward, clip the global grad norm, step. Returns the pre-clip grad norm."""
    optim.zero_grad(set_to_none=True)
    loss.backward()
    norm = clip_grad_norm(params, max_norm)
    optim.step()
    return float(norm)


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

    @torch.no_grad()
    def prepare(self, batch: RolloutBatch) -> Chunks:
        """GAE on denormalised values, ValueNorm update, advantage normalisation, chunking.

        ``A = gae(r, V, V_boot, terminated, truncated, γ, λ)`` (EQUATIONS.md, shared machinery):
        values are denormalised *before* GAE (TRAPS.md: on-policy #12); the critic's targets are
        the returns normalised with the just-updated statistics.
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
        if self.value_norm is not None:
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
            h_critic=chunk_starts(batch.h_critic, length) if recurrent else None,
            all_active=bool(batch.active.all()),
            all_avail=bool(batch.avail.all()),
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

    def evaluate_actions(self, mb: Chunks, actor: Actor | None = None) -> tuple[Tensor, Tensor]:
        actor = actor or self.actor
        return actor.evaluate(mb.obs, mb.avail_mask, mb.actions, mb.h_actor, mb.starts)

    def critic_step(self, mb: Chunks) -> dict[str, float]:
        """One clipped (Huber) value-loss step (EQUATIONS.md: value loss), in normalised space."""
        values, _ = self.critic(mb.state, mb.h_critic, mb.starts)
        loss = value_loss(
            values, mb.values, mb.returns, clip=self.cfg.value_clip, huber_delta=self.cfg.huber_delta,
            mask=mb.critic_mask,
        )
        norm = clip_and_step(
            self.critic_optim, list(self.critic.parameters()), self.cfg.value_loss_coef * loss, self.cfg.max_grad_norm
        )
        return {"critic/value_loss": loss.item(), "critic/grad_norm": norm}

    def entropy_term(self, entropy: Tensor, mask: Tensor | None) -> Tensor:
        return masked_mean(entropy, mask)
