"""Generalised advantage estimation with proper time limits, ValueNorm, and TD(lambda) targets.

Equations, sources and the choices made: docs/algorithms/on_policy_machinery.md ("GAE with time
limits and terminations", "ValueNorm"); the off-policy TD(lambda) targets: docs/algorithms/gpvd.md.
Nothing here imports from :mod:`marlopt.objectives` (that package re-exports this module).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["ValueNorm", "gae", "td_lambda_targets"]


def _as_float(x: Tensor, dtype: torch.dtype) -> Tensor:
    return x.detach().to(dtype)


@torch.no_grad()
def gae(
    rewards: Tensor,
    values: Tensor,
    bootstrap_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    lam: float,
) -> tuple[Tensor, Tensor]:
    """GAE(gamma, lambda) along time dimension 0, any trailing dims (e.g. ``[T, E, N]``).

    GAE (Schulman et al., 2016; restated as GRASP paper Eqs. (2)-(3)) with proper time limits
    (HARL paper Table 4, "use proper time limits"):

    ``delta_t = r_t + gamma (1 - terminated_t) bootstrap_values[t] - values[t]``
    ``A_t = delta_t + gamma lam (1 - (terminated_t or truncated_t)) A_{t+1}``, ``A_T = 0``
    ``returns_t = A_t + values[t]``

    ``bootstrap_values[t]`` is ``V`` of the state reached *after* step ``t``: normally
    ``values[t + 1]``, at a time limit (``truncated_t``) the value of the final observation, and for
    the last step of the rollout the value of the next state. So a truncation bootstraps, a
    termination does not, and neither lets the recursion cross the episode boundary
    (docs/algorithms/on_policy_machinery.md; a step that is both counts as terminated).

    All inputs are in *denormalised* (environment) units (docs/algorithms/on_policy_machinery.md,
    "ValueNorm"); pass ``value_norm.denormalize(v)`` when the critic predicts normalised values.

    Args:
        rewards, values, bootstrap_values: float ``[T, ...]``, mutually broadcastable (e.g. a team
            reward ``[T, E, 1]`` with per-agent values ``[T, E, N]``); all must have length ``T``
            on dim 0.
        terminated, truncated: bool or float ``[T, ...]`` (nonzero = true).
        gamma, lam: discount and GAE lambda, both in ``[0, 1]``.

    Returns:
        ``(adv, returns)`` of the broadcast shape, in ``values``' floating dtype, without gradient.
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(f"gae: gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}")
    inputs = {
        "rewards": rewards,
        "values": values,
        "bootstrap_values": bootstrap_values,
        "terminated": terminated,
        "truncated": truncated,
    }
    T = values.shape[0] if values.dim() > 0 else -1
    for name, x in inputs.items():
        if x.dim() == 0 or x.shape[0] != T:
            raise ValueError(
                f"gae: every input needs time on dim 0 with the same length as values "
                f"({T}); {name} has shape {tuple(x.shape)}"
            )
    try:
        shape = torch.broadcast_shapes(*(x.shape for x in inputs.values()))
    except RuntimeError as err:
        raise ValueError(f"gae: input shapes do not broadcast: {err}") from None

    dtype = values.dtype if values.is_floating_point() else torch.get_default_dtype()
    v = _as_float(values, dtype).expand(shape)
    term = terminated.detach().to(torch.bool)
    done = term | truncated.detach().to(torch.bool)
    not_term = (~term).to(dtype)
    # Select rather than multiply, so a junk bootstrap value (inf/NaN) after a termination is ignored.
    boot = torch.where(term, torch.zeros((), dtype=dtype, device=v.device), _as_float(bootstrap_values, dtype))
    delta = (_as_float(rewards, dtype) + gamma * not_term * boot - v).expand(shape)
    carry = (gamma * lam * (~done).to(dtype)).expand(shape)

    adv = torch.empty(shape, dtype=dtype, device=v.device)
    last = torch.zeros(shape[1:], dtype=dtype, device=v.device)
    for t in range(T - 1, -1, -1):
        last = delta[t] + carry[t] * last
        adv[t] = last
    return adv, adv + v


