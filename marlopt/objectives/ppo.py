"""MAPPO's clipped surrogate (docs/algorithms/mappo.md; asymmetric ablation: MARS paper App. D.3.2)
and the ratio diagnostics the MARS paper's analysis is built on (its Sec. 4.3).
"""

from __future__ import annotations

import torch
from torch import Tensor

from marlopt.objectives._masked import _check_broadcast, _count_mask, masked_mean, ratio

__all__ = ["ppo_clip_loss", "ratio_diagnostics"]


def _clip_bounds(clip: float, clip_low: float | None, clip_high: float | None) -> tuple[float, float]:
    low = clip if clip_low is None else clip_low
    high = clip if clip_high is None else clip_high
    if not 0.0 <= low < 1.0:
        raise ValueError(f"the lower clip width must lie in [0, 1) (ratio bound 1 - clip_low > 0), got {low}")
    if not high >= 0.0:
        raise ValueError(f"the upper clip width must be >= 0, got {high}")
    return 1.0 - low, 1.0 + high


def ppo_clip_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    clip: float = 0.2,
    mask: Tensor | None = None,
    *,
    clip_low: float | None = None,
    clip_high: float | None = None,
) -> Tensor:
    """MAPPO clipped surrogate loss (to minimise).

    ``L = -mean_mask[ min(r A, clip(r, 1 - eps_low, 1 + eps_high) A) ]``, ``r = exp(logp - logp_old)``.

    With ``clip_low = clip_high = clip`` (the default) this is MAPPO (MARS paper Eq. (2), GRASP paper
    Eq. (6); docs/algorithms/mappo.md);
    independent ``clip_low`` / ``clip_high`` give the MARS paper's asymmetric-MAPPO ablation
    (clip to ``[1 - eps_low, 1 + eps_high]``). The gradient w.r.t. ``logp`` is exactly zero for a
    sample that crossed the boundary in its advantage-improving direction (``A > 0, r > 1 + eps_high``
    or ``A < 0, r < 1 - eps_low``).

    Args:
        logp: log-prob of the taken action under the current policy, any shape ``[...]``
            (multi-dimensional actions: already summed over action dims).
        logp_old: rollout log-prob, broadcastable to ``logp`` (detached here).
        adv: advantage, broadcastable to ``logp`` (detached here).
        clip: symmetric clip width ``eps``.
        mask: optional, broadcastable to ``logp``; 1 = counts (e.g. the active mask).
        clip_low, clip_high: override the lower / upper width (default ``clip``).

    Numerics: the log-ratio is clamped to ``+-MAX_LOG_RATIO`` (20) before ``exp``, gradient passed
    straight through (see :func:`marlopt.objectives._masked.ratio`).
    """
    lo, hi = _clip_bounds(clip, clip_low, clip_high)
    _check_broadcast(logp, "adv", adv)
    adv = adv.detach()
    r, _ = ratio(logp, logp_old, mask)
    surrogate = torch.minimum(r * adv, r.clamp(lo, hi) * adv)
    return -masked_mean(surrogate, mask)


def diagnostic_log_ratio(logp: Tensor, logp_old: Tensor) -> Tensor:
    """``log r = logp - logp_old`` in float64, clamped to ``+-700`` so that ``exp`` stays finite."""
    return (logp.detach().double() - logp_old.detach().double()).clamp(-700.0, 700.0)


def log_ratio_extremes(lr: Tensor, counted: Tensor) -> Tensor:
    """``[max, min]`` of ``lr`` over the ``counted`` entries (``[-inf, inf]`` when none count)."""
    inf = torch.tensor(float("inf"), dtype=lr.dtype, device=lr.device)
    return torch.stack([torch.where(counted, lr, -inf).max(), torch.where(counted, lr, inf).min()])


@torch.no_grad()
def ratio_diagnostics(
    logp: Tensor,
    logp_old: Tensor,
    mask: Tensor | None = None,
    low: float = 0.8,
    high: float = 1.2,
) -> dict[str, float]:
    """Ratio statistics over counted samples (no gradient; computed in float64, unclamped).

    Returns Python floats:
        ``ratio_max``, ``ratio_min``: max / min of ``r = exp(logp - logp_old)`` (the MARS paper's
            per-update diagnostics; ``log r`` is clamped to ``+-700`` only to stay finite).
        ``ratio_frac_outside``: fraction of counted samples with ``r < low`` or ``r > high``.
        ``approx_kl``: the k3 estimator ``mean((r - 1) - log r)`` of ``KL(pi_old || pi)`` (>= 0).
    With nothing counted: ``ratio_max = ratio_min = 1``, ``ratio_frac_outside = approx_kl = 0``.
    """
    _check_broadcast(logp, "logp_old", logp_old)
    lr = diagnostic_log_ratio(logp, logp_old)
    w = _count_mask(lr, mask)
    counted = torch.ones_like(lr, dtype=torch.bool) if w is None else w != 0
    if lr.numel() == 0 or not bool(counted.any()):
        return {"ratio_max": 1.0, "ratio_min": 1.0, "ratio_frac_outside": 0.0, "approx_kl": 0.0}
    r = lr.exp()
    outside = ((r < low) | (r > high)).to(lr.dtype)
    stats = torch.cat(
        [log_ratio_extremes(lr, counted).exp(), torch.stack([masked_mean(outside, w), masked_mean((r - 1.0) - lr, w)])]
    ).tolist()
    return dict(zip(("ratio_max", "ratio_min", "ratio_frac_outside", "approx_kl"), stats))


def ppo_clip_region(clip: float = 0.2, clip_low: float | None = None, clip_high: float | None = None) -> tuple[float, float]:
    """The ratio region ``[1 - clip_low, 1 + clip_high]`` of :func:`ppo_clip_loss` with these arguments."""
    return _clip_bounds(clip, clip_low, clip_high)


ppo_clip_loss.ratio_region = ppo_clip_region  # type: ignore[attr-defined]  # read by ratio/frac_outside
