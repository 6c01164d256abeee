"""Small shared helpers of the objectives: masked means, shape checks and the probability ratio.

Masks follow one convention everywhere in :mod:`marlopt.objectives`: ``mask`` is broadcastable to
the per-sample tensor, a nonzero (``1`` / ``True``) entry counts, a zero entry does not, and a mean
is taken over the counted elements only. Float masks act as weights (``sum(w x) / sum(w)``).
Masked-out entries are *selected away* (``torch.where``), never multiplied by zero, so padding that
holds ``inf`` or ``NaN`` cannot leak into the value of a loss (docs/algorithms/on_policy_machinery.md,
"Masks").
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["MAX_LOG_RATIO", "masked_mean", "masked_mean_std", "ratio"]

#: The log-ratio ``logp - logp_old`` is clamped to ``[-MAX_LOG_RATIO, MAX_LOG_RATIO]`` before
#: ``exp`` (``e^20 ~ 4.9e8``): the squared and reciprocal terms of MASPO / MARS stay finite in
#: float32 for any log-prob difference. See :func:`ratio` for how gradients pass the clamp.
MAX_LOG_RATIO: float = 20.0


def _check_broadcast(ref: Tensor, name: str, other: Tensor) -> None:
    """Raise ``ValueError`` unless ``other`` broadcasts to ``ref``'s shape *without enlarging it*.

    This rejects the classic silent bug ``[B] op [B, 1] -> [B, B]``.
    """
    try:
        shape = torch.broadcast_shapes(ref.shape, other.shape)
    except RuntimeError:
        shape = None
    if shape != ref.shape:
        raise ValueError(
            f"{name} of shape {tuple(other.shape)} does not broadcast to the per-sample shape "
            f"{tuple(ref.shape)}"
        )


def _count_mask(x: Tensor, mask: Tensor | None) -> Tensor | None:
    """``mask`` as a float weight tensor of ``x``'s shape and dtype (``None`` stays ``None``)."""
    if mask is None:
        return None
    _check_broadcast(x, "mask", mask)
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    return torch.broadcast_to(mask.to(dtype), x.shape)


def masked_mean(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean of ``x`` over the elements where ``mask`` is nonzero: ``sum(m x) / sum(m)``.

    Args:
        x: any shape.
        mask: ``None`` (plain mean) or broadcastable to ``x`` (bool, or float weights >= 0).

    Returns:
        A scalar. When the mask counts nothing it is ``0`` (not ``NaN``) and the gradient w.r.t.
        ``x`` is defined and zero, so an all-padding minibatch is a harmless no-op.
    """
    w = _count_mask(x, mask)
    if w is None:
        return x.mean()
    num = torch.where(w != 0, x * w, torch.zeros((), dtype=x.dtype, device=x.device)).sum()
    den = w.sum()
    # den == 0 only when every weight is 0, and then num == 0: return 0 with a finite gradient.
    safe_den = torch.where(den > 0, den, torch.ones_like(den))
    return num / safe_den


def masked_mean_std(x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Masked mean and (population, ``ddof=0``) standard deviation of ``x`` over counted elements.

    ``std = sqrt(masked_mean((x - mean)^2))``, as ``np.nanstd`` in the MAPPO reference's advantage
    normalisation (where inactive agents are excluded). With nothing counted both are ``0``.
    """
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return mean, var.clamp_min(0.0).sqrt()


def ratio(
    logp: Tensor,
    logp_old: Tensor,
    mask: Tensor | None = None,
    max_log_ratio: float = MAX_LOG_RATIO,
) -> tuple[Tensor, Tensor]:
    """Probability ratio ``r = exp(logp - logp_old)`` and the log-ratio it was computed from.

    ``logp_old`` is detached (the rollout policy is a constant). The log-ratio is clamped to
    ``[-max_log_ratio, max_log_ratio]`` *in the forward value only*: the gradient passes straight
    through the clamp (``d lr_clamped / d lr = 1``), so a sample beyond the clamp keeps the
    direction of its gradient (evaluated at the clamped ratio) instead of silently getting zero.
    For ``|logp - logp_old| <= max_log_ratio`` (every realistic case) nothing changes.
    Masked-out entries get log-ratio ``0`` (``r = 1``) so padding cannot produce ``inf``/``NaN``.

    Returns:
        ``(r, log_r)``, both of ``logp``'s shape.
    """
    _check_broadcast(logp, "logp_old", logp_old)
    lr = logp - logp_old.detach()
    if mask is not None:
        _check_broadcast(lr, "mask", mask)
        lr = torch.where(mask != 0, lr, torch.zeros((), dtype=lr.dtype, device=lr.device))
    lr = lr + (lr.detach().clamp(-max_log_ratio, max_log_ratio) - lr.detach())
    return lr.exp(), lr
