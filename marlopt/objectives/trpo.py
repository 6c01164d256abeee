"""HATRPO's pure pieces: flat parameters/gradients, conjugate gradient, Fisher-vector products and
the trust-region step size.

The HATRPO update of agent ``i_m`` (HARL paper, eq. 8 and Algorithm 3 in appendix C.3; see also
docs/algorithms/hatrpo.md):

    g = grad_theta mean(r M)  at theta_old         (M: the sequential advantage factor x A)
    H = Hessian of mean KL(pi_old(.|o) || pi_theta(.|o)) at theta_old   (the Fisher matrix; or of
        HARL's code's discrete measure, harl_discrete_kl: policy_kl picks, algo.kl_measure)
    x ~= H^{-1} g                                   (conjugate gradient, 10 iterations,
                                                     on (H + damping I), damping 0.1)
    beta = sqrt(2 delta / (x^T H x))                (full step meets the quadratic KL model = delta)
    theta = theta_old + alpha^j beta x,  j = 0, 1, ...   (backtracking, alpha = 0.5 or 0.8)

accepting the first ``j`` with mean KL (the same measure) <= delta, actual improvement > 0 and
improvement / (alpha^j * expected improvement) > accept_ratio (0.5), where the expected
improvement of the full step is ``g . (beta x)``; if none is accepted, ``theta_old`` is kept.

Nothing here owns a module or an optimiser or writes a parameter: ``params`` is any list of
tensors (e.g. ``list(actor.parameters())``), only read; the caller builds the surrogate and KL with
its own policy. The backtracking line search, which writes the candidate parameters, is
:func:`marlopt.algos.trust_region.backtracking_line_search`. Typical use::

    params = list(actor.parameters())
    g = flat_grad(surrogate, params, retain_graph=True)          # surrogate = mean(r * M)
    fvp = make_fisher_vector_product(mean_kl, params, damping=0.1)
    x = conjugate_gradient(fvp, g, iters=10)
    Hx = fvp(x)
    beta = trpo_step_size(x, Hx, kl_threshold)
    full_step = beta * x
    old = flat_params(params)
    result = backtracking_line_search(params, old, full_step, float(g @ full_step),  # algos.trust_region
                                      evaluate, kl_threshold)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor

__all__ = [
    "flat_grad",
    "flat_params",
    "conjugate_gradient",
    "make_fisher_vector_product",
    "fisher_vector_product",
    "trpo_step_size",
    "KL_MEASURES",
    "harl_discrete_kl",
    "policy_kl",
]

#: The KL measures HATRPO can constrain (``algo.kl_measure``): ``true`` = ``KL(pi_old || pi_theta)``
#: (the paper's), ``harl`` = the quantity HARL's code computes (:func:`harl_discrete_kl`).
KL_MEASURES = ("true", "harl")

#: The logit HARL's categorical head gives unavailable actions (``x[available_actions == 0] = -1e10``);
#: the same value as ``marlopt.models.distributions.MASKED_LOGIT``.
HARL_MASKED_LOGIT = -1e10


def _as_list(params: Iterable[Tensor]) -> list[Tensor]:
    return params if isinstance(params, list) else list(params)


def _flatten(tensors: Sequence[Tensor | None], like: Sequence[Tensor]) -> Tensor:
    """Concatenate flattened tensors, zeros (of the parameter's shape) where ``None``."""
    return torch.cat(
        [
            (t if t is not None else torch.zeros_like(p)).reshape(-1)
            for t, p in zip(tensors, like)
        ]
    )


def flat_grad(
    output: Tensor,
    params: Iterable[Tensor],
    retain_graph: bool = False,
    create_graph: bool = False,
) -> Tensor:
    """Gradient of the scalar ``output`` w.r.t. ``params``, flattened and concatenated in the
    order of ``params`` (zeros for parameters that ``output`` does not depend on)."""
    params = _as_list(params)
    grads = torch.autograd.grad(
        output,
        params,
        retain_graph=retain_graph,
        create_graph=create_graph,
        allow_unused=True,
    )
    return _flatten(grads, params)


def flat_params(params: Iterable[Tensor]) -> Tensor:
    """A detached copy of ``params`` flattened and concatenated (always a new tensor; written back
    by :func:`marlopt.algos.trust_region.set_flat_params_`)."""
    return torch.cat([p.detach().reshape(-1) for p in _as_list(params)])


def conjugate_gradient(
    Avp: Callable[[Tensor], Tensor],
    b: Tensor,
    iters: int = 10,
    residual_tol: float = 1e-10,
) -> Tensor:
    """Solve ``A x = b`` for symmetric positive definite ``A`` given only ``v -> A v``.

    Standard CG from ``x_0 = 0`` for at most ``iters`` iterations, stopping early once the
    squared residual norm ``||b - A x||^2`` falls below ``residual_tol`` (the convention of the
    TRPO/HARL reference code), or if a direction of non-positive curvature ``p^T A p <= 0``
    appears (then the current iterate is returned). In exact arithmetic it solves an ``k x k``
    system in ``k`` iterations."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = torch.dot(r, r)
    if float(rr) < residual_tol:
        return x
    for _ in range(iters):
        Ap = Avp(p)
        pAp = torch.dot(p, Ap)
        if not float(pAp) > 0.0:
            break
        alpha = rr / pAp
        x = x + alpha * p
        r = r - alpha * Ap
        new_rr = torch.dot(r, r)
        if float(new_rr) < residual_tol:
            break
        p = r + (new_rr / rr) * p
        rr = new_rr
    return x


def make_fisher_vector_product(
    kl: Tensor, params: Iterable[Tensor], damping: float = 0.1
) -> Callable[[Tensor], Tensor]:
    """Return ``v -> (H + damping I) v`` with ``H`` the Hessian of the scalar ``kl`` (mean
    ``KL(pi_old || pi_theta)``, ``pi_old`` detached) w.r.t. ``params``, by double backprop.

    ``grad(kl)`` is built once with ``create_graph=True``; each call then costs one backward of
    ``grad(kl) . v`` (``v`` treated as a constant), so the callable is cheap to use inside
    ``conjugate_gradient``. The callable keeps the autograd graph of ``kl`` alive: drop it when
    done. At ``theta = theta_old`` ``H`` is the Fisher information matrix of the policy."""
    params = _as_list(params)
    grads = torch.autograd.grad(kl, params, create_graph=True, allow_unused=True)
    pairs = [(g, p) for g, p in zip(grads, params) if g is not None and g.requires_grad]
    sizes = [p.numel() for p in params]
    has_graph = [g is not None and g.requires_grad for g in grads]
    flat_g = torch.cat([g.reshape(-1) for g, _ in pairs]) if pairs else None
    active = [p for _, p in pairs]

    def fvp(v: Tensor) -> Tensor:
        v = v.detach()
        out = damping * v
        if flat_g is None:
            return out
        # the entries of v that belong to the parameters grad(kl) depends on
        chunks = torch.split(v, sizes)
        v_active = torch.cat([c for c, keep in zip(chunks, has_graph) if keep])
        hv = torch.autograd.grad(
            torch.dot(flat_g, v_active), active, retain_graph=True, allow_unused=True
        )
        hv_full: list[Tensor | None] = []
        it = iter(hv)
        for keep in has_graph:
            hv_full.append(next(it) if keep else None)
        return out + _flatten(hv_full, params)

    return fvp


def fisher_vector_product(
    kl: Tensor, params: Iterable[Tensor], v: Tensor, damping: float = 0.1
) -> Tensor:
    """One-shot ``(H + damping I) v`` (see ``make_fisher_vector_product``; prefer that one when
    several products with the same ``kl`` are needed, e.g. inside conjugate gradient)."""
    return make_fisher_vector_product(kl, params, damping)(v)


def trpo_step_size(x: Tensor, Hx: Tensor, kl_threshold: float) -> float:
    """``beta = sqrt(2 delta / (x^T H x))``: the scale at which the quadratic KL model
    ``1/2 (beta x)^T H (beta x)`` equals ``delta = kl_threshold`` (HARL eq. 8 / Algorithm 3).
    ``Hx`` is ``H x`` (with or without the CG damping, the caller's choice; HARL uses the damped
    product). Returns 0.0 when ``x^T H x`` is not positive and finite (no step)."""
    shs = float(torch.dot(x.reshape(-1), Hx.reshape(-1)))
    if not (shs > 0.0 and math.isfinite(shs)):
        return 0.0
    return math.sqrt(2.0 * kl_threshold / shs)


def harl_discrete_kl(logits_old: Tensor, logits_new: Tensor, avail: Tensor | None = None) -> Tensor:
    """HARL's discrete "KL", per sample: ``sum_a [exp(D_a) - 1 - D_a]``, ``D_a = log pi_new(a) - log
    pi_old(a)``, summed over ALL ``A`` actions and not weighted by ``pi_old``.

    This is what HARL's code (``harl/utils/trpo_util.py``: ``kl_approx(old_logits, new_logits)``,
    then ``.sum`` over the action axis) uses for discrete actions in both the Fisher-vector product
    and the line search's KL check, and what its tuned ``kl_threshold`` values are calibrated to.
    Each term is ``>= 0`` and ``= 1/2 D_a^2 + O(D^3)``, so its Hessian at ``theta_old`` is
    ``sum_a grad(log pi(a)) grad(log pi(a))^T``, against the Fisher ``sum_a pi(a) grad(..) grad(..)^T``
    of the true KL: exactly ``A`` times larger for a uniform policy, up to ``1 / min_a pi(a)`` times
    for peaked ones (see ``docs/algorithms/hatrpo.md``).

    Shapes: ``logits_old``, ``logits_new``: ``[..., A]`` (normalised log-probabilities or raw logits:
    both are normalised here with ``log_softmax``, as torch's ``Categorical``, which HARL uses,
    normalises its ``logits``; ``log_softmax`` of log-probabilities is themselves). ``avail``:
    optional bool ``[..., A]`` (True = available), broadcastable; unavailable actions get the logit
    ``-1e10`` before normalising, exactly as HARL's ``Categorical`` head (and
    :class:`~marlopt.models.distributions.MaskedCategorical`) does. Returns ``[...]``; the caller
    takes the (masked) mean over samples, as for the true KL.

    Unavailable actions, as in HARL: they stay in the sum. Their ``D_a`` is mathematically
    ``lse_old - lse_new`` (both logits pinned at ``-1e10``, ``lse`` = the log-normaliser of the
    available logits); in float32 ``-1e10 - lse`` rounds to ``-1e10`` so the VALUE they add is 0,
    but autograd differentiates the unrounded expression, so each one adds
    ``grad(lse) grad(lse)^T`` to the Hessian (a curvature on the common shift of the logits, which
    does not change the policy). Pass already-masked log-probabilities and ``avail=None`` to get
    the same numbers (``MaskedCategorical.log_probs`` are those).
    """
    if avail is not None:
        logits_old = logits_old.masked_fill(~avail, HARL_MASKED_LOGIT)
        logits_new = logits_new.masked_fill(~avail, HARL_MASKED_LOGIT)
    delta = torch.log_softmax(logits_new, dim=-1) - torch.log_softmax(logits_old, dim=-1)
    return (torch.expm1(delta) - delta).sum(-1)


def policy_kl(old_dist, new_dist, measure: str = "true") -> Tensor:
    """Per-sample KL between two action distributions in HATRPO's chosen ``measure``
    (``algo.kl_measure``, one of :data:`KL_MEASURES`); the caller takes the masked mean over active
    samples and uses it both for the Fisher-vector product (its Hessian at ``theta_old``, with
    ``old_dist`` detached) and the line search's check ``<= delta``.

    - ``true``: ``old_dist.kl(new_dist)`` = ``KL(pi_old || pi_new)`` (categorical: over available
      actions; diagonal Gaussian: summed over real action dims).
    - ``harl``: HARL's code. Categorical (``old_dist.log_probs``, ``[..., A]``):
      :func:`harl_discrete_kl` on the (already masked) log-probabilities. Gaussian: the true KL,
      as HARL's ``_kl_normal_normal`` (summed over action dims) is.

    ``old_dist`` / ``new_dist``: ``marlopt.models.distributions.MaskedCategorical`` or
    ``DiagGaussian`` (duck-typed: a categorical has ``log_probs``). Returns the batch shape ``[...]``.
    """
    if measure not in KL_MEASURES:
        raise ValueError(f"unknown KL measure {measure!r}: one of {', '.join(KL_MEASURES)}")
    if measure == "harl" and hasattr(old_dist, "log_probs"):
        return harl_discrete_kl(old_dist.log_probs, new_dist.log_probs)
    return old_dist.kl(new_dist)
