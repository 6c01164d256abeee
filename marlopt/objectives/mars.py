"""MARS: multi-agent ratio symmetry (MARS paper, "Rethinking Ratio-Based Trust Regions for Policy
Optimization in Multi-Agent Reinforcement Learning", Sec. 3.2 and App. B; docs/algorithms/mars.md).

The penalty is MASPO's ``(r - 1)^2`` symmetrised geometrically under ``r -> 1/r``:

    ``P(r) = sqrt((r - 1)^2 (1/r - 1)^2) = (r - 1)^2 / r = r + 1/r - 2``

(MARS paper Eq. (7), App. B.2; zero at ``r = 1``, ``P(r) = P(1/r)``, ``P -> inf`` as ``r -> 0``).
The per-sample surrogate (Eqs. (9)-(10)) is
``J = r A - lambda P(r)`` with ``dJ/dr = A - lambda (1 - 1/r^2)``; the weight
``lambda = A rho^2 / (rho^2 - 1)``, ``rho = rho_plus if A > 0 else rho_minus``, puts the stationary
point of ``J`` exactly at ``r = rho`` (MARS paper Eq. (11); App. B.5, Eqs. (34)-(41)).

Target parameterisations (all selectable):
- independent ``rho_plus > 1``, ``rho_minus in (0, 1)`` (MARS);
- multiplicatively symmetric ``rho_minus = 1 / rho_plus`` (``rho_minus=None``, or
  :func:`multiplicative_targets`), the default ``rho_plus = 1.2``;
- additively symmetric ``rho_+- = 1 +- eps`` (:func:`additive_targets`).
(MARS paper App. D.3.2; which config selects which: docs/algorithms/mars.md.)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marlopt.objectives._masked import _check_broadcast, masked_mean, ratio

__all__ = ["additive_targets", "mars_loss", "mars_penalty", "mars_weight", "multiplicative_targets"]


def _validate_targets(rho_plus: float, rho_minus: float | None, where: str) -> tuple[float, float]:
    if not (isinstance(rho_plus, (int, float)) and math.isfinite(rho_plus) and rho_plus > 1.0):
        raise ValueError(f"{where}: rho_plus (expansion target) must be a finite number > 1, got {rho_plus!r}")
    if rho_minus is None:
        rho_minus = 1.0 / rho_plus
    if not (isinstance(rho_minus, (int, float)) and 0.0 < rho_minus < 1.0):
        raise ValueError(f"{where}: rho_minus (contraction target) must lie in (0, 1), got {rho_minus!r}")
    return float(rho_plus), float(rho_minus)


def additive_targets(eps: float) -> tuple[float, float]:
    """Additively symmetric targets ``(1 + eps, 1 - eps)`` (MAPPO-style), ``eps in (0, 1)``."""
    if not 0.0 < eps < 1.0:
        raise ValueError(f"additive_targets: eps must lie in (0, 1) so that 1 - eps > 0, got {eps!r}")
    return 1.0 + eps, 1.0 - eps


def multiplicative_targets(rho_plus: float) -> tuple[float, float]:
    """Multiplicatively symmetric targets ``(rho_plus, 1 / rho_plus)``, ``rho_plus > 1``."""
    return _validate_targets(rho_plus, None, "multiplicative_targets")


def mars_penalty(r: Tensor) -> Tensor:
    """The MARS penalty ``P(r) = (r - 1)^2 / r = r + 1/r - 2`` (MARS paper Eq. (7); elementwise,
    ``r > 0``)."""
    return (r - 1.0) ** 2 / r


def mars_weight(adv: Tensor, rho_plus: float = 1.2, rho_minus: float | None = None) -> Tensor:
    """Target-aligned penalty weight ``lambda = A rho^2 / (rho^2 - 1)``, ``rho = rho_plus if A > 0
    else rho_minus`` (MARS paper Eq. (11); ``>= 0`` everywhere, exactly ``0`` where ``A = 0``; both
    branches finite)."""
    rho_plus, rho_minus = _validate_targets(rho_plus, rho_minus, "mars_weight")
    k_plus = rho_plus**2 / (rho_plus**2 - 1.0)
    k_minus = rho_minus**2 / (rho_minus**2 - 1.0)  # negative; times A < 0 gives lambda > 0
    return torch.where(adv > 0, adv * k_plus, adv * k_minus)


def mars_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    rho_plus: float = 1.2,
    rho_minus: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """MARS loss (to minimise), MARS paper Eq. (12) (docs/algorithms/mars.md):

    ``L = -mean_mask[ r A - lambda (r + 1/r - 2) ]``, ``lambda = A rho^2 / (rho^2 - 1)``,
    ``rho = rho_plus if A > 0 else rho_minus``, ``r = exp(logp - logp_old)``.

    Per sample, ``dJ/dr`` vanishes exactly at ``r = rho`` and nowhere else, tends to ``+inf`` as
    ``r -> 0`` for ``A < 0`` (barrier against probability extinction, Prop. 3.1), and has no
    zero-gradient interval (no truncation, Prop. 3.2). ``A = 0`` samples contribute nothing.

    Args:
        logp, logp_old, adv, mask: as :func:`marlopt.objectives.ppo_clip_loss` (``logp_old`` and
            ``adv`` detached; mask 1 = counts).
        rho_plus: expansion target ``> 1`` (default 1.2).
        rho_minus: contraction target in ``(0, 1)``; ``None`` means ``1 / rho_plus``.

    Numerics: ``P`` is evaluated as ``4 sinh^2(log r / 2)`` (equal to ``(r-1)^2 / r``, accurate near
    ``r = 1``); the log-ratio is clamped to ``+-20`` before use (gradient straight through).
    """
    rho_plus, rho_minus = _validate_targets(rho_plus, rho_minus, "mars_loss")
    _check_broadcast(logp, "adv", adv)
    adv = adv.detach()
    r, log_r = ratio(logp, logp_old, mask)
    lam = mars_weight(adv, rho_plus, rho_minus)
    penalty = 4.0 * torch.sinh(0.5 * log_r) ** 2
    return -masked_mean(r * adv - lam * penalty, mask)


def mars_region(rho_plus: float = 1.2, rho_minus: float | None = None) -> tuple[float, float]:
    """The targets of :func:`mars_loss` as a ratio region ``[rho_minus, rho_plus]``."""
    rho_plus, rho_minus = _validate_targets(rho_plus, rho_minus, "mars_region")
    return rho_minus, rho_plus


mars_loss.ratio_region = mars_region  # type: ignore[attr-defined]  # read by ratio/frac_outside