@torch.no_grad()
def td_lambda_targets(
    rewards: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    ends: Tensor,
    gamma: float,
    lam: float,
) -> Tensor:
    """TD(lambda) targets of Q-learning (the PyMARL2 recipe, docs/algorithms/gpvd.md), along time
    dimension 0 (e.g. ``[T, B]``, any trailing dims), computed backwards:

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lam) next_values[t] + lam G'_{t+1}]``,
    ``G'_{t+1} = next_values[t]`` where ``ends_t``, else ``G_{t+1}``.

    This is the lambda-weighted average of the n-step returns of the episode,
    ``G_t = (1 - lam) sum_{n>=1} lam^(n-1) G_t^(n)``, where ``G_t^(n)`` sums ``n`` discounted
    rewards and bootstraps with ``gamma^n next_values[t+n-1]``, and every ``G_t^(n)`` reaching past
    the episode's last step ``e`` equals ``G_t^(e-t+1)`` (whose bootstrap is dropped if the episode
    terminated). So ``lam = 0`` is the one-step target ``r_t + gamma (1 - terminated_t)
    next_values[t]`` and ``lam = 1`` the discounted Monte-Carlo return, bootstrapped at a truncation.

    ``next_values[t]`` is the (target-network) value of the state *after* step ``t``, e.g.
    ``max_a' Q_tot^target(tau_{t+1}, a')``; after a time-limit truncation, of the final observation.
    ``terminated_t``: the episode truly ended at ``t`` (no bootstrap; ``next_values[t]`` is then
    never read, so it may hold ``-inf`` or ``NaN``). ``ends_t``: ``t`` is the last step of its
    episode within the sequence (terminated, truncated, or the last stored step; step ``T - 1``
    counts as an end whatever its flag). The recursion never crosses an end, so several episodes
    may follow one another along dim 0. Steps after an episode's end (padding) get unspecified
    targets that never reach a step before the end; a non-finite ``next_values`` anywhere but after
    a termination propagates (a NaN is an error to surface, not a value to hide), so callers select
    the valid steps (``torch.where``) rather than multiply padding by 0.

    Relation to PyMARL2's ``build_td_lambda_targets`` (hijkzzz/pymarl2, ``src/utils/rl_utils.py``,
    the ``[B, T]`` layout transposed): with ``next_values[t] = target_qs[:, t + 1]``, the stored
    ``terminated``, and ``ends`` on each episode's last filled step, both give the same targets on
    the filled steps of an episode that ends by termination. They differ in how a time-limit
    truncation is expressed. PyMARL2 has no ``ends`` flag: it stores the truncated step with
    ``terminated = 0`` and the final observation in the next slot, so its recursion goes on and
    bootstraps that step with ``gamma Q'(final obs)`` (for an episode filling the buffer, through
    ``ret[:, -1] = target_qs[:, -1]``: ``r + lam gamma Q' + (1 - lam) gamma Q' = r + gamma Q'``).
    Here the recursion stops at ``ends`` and bootstraps with ``next_values``, which gives that same
    target when ``next_values`` of the truncated step is ``Q'(final obs)`` (``terminated = 0``,
    ``ends = 1``). An episode truncated before the last buffer slot makes PyMARL2's recursion also
    read the padding after it; this function does not.

    Args:
        rewards, next_values: float ``[T, ...]``, mutually broadcastable, time on dim 0.
        terminated, ends: bool or float ``[T, ...]`` (nonzero = true); a terminated step should
            also be marked in ``ends`` (it is treated as an end either way).
        gamma, lam: discount and lambda, both in ``[0, 1]``.

    Returns:
        targets of the broadcast shape, in ``next_values``' floating dtype, on its device, without
        gradient (a reverse loop over ``T``, no host synchronisation).
    """
    if not (0.0 <= gamma <= 1.0 and 0.0 <= lam <= 1.0):
        raise ValueError(
            f"td_lambda_targets: gamma and lam must lie in [0, 1], got gamma={gamma}, lam={lam}"
        )
    inputs = {"rewards": rewards, "next_values": next_values, "terminated": terminated, "ends": ends}
    T = next_values.shape[0] if next_values.dim() > 0 else -1
    for name, x in inputs.items():
        if x.dim() == 0 or x.shape[0] != T:
            raise ValueError(
                f"td_lambda_targets: every input needs time on dim 0 with the same length as "
                f"next_values ({T}); {name} has shape {tuple(x.shape)}"
            )
    try:
        shape = torch.broadcast_shapes(*(x.shape for x in inputs.values()))
    except RuntimeError as err:
        raise ValueError(f"td_lambda_targets: input shapes do not broadcast: {err}") from None

    dtype = next_values.dtype if next_values.is_floating_point() else torch.get_default_dtype()
    device = next_values.device
    zero = torch.zeros((), dtype=dtype, device=device)
    nv = _as_float(next_values, dtype)
    term = terminated.detach().to(device, torch.bool)
    # Select rather than multiply: a junk value after a termination cannot leak.
    nv = torch.where(term, zero, nv).expand(shape)
    end = (term | ends.detach().to(device, torch.bool)).expand(shape)
    r = _as_float(rewards, dtype).to(device).expand(shape)
    keep = (gamma * (~term).to(dtype)).expand(shape)

    if lam == 0.0:  # one-step targets need no recursion: r_t + gamma (1 - terminated_t) next_values[t]
        return r + keep * nv
    targets = torch.empty(shape, dtype=dtype, device=device)
    nxt = nv[T - 1] if T > 0 else zero  # the last stored step always ends its sequence
    for t in range(T - 1, -1, -1):
        boot = torch.where(end[t], nv[t], nxt)
        nxt = r[t] + keep[t] * ((1.0 - lam) * nv[t] + lam * boot)
        targets[t] = nxt
    return targets


