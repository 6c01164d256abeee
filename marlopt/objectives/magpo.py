"""MAGPO: multi-agent guided policy optimisation (MAGPO paper, "Multi-Agent Guided Policy
Optimization", Sec. 4.2, Eqs. (9)-(12); docs/algorithms/magpo.md).

A centralised, autoregressive *guider* ``mu`` rolls out the data; the decentralised *learner* ``pi``
is what is deployed. Per sample (one agent ``i_j`` at one step), with ``mu = mu_phi(a | s, a_prev)``,
``mu_old`` the rollout guider and ``pi = pi_theta(a | o)``:

Guider loss (Eqs. (9)-(10)), to minimise::

    L_g = mean[ -min(rho_g A, c A) + m KL(mu || pi) ]
    rho_g = mu / mu_old,   q = mu / pi,
    c     = clip( clip(q, 1/delta, delta) * pi / mu_old, 1 - eps, 1 + eps )     (the double clip)
    m     = 1[ q not in (1/delta, delta) ]                                       (a constant)

Learner loss (Eqs. (11)-(12)), to minimise::

    L_l = mean[ KL(pi || mu) - lambda_rl min(rho A, clip(rho, 1 - eps, 1 + eps) A) ],   rho = pi / mu_old

``pi`` is detached inside the guider loss and ``mu_old`` is a rollout constant in both.

The double clip. Inside the band ``1/delta < q < delta`` the inner clip does nothing and
``clip(q) pi / mu_old = (mu / pi)(pi / mu_old) = rho_g``, so ``c = clip(rho_g, 1-eps, 1+eps)`` and the
guider loss is PPO's clipped surrogate of ``rho_g`` (``m = 0``: no KL term). Outside the band the
inner clip saturates at ``delta`` (or ``1/delta``), so ``c = clip(delta^{+-1} pi / mu_old)`` is a
constant: the ``c A`` branch of the min carries no gradient. With ``q >= delta`` one has
``rho_g >= delta pi / mu_old``, so for ``A > 0`` (the advantage pushing ``mu`` further above ``pi``)
the min selects ``c A`` and the advantage's gradient is stopped, exactly as PPO's clip stops a ratio
that left its region in the improving direction (likewise ``A < 0`` with ``q <= 1/delta``). The
advantage's gradient survives only where it pulls ``mu`` back towards ``pi`` (or in PPO's own
corrective cases). There ``m = 1`` and the KL term pulls ``mu`` back towards the learner.

CTDS baseline: ``delta = inf`` has no band edge, ``m = 0`` everywhere and ``c = clip(rho_g)``: the
guider loss is then exactly :func:`marlopt.objectives.ppo.ppo_clip_loss` of ``rho_g`` (same value and
gradient; ``kl_guider_learner`` is ignored), and ``rl_coef = 0`` makes the learner loss pure KL
distillation.

Numerics. The band test and the inner clip are done in log space
(``log q = guider_logp - learner_logp``, ``m = log q <= -log delta or log q >= log delta``), so
log-prob differences of any size cannot under/overflow into a wrong mask. ``q`` exactly at ``delta``
or ``1/delta`` counts as outside the band (``m = 1``, ``c`` constant). Every log-ratio is clamped to
``+-MAX_LOG_RATIO`` before ``exp``, the gradient passed straight through
(:func:`marlopt.objectives._masked.ratio`). Masked-out entries of any input (``inf``/``NaN``
padding) are selected away and reach neither the value nor the gradient.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

from marlopt.objectives._masked import MAX_LOG_RATIO, _check_broadcast, _count_mask, masked_mean, ratio

__all__ = ["magpo_band_stats", "magpo_guider_loss", "magpo_learner_loss"]


def _validate_delta(delta: float, where: str) -> float:
    if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not delta > 1.0:
        raise ValueError(f"{where}: delta (band of guider/learner ratios) must be a number > 1 (inf: no band), "
                         f"got {delta!r}")
    return float(delta)


def _validate_clip(clip: float, where: str) -> tuple[float, float]:
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not 0.0 < clip < 1.0:
        raise ValueError(f"{where}: clip must lie in (0, 1) (ratio bounds 1 - clip > 0), got {clip!r}")
    return 1.0 - float(clip), 1.0 + float(clip)


def _validate_rl_coef(rl_coef: float, where: str) -> float:
    if isinstance(rl_coef, bool) or not isinstance(rl_coef, numbers.Real) or not 0.0 <= rl_coef < math.inf:
        raise ValueError(f"{where}: rl_coef must be a finite number >= 0, got {rl_coef!r}")
    return float(rl_coef)


def _check_shapes(ref: Tensor, mask: Tensor | None, **others: Tensor) -> None:
    """Every input (and the mask) broadcasts to ``ref``'s per-sample shape without enlarging it."""
    for name, x in ({**others, "mask": mask} if mask is not None else others).items():
        _check_broadcast(ref, name, x)


