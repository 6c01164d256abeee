"""MASPO: simple policy optimisation applied per agent (as restated in the MARS paper, Eq. (3) and
Sec. 3.1.2), and the MARS paper's asymmetric-MASPO ablation (its App. D.3.2); docs/algorithms/maspo.md.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from marlopt.objectives._masked import _check_broadcast, masked_mean, ratio

__all__ = ["spo_loss"]


def spo_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    eps: float = 0.2,
    mask: Tensor | None = None,
    *,
    rho_plus: float | None = None,
    rho_minus: float | None = None,
) -> Tensor:
    """MASPO loss (to minimise).

    Symmetric (default; MARS paper Eq. (3)):
        ``L = -mean_mask[ r A - |A| / (2 eps) * (r - 1)^2 ]``,
    whose per-sample optimum (``dJ/dr = A - |A| (r - 1) / eps = 0``) is ``r = 1 + eps sign(A)``.

    Asymmetric (MARS paper ablation, App. D.3.2), when ``rho_plus`` and/or ``rho_minus`` are given:
        ``L = -mean_mask[ r A - |A| / (2 |rho - 1|) * (r - 1)^2 ]``, ``rho = rho_plus if A > 0 else rho_minus``,
    so the per-sample optimum sits at ``r = rho``. A missing one of the two defaults to
    ``1 + eps`` / ``1 - eps``. Samples with ``A = 0`` contribute nothing.

    Args:
        logp, logp_old, adv, mask: as :func:`marlopt.objectives.ppo_clip_loss` (``logp_old`` and
            ``adv`` detached; mask 1 = counts).
        eps: trust-region width (``> 0``).
        rho_plus: expansion target (``> 1``). rho_minus: contraction target (in ``(0, 1)``).

    Numerics: log-ratio clamped to ``+-20`` before ``exp`` (gradient straight through), so
    ``(r - 1)^2`` stays finite in float32.
    """
    if not (eps > 0.0 and math.isfinite(eps)):
        raise ValueError(f"spo_loss: eps must be a finite number > 0, got {eps}")
    if rho_plus is not None and not (rho_plus > 1.0 and math.isfinite(rho_plus)):
        raise ValueError(f"spo_loss: rho_plus (expansion target) must be finite and > 1, got {rho_plus}")
    if rho_minus is not None and not 0.0 < rho_minus < 1.0:
        raise ValueError(f"spo_loss: rho_minus (contraction target) must lie in (0, 1), got {rho_minus}")
    width_plus = eps if rho_plus is None else rho_plus - 1.0
    width_minus = eps if rho_minus is None else 1.0 - rho_minus

    _check_broadcast(logp, "adv", adv)
    adv = adv.detach()
    r, _ = ratio(logp, logp_old, mask)
    if width_plus == width_minus:
        coef = adv.abs() / (2.0 * width_plus)
    else:
        coef = torch.where(adv > 0, adv / (2.0 * width_plus), -adv / (2.0 * width_minus))
    surrogate = r * adv - coef * (r - 1.0) ** 2
    return -masked_mean(surrogate, mask)


def spo_region(eps: float = 0.2, rho_plus: float | None = None, rho_minus: float | None = None) -> tuple[float, float]:
    """Where :func:`spo_loss` puts its per-sample optima: ``[rho_minus, rho_plus]``, each
    defaulting to ``1 -+ eps``."""
    return (1.0 - eps if rho_minus is None else rho_minus), (1.0 + eps if rho_plus is None else rho_plus)


spo_loss.ratio_region = spo_region  # type: ignore[attr-defined]  # read by ratio/frac_outside
