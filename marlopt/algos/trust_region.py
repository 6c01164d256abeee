"""Trust-region machinery that writes parameters: HATRPO's backtracking line search.

The pure pieces of a TRPO step — flat gradients and parameters, conjugate gradient, Fisher-vector
products, the step size ``beta = sqrt(2 delta / x^T H x)`` — are tensor functions in
:mod:`marlopt.objectives.trpo`. What is here writes into the parameters it is given: setting them
from a flat vector, and trying ``theta_old + alpha^j beta x`` for ``j = 0, 1, ...`` until a step is
accepted (HARL paper, eq. 8 and Algorithm 3 in appendix C.3; docs/algorithms/hatrpo.md). The
user is :meth:`marlopt.algos.sequential.SequentialRule.trpo_update`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["set_flat_params_", "LineSearchResult", "backtracking_line_search"]


def set_flat_params_(params: Iterable[Tensor], flat: Tensor) -> None:
    """Copy ``flat`` (as produced by :func:`marlopt.objectives.trpo.flat_params`) into ``params`` in
    place (no autograd). Values are copied exactly (``copy_``, casting to each parameter's dtype)."""
    params = params if isinstance(params, list) else list(params)
    total = sum(p.numel() for p in params)
    if flat.numel() != total:
        raise ValueError(f"flat has {flat.numel()} elements, params have {total}")
    offset = 0
    with torch.no_grad():
        for p in params:
            k = p.numel()
            p.copy_(flat[offset : offset + k].view_as(p))
            offset += k


class LineSearchResult(NamedTuple):
    """Outcome of ``backtracking_line_search``.

    accepted: whether a step was accepted (else the parameters were restored to ``old_flat``).
    step_fraction: ``backtrack_coeff ** j`` of the accepted step, 0.0 if none.
    kl, improvement: mean KL (as ``evaluate`` measures it) and surrogate improvement of the accepted
        step; 0.0 if none (the parameters are then ``theta_old``).
    iterations: number of candidate steps evaluated.
    last_kl, last_improvement: values of the last candidate evaluated (diagnostics; NaN if none
        was evaluated).
    """

    accepted: bool
    step_fraction: float
    kl: float
    improvement: float
    iterations: int
    last_kl: float = math.nan
    last_improvement: float = math.nan


def backtracking_line_search(
    params: Iterable[Tensor],
    old_flat: Tensor,
    full_step: Tensor,
    expected_improve_rate: float,
    evaluate: Callable[[], tuple[float, float]],
    kl_threshold: float,
    accept_ratio: float = 0.5,
    backtrack_coeff: float = 0.8,
    max_backtracks: int = 10,
) -> LineSearchResult:
    """HATRPO/TRPO backtracking line search on ``theta = theta_old + coeff^j * full_step``.

    For ``j = 0 .. max_backtracks - 1``: set ``params`` to ``old_flat + coeff^j * full_step``,
    call ``evaluate() -> (improvement, kl)`` (``improvement`` = new surrogate - old surrogate,
    to be maximised; ``kl`` = mean ``KL(pi_old || pi_new)`` in whatever measure the trust region is
    stated in, the one whose Hessian gave the step: the true KL or HARL's code's measure,
    ``marlopt.objectives.trpo.policy_kl``; floats or 0-d tensors; called under ``torch.no_grad()``)
    and accept the first step with

        kl <= kl_threshold  and  improvement > 0  and
        improvement / (expected_improve_rate * coeff^j) > accept_ratio,

    where ``expected_improve_rate = g . full_step`` is the first-order improvement predicted
    for the full step (a non-positive or non-finite expectation never accepts; NaN values never
    accept). The accepted parameters are left in ``params``. If no step is accepted, ``params``
    are restored bit-identically to ``old_flat`` (its values are copied back, not recomputed as
    ``old + 0 * step``) and ``accepted=False`` is reported (HARL: "keep theta_old").
    """
    params = params if isinstance(params, list) else list(params)
    expected = float(expected_improve_rate)
    last_kl = last_imp = math.nan
    fraction = 1.0
    for j in range(max_backtracks):
        with torch.no_grad():
            set_flat_params_(params, old_flat + fraction * full_step)
            improvement, kl = evaluate()
        improvement, kl = float(improvement), float(kl)
        last_kl, last_imp = kl, improvement
        expected_j = expected * fraction
        ratio_ok = (
            expected_j > 0.0
            and math.isfinite(expected_j)
            and improvement / expected_j > accept_ratio
        )
        if kl <= kl_threshold and improvement > 0.0 and ratio_ok:
            return LineSearchResult(True, fraction, kl, improvement, j + 1, kl, improvement)
        fraction *= backtrack_coeff
    set_flat_params_(params, old_flat)
    return LineSearchResult(False, 0.0, 0.0, 0.0, max(max_backtracks, 0), last_kl, last_imp)