def _counted(mask: Tensor | None) -> Tensor | None:
    return None if mask is None else mask != 0


def _select(counted: Tensor | None, x: Tensor) -> Tensor:
    """``x`` where counted, ``0`` elsewhere (padding garbage selected away, gradient zero there)."""
    if counted is None:
        return x
    return torch.where(counted, x, x.new_zeros(()))


def _kl_on(log_q: Tensor, delta: float) -> Tensor:
    """``m = 1[q not in (1/delta, delta)]`` from ``log q`` (bool; all False for ``delta = inf``)."""
    if math.isinf(delta):
        return torch.zeros_like(log_q, dtype=torch.bool)
    log_delta = math.log(delta)
    return (log_q <= -log_delta) | (log_q >= log_delta)


def magpo_guider_loss(
    guider_logp: Tensor,
    guider_logp_old: Tensor,
    learner_logp: Tensor,
    adv: Tensor,
    kl_guider_learner: Tensor,
    clip: float = 0.2,
    delta: float = 1.5,
    mask: Tensor | None = None,
) -> Tensor:
    """MAGPO guider loss (to minimise), MAGPO paper Eqs. (9)-(10) (docs/algorithms/magpo.md):

    ``L = mean_mask[ -min(rho_g A, c A) + m KL ]``, ``rho_g = exp(guider_logp - guider_logp_old)``,
    ``q = exp(guider_logp - learner_logp)``,
    ``c = clip(clip(q, 1/delta, delta) exp(learner_logp - guider_logp_old), 1 - eps, 1 + eps)``,
    ``m = 1`` where ``q <= 1/delta`` or ``q >= delta``, else ``0`` (a constant).

    Inside the band ``c = clip(rho_g)`` (PPO's clip); outside it ``c`` is a constant, so the advantage
    cannot push ``mu`` further from ``pi`` and the KL term pulls it back (module docstring).

    Args:
        guider_logp: log-prob of the taken action under the current guider, any shape ``[...]``.
        guider_logp_old: rollout (guider) log-prob, broadcastable to ``guider_logp`` (detached).
        learner_logp: the learner's log-prob of the same action, broadcastable (detached here: no
            gradient reaches the learner through this loss).
        adv: advantage, broadcastable (detached).
        kl_guider_learner: the caller's per-sample ``KL(mu || pi)``, broadcastable, differentiable in
            the guider; applied where ``m = 1`` only (selected, so a non-finite KL where ``m = 0``
            cannot leak).
        clip: PPO clip width ``eps`` in ``(0, 1)``.
        delta: band ``(1/delta, delta)`` of ``mu / pi``, ``> 1``; ``inf`` gives the CTDS guider
            (exactly :func:`marlopt.objectives.ppo.ppo_clip_loss`, no KL term).
        mask: optional, broadcastable; nonzero = counts (float masks are weights).

    Numerics: ``m`` and the inner clip are evaluated on ``log q`` (no under/overflow); ``q`` exactly
    at ``delta^{+-1}`` counts as outside (``m = 1``, ``c`` constant). Log-ratios are clamped to
    ``+-MAX_LOG_RATIO`` before ``exp`` (gradient straight through, as :func:`ratio`).
    """
    lo, hi = _validate_clip(clip, "magpo_guider_loss")
    delta = _validate_delta(delta, "magpo_guider_loss")
    _check_shapes(guider_logp, mask, guider_logp_old=guider_logp_old, learner_logp=learner_logp, adv=adv,
                  kl_guider_learner=kl_guider_learner)
    adv = adv.detach()
    lp_l, lp_old = learner_logp.detach(), guider_logp_old.detach()
    r_g, _ = ratio(guider_logp, lp_old, mask)  # r_g = 1 on padding
    log_q = _select(_counted(mask), guider_logp.detach() - lp_l)  # padding: in the band, m = 0
    kl_on = _kl_on(log_q, delta)  # all False for delta = inf (CTDS)
    log_delta = math.log(delta)
    # Outside the band (kl_on): clip(q, 1/delta, delta) pi / mu_old = exp(+-log delta + log pi - log mu_old),
    # a constant. Inside: exactly r_g (the same tensor, so c = clip(r_g) carries r_g's gradient and
    # delta = inf reproduces ppo_clip_loss bit for bit).
    log_c_out = (log_q.clamp(-log_delta, log_delta) + lp_l - lp_old).clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO)
    c = torch.where(kl_on, log_c_out.exp(), r_g).clamp(lo, hi)
    surrogate = torch.minimum(r_g * adv, c * adv)
    # selected, not multiplied: a non-finite KL where m = 0 cannot leak (0 * inf = NaN)
    kl_term = torch.where(kl_on, kl_guider_learner, kl_guider_learner.new_zeros(()))
    return masked_mean(kl_term - surrogate, mask)


