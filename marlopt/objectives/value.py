"""The clipped value loss of MAPPO / HARL (docs/algorithms/on_policy_machinery.md, "Value loss").

Everything here lives in the critic's output space: with a :class:`marlopt.returns.ValueNorm`
that is the *normalised* space, so ``values``, ``values_old`` and ``returns`` must all be
normalised (``returns = value_norm.normalize(R)``), and the clip width applies there
(docs/algorithms/on_policy_machinery.md; Mava PR#805).
"""

from __future__ import annotations

import torch
from torch import Tensor

from marlopt.objectives._masked import _check_broadcast, masked_mean

__all__ = ["huber", "value_loss"]


def huber(x: Tensor, delta: float | None) -> Tensor:
    """Elementwise ``l(x)``: ``0.5 x^2`` if ``|x| <= delta`` else ``delta (|x| - delta / 2)``;
    ``delta=None`` gives ``x^2 / 2`` (the MAPPO reference's ``mse_loss``)."""
    if delta is None:
        return 0.5 * x**2
    ax = x.abs()
    return torch.where(ax <= delta, 0.5 * x**2, delta * (ax - 0.5 * delta))


def value_loss(
    values: Tensor,
    values_old: Tensor,
    returns: Tensor,
    clip: float | None = 0.2,
    huber_delta: float | None = 10.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Clipped value loss (to minimise), MAPPO convention (GRASP paper Eq. (9) with the square;
    Huber and its width from HARL paper Table 4):

    ``V_clip = V_old + clip(V - V_old, -eps, eps)``,
    ``L = mean_mask[ max( l(V - R), l(V_clip - R) ) ]``,

    with ``l`` the Huber function of width ``huber_delta`` (``0.5 x^2`` for ``|x| <= d``, else
    ``d (|x| - d/2)``), or, with ``huber_delta=None``, ``l(x) = x^2 / 2`` -- half the squared error,
    exactly the MAPPO reference's ``mse_loss`` (so this is *half* of ``F.mse_loss``). Note the two
    branches agree for ``|x| <= d``: Huber only changes large errors. ``clip=None`` disables the
    clip: ``L = mean_mask[ l(V - R) ]``.

    Args:
        values: current critic output, any shape ``[...]`` (normalised space).
        values_old: critic output at rollout time, broadcastable to ``values`` (detached).
        returns: regression targets in the same (normalised) space, broadcastable (detached).
        clip: value clip width ``eps > 0`` or ``None``.
        huber_delta: Huber width ``> 0`` or ``None`` (MSE/2).
        mask: optional, broadcastable to ``values``; 1 = counts.
    """
    if clip is not None and not clip > 0.0:
        raise ValueError(f"value_loss: clip must be > 0 or None, got {clip}")
    if huber_delta is not None and not huber_delta > 0.0:
        raise ValueError(f"value_loss: huber_delta must be > 0 or None, got {huber_delta}")
    _check_broadcast(values, "values_old", values_old)
    _check_broadcast(values, "returns", returns)
    returns = returns.detach()
    loss = huber(values - returns, huber_delta)
    if clip is not None:
        values_old = values_old.detach()
        clipped = values_old + (values - values_old).clamp(-clip, clip)
        loss = torch.maximum(loss, huber(clipped - returns, huber_delta))
    return masked_mean(loss, mask)
