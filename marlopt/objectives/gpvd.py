"""GPVD: SimHash grouping of states and gradient-protection weights of the TD loss
(docs/algorithms/gpvd.md).

GPVD trains a QMIX learner with a weighted TD loss ``mean(w (Q_tot - y)^2)`` over the valid samples
of a batch. The weights protect the best joint action found so far in each group of similar
states from the gradients of samples that would pull it down:

1. States are grouped by SimHash, ``phi(s) = sign(A s)`` with a fixed Gaussian ``A in R^{k x D}``
   (``k = 32`` in the paper), packed into one integer code (:func:`simhash`).
2. Within each group, the candidates are the samples whose TD target beats the current greedy value,
   ``y > max_a' Q_tot(tau, a')``; ``a^{c*}`` is the joint action of the candidate with the highest
   ``y``. A sample of the group *interferes* with it when its joint action differs from ``a^{c*}``
   but shares at least one agent's action with it, and its TD error ``Q_tot - y`` has the opposite
   sign to ``c*``'s. Interfering samples get weight ``alpha`` (0.2), the others 1
   (:func:`gpvd_weights`).

Both functions are pure, gradient-free and vectorised (no Python loop over samples or groups).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["MAX_SIMHASH_BITS", "gpvd_weights", "simhash"]

#: The most hash bits a code holds: codes are int64 and bit ``k - 1 <= 61`` keeps them well away
#: from the sign bit.
MAX_SIMHASH_BITS: int = 62


@torch.no_grad()
def simhash(states: Tensor, projection: Tensor) -> Tensor:
    """SimHash codes of states: ``codes = sum_j [(projection @ s)_j > 0] 2^j`` (docs/algorithms/gpvd.md).

    Bit ``j`` of a code is 1 exactly where the ``j``-th random projection of the state is positive,
    so two states get the same code if and only if they have the same sign pattern
    ``phi(s) = sign(A s)`` (a projection of exactly 0 counts as not positive, i.e. bit 0).

    Args:
        states: ``[..., D]`` (any leading shape, e.g. ``[B, T, D]``; integer inputs are cast to
            float).
        projection: ``[k, D]``, ``1 <= k <= 62``: the fixed Gaussian matrix ``A`` (e.g.
            ``torch.randn(k, D, generator=g)`` drawn once per run and kept; the paper's ``k = 32``).

    Returns:
        int64 codes of shape ``states.shape[:-1]``, on ``states``' device, in ``[0, 2^k)``; no host
        synchronisation and no gradient.
    """
    if projection.dim() != 2:
        raise ValueError(f"simhash: projection must be [k, D], got shape {tuple(projection.shape)}")
    k, d = projection.shape
    if not 1 <= k <= MAX_SIMHASH_BITS:
        raise ValueError(
            f"simhash: projection has k={k} rows but an int64 code holds 1 to {MAX_SIMHASH_BITS} bits; "
            f"use a projection with 1 <= k <= {MAX_SIMHASH_BITS} rows (the paper uses k = 32)"
        )
    if states.dim() == 0 or states.shape[-1] != d:
        raise ValueError(
            f"simhash: states must be [..., D] with D = {d} (projection's columns), got shape "
            f"{tuple(states.shape)}"
        )
    dtype = projection.dtype if projection.is_floating_point() else torch.get_default_dtype()
    if states.is_floating_point():
        dtype = torch.promote_types(dtype, states.dtype)
    proj = states.detach().to(dtype) @ projection.detach().to(states.device, dtype).T  # [..., k]
    powers = torch.bitwise_left_shift(
        torch.ones((), dtype=torch.int64, device=states.device),
        torch.arange(k, dtype=torch.int64, device=states.device),
    )
    return ((proj > 0).to(torch.int64) * powers).sum(dim=-1)


def _group_ids(codes: Tensor) -> Tensor:
    """Dense group index in ``[0, B)`` of every sample (equal codes <=> equal ids), computed by a
    stable sort with no host synchronisation (unlike ``torch.unique``)."""
    sorted_codes, perm = torch.sort(codes, stable=True)
    new_group = torch.ones_like(sorted_codes, dtype=torch.bool)
    new_group[1:] = sorted_codes[1:] != sorted_codes[:-1]
    ids = torch.empty_like(perm)
    ids[perm] = torch.cumsum(new_group.to(torch.int64), dim=0) - 1
    return ids


@torch.no_grad()
def gpvd_weights(
    codes: Tensor,
    joint_actions: Tensor,
    td_targets: Tensor,
    td_errors: Tensor,
    greedy_values: Tensor,
    alpha: float = 0.2,
    *,
    optimal_weight: float = 1.0,
    valid: Tensor | None = None,
) -> Tensor:
    """GPVD's gradient-protection weights ``w`` of the TD loss ``mean(w (Q_tot - y)^2)``
    (docs/algorithms/gpvd.md).

    Over one batch, within each group ``g`` of equal ``codes``:

    - candidates ``C_g = {i in g valid : td_targets[i] > greedy_values[i]}``;
    - ``c* = argmax_{i in C_g} td_targets[i]``, the *first* (lowest) index among equal maxima;
    - ``i`` is interfering when ``i in g`` is valid, ``joint_actions[i] != joint_actions[c*]`` (some
      agent's action differs) while ``joint_actions[i, n] == joint_actions[c*, n]`` for at least
      one agent ``n``, and ``td_errors[i] * td_errors[c*] < 0`` (opposite signs; a zero TD error is
      never interfering);
    - ``w_i = alpha`` for interfering samples, ``w_i = optimal_weight`` for valid samples of a group
      with candidates whose joint action equals ``c*``'s (``c*`` included; the paper's optional
      ``> 1`` weight on ``a^{c*}`` samples, 1 by default), and ``w_i = 1`` otherwise. A group
      without candidates is all 1.

    "A batch" is the valid (filled) time steps of the sampled episodes, flattened to ``[B]``: pass
    them already flattened, or pass the padded ``[episodes * T]`` layout with ``valid`` marking the
    filled steps. Invalid samples are never candidates nor ``c*`` and get weight 1 (the caller
    masks them out of the loss anyway).

    Args:
        codes: int ``[B]``, e.g. :func:`simhash` of the states.
        joint_actions: int ``[B, N]``, the joint action taken (one column per agent).
        td_targets: float ``[B]``, ``y``.
        td_errors: float ``[B]``, ``Q_tot(tau, a) - y``.
        greedy_values: float ``[B]``, ``max_a' Q_tot(tau, a')`` (available actions only).
        alpha: weight of interfering samples (0.2 in the paper), ``>= 0``.
        optimal_weight: weight of the ``a^{c*}`` samples (keyword only), ``>= 0``.
        valid: bool ``[B]`` or ``None`` (all valid), keyword only.

    Returns:
        ``[B]`` weights in ``td_targets``' dtype and on its device, detached. Vectorised (a stable
        sort and scatter reductions; no Python loop over groups) with no host synchronisation.
    """
    for name, value in (("alpha", alpha), ("optimal_weight", optimal_weight)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ValueError(f"gpvd_weights: {name} must be a finite number >= 0, got {value!r}")
    if codes.dim() != 1:
        raise ValueError(f"gpvd_weights: codes must be [B], got shape {tuple(codes.shape)}")
    B = codes.shape[0]
    if joint_actions.dim() != 2 or joint_actions.shape[0] != B:
        raise ValueError(
            f"gpvd_weights: joint_actions must be [B, N] with B = {B}, got shape {tuple(joint_actions.shape)}"
        )
    per_sample = {"td_targets": td_targets, "td_errors": td_errors, "greedy_values": greedy_values}
    if valid is not None:
        per_sample["valid"] = valid
    for name, x in per_sample.items():
        if tuple(x.shape) != (B,):
            raise ValueError(f"gpvd_weights: {name} must be [B] with B = {B}, got shape {tuple(x.shape)}")
    if codes.is_floating_point() or codes.is_complex():
        raise ValueError(f"gpvd_weights: codes must be an integer tensor, got {codes.dtype}")

    device = td_targets.device
    dtype = td_targets.dtype if td_targets.is_floating_point() else torch.get_default_dtype()
    y = td_targets.detach().to(dtype)
    err = td_errors.detach().to(device)
    acts = joint_actions.detach().to(device)
    if valid is None:
        ok = torch.ones(B, dtype=torch.bool, device=device)
    else:
        ok = valid.detach().to(device, torch.bool)

    group = _group_ids(codes.detach().to(device))
    cand = ok & (td_targets.detach() > greedy_values.detach().to(device))  # compared in promoted dtype

    # Highest target among each group's candidates (-inf where a group has none) ...
    neg_inf = torch.full((), -math.inf, dtype=dtype, device=device)
    key = torch.where(cand, y, neg_inf)
    best = torch.full((B,), -math.inf, dtype=dtype, device=device).scatter_reduce(
        0, group, key, reduce="amax", include_self=True
    )
    # ... and the first candidate reaching it: c*[g] = B when group g has no candidate.
    index = torch.arange(B, device=device)
    at_best = cand & (key == best[group])
    c_star = torch.full((B,), B, dtype=index.dtype, device=device).scatter_reduce(
        0, group, torch.where(at_best, index, B), reduce="amin", include_self=True
    )[group]
    has_c = ok & (c_star < B)
    c = c_star.clamp(max=max(B - 1, 0))

    same_agent = acts == acts[c]  # [B, N]
    same_joint = same_agent.all(dim=-1)
    err_c = err[c]
    opposite = ((err > 0) & (err_c < 0)) | ((err < 0) & (err_c > 0))
    interfering = has_c & ~same_joint & same_agent.any(dim=-1) & opposite
    optimal = has_c & same_joint

    one = torch.ones((), dtype=dtype, device=device)
    w = torch.where(optimal, torch.full((), optimal_weight, dtype=dtype, device=device), one)
    return torch.where(interfering, torch.full((), alpha, dtype=dtype, device=device), w)