def magpo_learner_loss(
    learner_logp: Tensor,
    guider_logp_old: Tensor,
    adv: Tensor,
    kl_learner_guider: Tensor,
    clip: float = 0.2,
    rl_coef: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """MAGPO learner loss (to minimise), MAGPO paper Eqs. (11)-(12) (docs/algorithms/magpo.md):

    ``L = mean_mask[ KL - rl_coef min(rho A, clip(rho, 1 - eps, 1 + eps) A) ]``,
    ``rho = exp(learner_logp - guider_logp_old)`` (the learner's ratio against the rollout guider).

    Args:
        learner_logp: the learner's log-prob of the taken action, any shape ``[...]``.
        guider_logp_old: rollout guider log-prob, broadcastable (a constant: detached).
        adv: advantage, broadcastable (detached).
        kl_learner_guider: the caller's per-sample ``KL(pi || mu)``, broadcastable, differentiable in
            the learner (the guider side should be detached by the caller).
        clip: PPO clip width ``eps`` in ``(0, 1)``.
        rl_coef: ``lambda_rl >= 0``, weight of the RL auxiliary term; ``0`` = pure KL distillation
            (the CTDS learner).
        mask: optional, broadcastable; nonzero = counts (float masks are weights).

    Numerics: the log-ratio is clamped to ``+-MAX_LOG_RATIO`` before ``exp`` (gradient straight
    through, as :func:`marlopt.objectives._masked.ratio`).
    """
    lo, hi = _validate_clip(clip, "magpo_learner_loss")
    rl_coef = _validate_rl_coef(rl_coef, "magpo_learner_loss")
    _check_shapes(learner_logp, mask, guider_logp_old=guider_logp_old, adv=adv, kl_learner_guider=kl_learner_guider)
    adv = adv.detach()
    rho, _ = ratio(learner_logp, guider_logp_old, mask)  # guider_logp_old detached; rho = 1 on padding
    surrogate = torch.minimum(rho * adv, rho.clamp(lo, hi) * adv)
    return masked_mean(kl_learner_guider - rl_coef * surrogate, mask)


@torch.no_grad()
def magpo_band_stats(
    guider_logp: Tensor,
    learner_logp: Tensor,
    delta: float,
    mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Guider/learner gap diagnostics over counted samples (no gradient, no host sync).

    Returns 0-d tensors:
        ``abs_log_ratio_mean``: (mask-weighted) mean of ``|log mu/pi| = |guider_logp - learner_logp|``;
        ``abs_log_ratio_max``: its max over counted samples;
        ``kl_on_frac``: (mask-weighted) fraction with ``m = 1`` (``q`` outside ``(1/delta, delta)``,
            edges included; always ``0`` for ``delta = inf``).
    With nothing counted all three are ``0``.
    """
    delta = _validate_delta(delta, "magpo_band_stats")
    _check_broadcast(guider_logp, "learner_logp", learner_logp)
    log_q = guider_logp.detach() - learner_logp.detach()
    w = _count_mask(log_q, mask)
    counted = None if w is None else w != 0
    abs_lr = _select(counted, log_q.abs())
    kl_on = _select(counted, _kl_on(log_q, delta).to(abs_lr.dtype))
    if abs_lr.numel() == 0:
        zero = abs_lr.new_zeros(())
        return {"abs_log_ratio_mean": zero, "abs_log_ratio_max": zero.clone(), "kl_on_frac": zero.clone()}
    abs_max = abs_lr.max()
    return {
        "abs_log_ratio_mean": masked_mean(abs_lr, w),
        "abs_log_ratio_max": abs_max,
        "kl_on_frac": masked_mean(kl_on, w),
    }

