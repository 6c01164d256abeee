"""HAPPO and HAA2C per-agent losses of the sequential update (HARL paper, Zhong et al., Sec. 3.2.2
and 3.5.1; docs/algorithms/happo.md, docs/algorithms/haa2c.md). HATRPO's trust-region step:
docs/algorithms/hatrpo.md.

In the sequential scheme agent ``i_m`` is trained on ``M_m = factor * A`` where ``factor`` is the
product of the already-updated agents' new/old ratios ``prod_{j<m} pi_new^{i_j} / pi_old^{i_j}``.
The factor is a constant for agent ``i_m``: it is detached here and multiplied *outside* the clip.
"""

from __future__ import annotations

from torch import Tensor

from marlopt.objectives._masked import _check_broadcast, masked_mean, ratio
from marlopt.objectives.ppo import ppo_clip_loss

__all__ = ["a2c_loss", "happo_loss"]


def happo_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    factor: Tensor,
    clip: float = 0.2,
    mask: Tensor | None = None,
) -> Tensor:
    """HAPPO loss (to minimise) for the agent currently being updated, HARL paper Eq. (11)
    (docs/algorithms/happo.md):

    ``L = -mean_mask[ min(r M, clip(r, 1 - eps, 1 + eps) M) ]``, ``M = factor * A``,

    with ``r`` this agent's ratio. The clip acts on ``r`` alone (never on ``r * factor``); the
    factor (a product of ratios, ``> 0``) is detached, so it receives no gradient. For
    ``factor > 0`` this equals HARL's ``factor * min(r A, clip(r) A)``.

    Args:
        logp, logp_old, adv, clip, mask: as :func:`marlopt.objectives.ppo_clip_loss`.
        factor: broadcastable to ``logp``; ``1`` for the first agent of the permutation.
    """
    _check_broadcast(logp, "factor", factor)
    _check_broadcast(logp, "adv", adv)
    return ppo_clip_loss(logp, logp_old, factor.detach() * adv.detach(), clip, mask)


def a2c_loss(
    logp: Tensor,
    logp_old: Tensor,
    adv: Tensor,
    factor: Tensor | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """HAA2C loss (to minimise), HARL paper Eq. (13) (docs/algorithms/haa2c.md):
    ``L = -mean_mask[ r M ]``, ``M = factor * A`` (no clip).

    ``factor`` (detached) defaults to 1. Its gradient w.r.t. ``logp`` equals the vanilla policy
    gradient ``-M`` at ``r = 1``. Log-ratio clamped to ``+-20`` (gradient straight through).
    """
    _check_broadcast(logp, "adv", adv)
    m = adv.detach()
    if factor is not None:
        _check_broadcast(logp, "factor", factor)
        m = factor.detach() * m
    r, _ = ratio(logp, logp_old, mask)
    return -masked_mean(r * m, mask)