class ValueNorm(nn.Module):
    """Running normaliser of value targets (PopArt-style statistics, as the MAPPO reference's
    ``ValueNorm`` with ``per_element_update=False`` by default).

    State (registered float64 buffers, so they land in ``state_dict`` and in checkpoints):
    ``running_mean`` (``m``), ``running_mean_sq`` (``s``), ``debiasing_term`` (``d``). One update
    with a batch of mean ``mu_b`` and mean of squares ``q_b`` (over all leading dims of the counted
    elements) and weight ``w = beta`` (``beta ** n_counted`` with ``per_element_update``):

        ``m <- w m + (1 - w) mu_b``,  ``s <- w s + (1 - w) q_b``,  ``d <- w d + (1 - w)``.

    Debiased statistics: ``mean = m / max(d, epsilon)``, ``var = max(s / max(d, epsilon) - mean^2,
    1e-2)`` (the reference's floor on the variance), ``std = sqrt(var)``.
    ``normalize(x) = (x - mean) / std``, ``denormalize(y) = y std + mean``. Before the first update
    ``mean = 0, std = 0.1`` (reference behaviour).

    Args:
        shape: the trailing feature shape the statistics are kept per element of; the default
            ``()`` keeps one scalar mean/std and treats every dim of the input as a leading (batch)
            dim, so it accepts ``[T, E, N]`` and ``[T, E, N, 1]`` alike. ``1`` / ``(1,)`` requires a
            trailing dim of size 1 as the reference code.
        beta: EMA weight (0.99999 in the MAPPO paper).
        epsilon: floor on the debiasing term.
        per_element_update: weight ``beta ** n`` for a batch of ``n`` counted elements.
    """

    running_mean: Tensor
    running_mean_sq: Tensor
    debiasing_term: Tensor

    def __init__(
        self,
        shape: int | tuple[int, ...] = (),
        beta: float = 0.99999,
        epsilon: float = 1e-5,
        per_element_update: bool = False,
    ) -> None:
        super().__init__()
        if not 0.0 < beta < 1.0:
            raise ValueError(f"ValueNorm: beta must lie in (0, 1), got {beta}")
        self.shape: tuple[int, ...] = (shape,) if isinstance(shape, int) else tuple(shape)
        self.beta = float(beta)
        self.epsilon = float(epsilon)
        self.per_element_update = bool(per_element_update)
        self.register_buffer("running_mean", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("running_mean_sq", torch.zeros(self.shape, dtype=torch.float64))
        self.register_buffer("debiasing_term", torch.zeros((), dtype=torch.float64))

    def extra_repr(self) -> str:
        return f"shape={self.shape}, beta={self.beta}, epsilon={self.epsilon}"

    def _check(self, x: Tensor) -> int:
        k = len(self.shape)
        if x.dim() < k or tuple(x.shape[x.dim() - k :]) != self.shape:
            raise ValueError(f"ValueNorm: input of shape {tuple(x.shape)} does not end in {self.shape}")
        return x.dim() - k  # number of leading dims

    @torch.no_grad()
    def update(self, x: Tensor, mask: Tensor | None = None) -> None:
        """Fold a batch into the running statistics (no-op when ``mask`` counts nothing).

        ``mask`` (1 = counts) broadcasts to ``x``; the batch moments are means over the leading
        dims of the counted elements only (e.g. returns of dead agents are left out).
        """
        lead = tuple(range(self._check(x)))
        x64 = x.detach().to(self.running_mean.device, torch.float64)
        if mask is None:
            w = torch.ones_like(x64)
        else:
            try:
                w = torch.broadcast_to(mask.detach().to(x64.device, torch.float64), x64.shape)
            except RuntimeError:
                raise ValueError(
                    f"ValueNorm.update: mask of shape {tuple(mask.shape)} does not broadcast to {tuple(x.shape)}"
                ) from None
        counted = w != 0
        xz = torch.where(counted, x64, torch.zeros((), dtype=torch.float64, device=x64.device))
        n = w.sum(dim=lead)
        if not bool((n > 0).all()):
            return
        batch_mean = (w * xz).sum(dim=lead) / n
        batch_mean_sq = (w * xz * xz).sum(dim=lead) / n
        if self.per_element_update:
            n_total = float(counted.sum()) / max(1, math.prod(self.shape))
            weight = self.beta**n_total
        else:
            weight = self.beta
        self.running_mean.mul_(weight).add_(batch_mean * (1.0 - weight))
        self.running_mean_sq.mul_(weight).add_(batch_mean_sq * (1.0 - weight))
        self.debiasing_term.mul_(weight).add_(1.0 - weight)

    @torch.no_grad()
    def mean_std(self) -> tuple[Tensor, Tensor]:
        """Debiased ``(mean, std)`` (float64, shape ``self.shape``), see the class docstring."""
        d = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / d
        var = (self.running_mean_sq / d - mean**2).clamp(min=1e-2)
        return mean, var.sqrt()

    def normalize(self, x: Tensor) -> Tensor:
        """``(x - mean) / std``; differentiable in ``x``, the statistics are constants."""
        self._check(x)
        mean, std = self.mean_std()
        return (x - mean.to(x)) / std.to(x)

    def denormalize(self, x: Tensor) -> Tensor:
        """``x * std + mean``; differentiable in ``x``, the statistics are constants."""
        self._check(x)
        mean, std = self.mean_std()
        return x * std.to(x) + mean.to(x)
