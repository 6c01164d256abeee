"""GRASP: gradient realignment via the min-norm consensus direction.

GRASP paper, section 3.2.2, Eqs. (4)-(5), and Proposition 3.7, Eq. (13) (docs/algorithms/grasp.md).
With ``g_i`` the local policy gradient of agent ``i`` (rows of ``grads[n, p]``), the consensus
direction is the minimum-norm point of the convex hull of the local gradients:

    c* = argmin_{c in simplex}  1/2 || sum_i c_i g_i ||^2 = argmin_{c in simplex} 1/2 c^T P c,
    u* = sum_i c*_i g_i = c* @ grads,                           P_ij = g_i . g_j  (Gram matrix).

Its KKT conditions (multiplier ``lambda = c*^T P c* = ||u*||^2``) give the Pareto-improvement
property of the paper's Condition 3.4 (its App. F, Eqs. (30)-(36)):

    g_j . u*  >=  ||u*||^2  >=  0   for every agent j,   with equality where c*_j > 0.

``u*`` is unique (projection of 0 onto a convex set) and continuous in the gradients; ``c*`` is
unique when the gradients are affinely independent, otherwise any optimal ``c`` represents the
same ``u*``. The PPO update then ascends ``J_clip(theta) + kappa <theta, u*>`` (u* held constant;
the paper's Eqs. (8) and (12) with ``kappa = 1``).

Solver. ``min_norm_coefficients`` forms ``P`` where the gradients live (one ``n x n`` matmul on the
gradients' device), moves only ``P`` to the CPU in float64, normalises it by its largest diagonal
entry (so 1e8- and 1e-10-scale gradients are solved alike), and runs Wolfe's min-norm-point
algorithm (P. Wolfe, "Finding the nearest point in a polytope", Math. Programming 11, 1976) in
Gram-matrix form. Wolfe's method is an exact active-set method: it keeps an affinely
independent "corral" of active points, repeatedly moves to the affine minimiser of the corral
(one ``k x k`` linear solve, ``k <= min(n, p + 1)``), drops points whose weight reaches zero and adds
the point that most violates the KKT condition above, and stops when
``min_j g_j . u >= ||u||^2 - tol`` (``tol`` relative to ``max_j ||g_j||^2``). It is finite,
deterministic and never needs ``P`` to be invertible, so rank-deficient ``P`` (duplicated
rows, ``n > p``, opposed or zero gradients) are handled exactly. When the gradients are
affinely independent it is warm-started from a support guess (the whole set, shrunk to the
points with positive weight in its affine minimiser until that minimiser lies in the hull: one
to three solves usually suffice); otherwise from the vertex of the shortest gradient; ``n = 2`` uses the closed form
``c_1 = clip((g_2 - g_1) . g_2 / ||g_1 - g_2||^2, 0, 1)``. Cost: one ``n x n`` Gram matrix plus
one small LAPACK solve per active-set change (fast on CPU; docs/benchmarks.md).

Non-unique ``c*`` (affinely dependent gradients): the returned ``c`` is the one Wolfe's
algorithm reaches from that deterministic start. In particular for identical gradients and for
all-zero gradients it is the first vertex ``e_0 = [1, 0, ..., 0]`` (the lowest index among the
shortest rows); for exactly opposed pairs the unique ``c`` is returned (e.g. ``[1/2, 1/2]``).

Off-policy variant (GRASP-QMIX, paper appendix G.1): ``grasp_qmix_scales`` and
``grasp_qmix_directions``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "min_norm_coefficients",
    "min_norm_coefficients_from_gram",
    "consensus_direction",
    "min_norm_coefficients_cvxpy",
    "kkt_residual",
    "grasp_qmix_scales",
    "grasp_qmix_directions",
]

# Relative tolerance of the stopping test ``min_j (P c)_j >= c^T P c - tol`` on the Gram matrix
# normalised to max diagonal 1: at least 1e-12, or ~32 ulps of the precision the Gram matrix was
# accumulated in (float32 Gram matrices carry ~1e-7 relative rounding noise: chasing it is futile).
_MIN_TOL = 1e-12
_ULPS = 32.0
# Pivot threshold (relative) deciding that the whole set is affinely independent enough to be
# the starting corral; below it the algorithm starts from a vertex instead.
_FULL_START_PIVOT = 1e-9


# ---------------------------------------------------------------------------------------------
# Gram matrix
# ---------------------------------------------------------------------------------------------
def _default_gram_dtype(grads: Tensor) -> torch.dtype:
    """float64 for float64 grads and for CUDA grads (cuBLAS may silently use TF32 for float32
    matmuls, ~1e-3 relative error), float32 for lower-precision grads on the CPU."""
    if grads.dtype == torch.float64 or grads.device.type != "cpu":
        return torch.float64
    return torch.float32


def _gram(grads: Tensor, dtype: torch.dtype) -> np.ndarray:
    """``P = G G^T`` computed on ``grads``' device in ``dtype``, returned as a float64 numpy
    array (the only device->host transfer). The gradients are rescaled by ``max|G|`` first only
    when the plain product over- or underflows (a fast path for ordinary magnitudes)."""
    g = grads.detach()
    if g.dtype != dtype:
        g = g.to(dtype)
    P = (g @ g.T).to("cpu", torch.float64).numpy()
    finfo = torch.finfo(dtype)
    # A non-finite entry of row i shows on P_ii (inf^2, nan^2), and |P_ij| <= sqrt(P_ii P_jj).
    top = float(P.diagonal().max())
    if np.isfinite(top) and top >= finfo.tiny / finfo.eps**2:
        return P
    # Overflow (inf), (near-)underflow (denormal or vanished products), all-zero gradients or
    # non-finite gradients: rescale the gradients by their largest magnitude first.
    scale = float(g.abs().amax())
    if not np.isfinite(scale):
        raise ValueError("min_norm_coefficients: grads contain non-finite values")
    if scale == 0.0:
        return np.zeros_like(P)
    g = g / scale
    return (g @ g.T).to("cpu", torch.float64).numpy()


# ---------------------------------------------------------------------------------------------
# Wolfe's min-norm-point algorithm on a (normalised) Gram matrix, float64 numpy
# ---------------------------------------------------------------------------------------------
def _affine_minimizer(A_S: np.ndarray) -> np.ndarray | None:
    """Weights ``a`` (summing to 1) of the min-norm point of the affine hull of the corral S:
    ``min a^T P_SS a  s.t.  1^T a = 1``. With ``A_S = P_SS + 1 1^T`` this is ``A_S a ∝ 1``, a
    system that is nonsingular exactly when the corral is affinely independent (Wolfe's
    "append a 1 to every point" trick); a least-squares solve covers numerical dependence."""
    ones = np.ones(A_S.shape[0])
    try:
        a = np.linalg.solve(A_S, ones)
        s = a.sum()
        if np.isfinite(s) and s > 0.0:
            return a / s
    except np.linalg.LinAlgError:
        pass
    a = np.linalg.lstsq(A_S, ones, rcond=None)[0]
    s = a.sum()  # = 1^T A_S^+ 1 > 0 in exact arithmetic (1 lies in the range of A_S)
    return a / s if np.isfinite(s) and s > 0.0 else None


def _wolfe(P: np.ndarray, tol: float) -> np.ndarray:
    """Wolfe's algorithm on a PSD ``P`` with ``max(diag P) == 1``. Returns ``c`` on the simplex.

    Invariants: ``S`` (the corral) is affinely independent, ``lam > 0`` on ``S`` sums to 1 and
    ``x = sum_S lam_s g_s``; ``||x||`` decreases strictly from one major cycle to the next."""
    n = P.shape[0]
    A = P + 1.0  # Gram matrix of the points (1, g_i)

    # Starting corral: the whole set when affinely independent (Cholesky pivots of A bounded
    # away from 0), else the vertex of the shortest gradient; ties (to tol: BLAS rounding can
    # make equal rows' norms differ in the last bit) go to the lowest index.
    diag = P.diagonal()
    S = np.array([int(np.argmax(diag <= diag.min() + tol))])
    lam = np.ones(1)
    warm = False  # lam is already the affine minimiser of S (skip the first minor cycle)
    try:
        independent = float(np.diag(np.linalg.cholesky(A)).min()) ** 2 > _FULL_START_PIVOT
    except np.linalg.LinAlgError:
        independent = False
    if independent:
        # Support guess: shrink the whole set to the points with positive weight in its affine
        # minimiser until that minimiser is inside the hull (subsets of an affinely
        # independent set stay independent). Usually 1-3 solves instead of one minor cycle per
        # inactive agent; Wolfe's cycles below then finish exactly from this valid corral.
        S, lam = np.arange(n), np.full(n, 1.0 / n)
        T = S
        for _ in range(n):
            alpha = _affine_minimizer(A.take(T, 0).take(T, 1))
            if alpha is None:
                break
            if alpha.min() > 0.0:
                S, lam, warm = T, alpha, True
                break
            T = T[alpha > 0.0]

    best_lam, best_S, best_val = lam, S, np.inf
    just_added = -1
    for _major in range(50 * n + 100):
        # ---- minor cycles: move lam towards the corral's affine minimiser, dropping the points
        # whose weight reaches zero, until the affine minimiser lies inside the corral. Each
        # pass drops at least one point, so len(S) passes suffice.
        stalled = False
        for _minor in range(0 if warm else S.size):
            alpha = _affine_minimizer(A.take(S, 0).take(S, 1))
            if alpha is None:  # numerical breakdown: stop at the current (feasible) iterate
                stalled = True
                break
            if alpha.min() > 0.0:
                lam = alpha
                break
            idx = np.flatnonzero(alpha <= 0.0)
            den = lam[idx] - alpha[idx]  # lam >= 0 >= alpha
            ratios = np.where(den > 0.0, lam[idx] / np.where(den > 0.0, den, 1.0), 0.0)
            r = int(np.argmin(ratios))
            theta, drop = float(ratios[r]), int(idx[r])
            if theta <= 0.0 and int(S[drop]) == just_added:
                # The entering point gets no weight (numerical optimum): undo its entry.
                S = np.delete(S, drop)
                lam = np.delete(lam, drop)
                stalled = True
                break
            lam = lam + theta * (alpha - lam)
            lam[drop] = 0.0
            keep = lam > 0.0
            S = S[keep]
            lam = lam[keep] / lam[keep].sum()
        warm = False
        # ---- major cycle: optimality test, then the most violating point enters.
        Px = P.take(S, 1) @ lam  # g_j . x for every j
        xx = float(Px.take(S) @ lam)  # ||x||^2
        if xx > best_val + tol:
            # No decrease (P numerically not PSD): keep the best iterate found.
            lam, S = best_lam, best_S
            break
        best_lam, best_S, best_val = lam, S, xx
        if stalled:
            break
        j = int(np.argmin(Px))
        if Px[j] >= xx - tol or j in S:
            break
        S = np.append(S, j)
        lam = np.append(lam, 0.0)
        just_added = j
    c = np.zeros(n)
    c[S] = np.maximum(lam, 0.0)
    return c / c.sum()


def _solve_normalised_gram(P: np.ndarray, tol: float) -> np.ndarray:
    """Exact simplex QP on a symmetric PSD float64 Gram matrix (any scale)."""
    n = P.shape[0]
    if n == 1:
        return np.ones(1)
    top = float(P.diagonal().max())
    if not np.isfinite(top):
        raise ValueError("min_norm_coefficients: Gram matrix has non-finite entries")
    if top <= 0.0:  # all gradients zero: any c is optimal; return e_0
        c = np.zeros(n)
        c[0] = 1.0
        return c
    P = P / top
    P = 0.5 * (P + P.T)  # symmetric, max diagonal 1, |P_ij| <= 1
    if not np.isfinite(P.sum()):
        raise ValueError("min_norm_coefficients: Gram matrix has non-finite entries")
    if n == 2:
        # Closed form: c_1 = clip((g_2 - g_1).g_2 / ||g_1 - g_2||^2, 0, 1).
        d = P[0, 0] + P[1, 1] - 2.0 * P[0, 1]
        if d <= tol:  # identical (to tolerance): first row
            return np.array([1.0, 0.0])
        c0 = min(max((P[1, 1] - P[0, 1]) / d, 0.0), 1.0)
        return np.array([c0, 1.0 - c0])
    return _wolfe(P, tol)


def _default_tol(dtype: torch.dtype | np.dtype) -> float:
    """Stopping tolerance for a Gram matrix accumulated in ``dtype``: max(1e-12, 32 eps)."""
    if isinstance(dtype, torch.dtype):
        eps = torch.finfo(dtype).eps if dtype.is_floating_point else 0.0
    else:
        eps = float(np.finfo(dtype).eps) if np.dtype(dtype).kind == "f" else 0.0
    return max(_MIN_TOL, _ULPS * eps)


def min_norm_coefficients_from_gram(gram: Tensor | np.ndarray, *, tol: float | None = None):
    """``c* = argmin_{c in simplex} 1/2 c^T P c`` for a precomputed Gram matrix ``P[n, n]``.

    Useful when ``P`` is accumulated blockwise (``P = sum_b G_b G_b^T`` over parameter blocks).
    Returns a float64 ``ndarray`` for an ``ndarray`` input, else a tensor on ``gram``'s
    device/dtype. ``tol`` (relative to ``max_j P_jj``) defaults to ``max(1e-12, 32 eps)`` of the
    input's precision.
    """
    if isinstance(gram, Tensor):
        P = gram.detach().to("cpu", torch.float64).numpy()
        if P.ndim != 2 or P.shape[0] != P.shape[1]:
            raise ValueError(f"gram must be square [n, n], got shape {P.shape}")
        c = _solve_normalised_gram(P, _default_tol(gram.dtype) if tol is None else tol)
        out_dtype = gram.dtype if gram.is_floating_point() else torch.float64
        return torch.from_numpy(c).to(device=gram.device, dtype=out_dtype)
    arr = np.asarray(gram)
    P = arr.astype(np.float64)
    if P.ndim != 2 or P.shape[0] != P.shape[1]:
        raise ValueError(f"gram must be square [n, n], got shape {P.shape}")
    return _solve_normalised_gram(P, _default_tol(arr.dtype) if tol is None else tol)


def min_norm_coefficients(
    grads: Tensor, *, gram_dtype: torch.dtype | None = None, tol: float | None = None
) -> Tensor:
    """Min-norm convex combination of the agents' gradients (GRASP eq. 5).

    ``c* = argmin_{c in simplex} 1/2 ||sum_i c_i g_i||^2`` for ``grads[n, p]`` (row ``i`` = agent
    ``i``'s flattened local gradient ``g_i``). Returns ``c[n]`` on ``grads``' device and dtype,
    nonnegative and summing to 1; at the solution ``g_j . u* >= ||u*||^2`` for all ``j`` with
    equality where ``c_j > 0`` (to ``tol * max_j ||g_j||^2``).

    Exact Wolfe active-set solve on the Gram matrix ``P = grads @ grads.T`` (see the module
    docstring); ``P`` is accumulated on ``grads``' device in ``gram_dtype`` (default: float64 for
    float64 or CUDA grads, float32 for float32/half grads on the CPU) and only ``P`` goes to the
    CPU. When ``c*`` is not unique (affinely dependent gradients) the returned ``c`` is a
    deterministic optimal one: ``e_0`` for identical or all-zero gradients. Raises
    ``ValueError`` on non-finite gradients.
    """
    if grads.ndim != 2:
        raise ValueError(f"grads must be [n, p], got shape {tuple(grads.shape)}")
    n = grads.shape[0]
    if n == 0:
        raise ValueError("grads must have at least one row")
    out_dtype = grads.dtype if grads.is_floating_point() else torch.float32
    if n == 1:
        return torch.ones(1, dtype=out_dtype, device=grads.device)
    gdt = gram_dtype or _default_gram_dtype(grads)
    P = _gram(grads, gdt)
    c = _solve_normalised_gram(P, _default_tol(gdt) if tol is None else tol)
    return torch.from_numpy(c).to(device=grads.device, dtype=out_dtype)


def consensus_direction(grads: Tensor, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """``(u*, c*)`` with ``u* = c* @ grads`` the min-norm point of the convex hull of the rows of
    ``grads[n, p]`` (GRASP eq. 5). Keyword arguments go to ``min_norm_coefficients``. ``u*`` is
    detached (it is held constant in the hybrid objective ``J_clip + kappa <theta, u*>``)."""
    c = min_norm_coefficients(grads, **kwargs)
    return c @ grads.detach().to(c.dtype), c


# ---------------------------------------------------------------------------------------------
# Reference solver and KKT check (tests, debugging)
# ---------------------------------------------------------------------------------------------
def min_norm_coefficients_cvxpy(
    grads_or_gram: Tensor | np.ndarray, *, is_gram: bool = False, solver: str | None = None
):
    """Reference solve of the same QP with ``cvxpy`` (slow; for tests and debugging).

    ``grads_or_gram`` is ``grads[n, p]`` or, with ``is_gram=True``, the Gram matrix ``P[n, n]``.
    The QP is posed on a factor ``F`` of the normalised Gram matrix (``F^T F = P / max diag P``
    from its eigendecomposition, negative round-off eigenvalues dropped) as
    ``min 1/2 ||F c||^2  s.t.  c >= 0, sum c = 1``, which stays well posed for rank-deficient
    ``P``. Solver: ``solver`` or Clarabel (tight tolerances) when installed. Returns the same
    kind as the input (tensor on the input's device/dtype, or float64 ndarray).
    """
    try:
        import cvxpy as cp
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "min_norm_coefficients_cvxpy needs cvxpy: pip install cvxpy"
        ) from exc
    is_tensor = isinstance(grads_or_gram, Tensor)
    X = (
        grads_or_gram.detach().to("cpu", torch.float64).numpy()
        if is_tensor
        else np.asarray(grads_or_gram, dtype=np.float64)
    )
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D array, got shape {X.shape}")
    if is_gram:
        P = 0.5 * (X + X.T)
    else:
        m = np.max(np.abs(X)) if X.size else 0.0
        Xs = X / m if m > 0 else X
        P = Xs @ Xs.T
    n = P.shape[0]
    top = float(np.max(np.diag(P))) if n else 0.0
    if n == 1 or top <= 0.0:
        c = np.zeros(n)
        c[0] = 1.0
    else:
        P = P / top
        w, V = np.linalg.eigh(P)
        pos = w > 1e-14 * max(float(w[-1]), 1.0)
        F = np.sqrt(w[pos])[:, None] * V[:, pos].T  # [r, n], F^T F ~= P
        cvar = cp.Variable(n, nonneg=True)
        prob = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(F @ cvar)), [cp.sum(cvar) == 1])
        kwargs: dict[str, Any] = {}
        if solver is None and "CLARABEL" in cp.installed_solvers():
            solver = "CLARABEL"
            kwargs = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
        prob.solve(solver=solver, **kwargs)
        if prob.status not in ("optimal", "optimal_inaccurate") or cvar.value is None:
            raise RuntimeError(f"cvxpy failed to solve the min-norm QP: status {prob.status}")
        c = np.maximum(np.asarray(cvar.value, dtype=np.float64), 0.0)
        c = c / c.sum()
    if is_tensor:
        dt = grads_or_gram.dtype if grads_or_gram.is_floating_point() else torch.float64
        return torch.from_numpy(c).to(device=grads_or_gram.device, dtype=dt)
    return c


def kkt_residual(grads: Tensor, c: Tensor) -> float:
    """Scale-free KKT residual of ``c`` for the min-norm QP on ``grads[n, p]``.

    With ``u = c @ grads`` and ``s = max_j ||g_j||^2`` (1 if all zero) it is the largest of
    - primal: ``max(0, -min_j c_j)`` and ``|sum_j c_j - 1|`` (simplex feasibility);
    - dual:   ``max_j max(0, ||u||^2 - g_j . u) / s``   (``g_j . u >= ||u||^2`` for every agent);
    - complementarity: ``max_j max(c_j, 0) |g_j . u - ||u||^2| / s`` (equality where ``c_j > 0``).
    Computed in float64. It is 0 exactly at the optimum.
    """
    G = grads.detach().to(torch.float64)
    cc = c.detach().to(device=G.device, dtype=torch.float64)
    m = G.abs().amax() if G.numel() else torch.zeros((), dtype=torch.float64)
    if float(m) > 0:
        G = G / m
    u = cc @ G
    gu = G @ u
    uu = u @ u
    s = float((G * G).sum(1).amax()) if G.numel() else 0.0
    s = s if s > 0 else 1.0
    primal = max(float((-cc).clamp_min(0).amax()), abs(float(cc.sum()) - 1.0))
    dual = float((uu - gu).clamp_min(0).amax()) / s
    comp = float((cc.clamp_min(0) * (gu - uu).abs()).amax()) / s
    return max(primal, dual, comp)


# ---------------------------------------------------------------------------------------------
# Off-policy variant (GRASP-QMIX, appendix G.1)
# ---------------------------------------------------------------------------------------------
def grasp_qmix_scales(grads: Tensor, u: Tensor) -> Tensor:
    """Geometrically aligned factors of GRASP's off-policy variant (paper eq. 38, App. G.1):

        Gamma_i = (||u||^2 + <g_i, u>) / (||g_i||^2 + ||u||^2),   clamped to [0, 1],

    with ``0/0 -> 0`` (``g_i = u = 0``). At the min-norm ``u = u*`` the KKT conditions
    ``<g_i, u*> >= ||u*||^2`` already put ``Gamma_i`` in ``[0, 1]``; the clamp only guards other
    ``u``. ``grads[n, p]``, ``u[p]`` -> ``Gamma[n]`` (same dtype/device; differentiable where not
    clamped, but normally called on detached gradients)."""
    uu = (u * u).sum()
    gu = grads @ u
    gg = (grads * grads).sum(-1)
    num = uu + gu
    den = gg + uu
    safe = den > 0
    gamma = torch.where(safe, num / torch.where(safe, den, torch.ones_like(den)), torch.zeros_like(den))
    return gamma.clamp(0.0, 1.0)


def grasp_qmix_directions(grads: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
    """Per-agent realigned update directions of GRASP-QMIX (paper eq. 37, App. G.1):
    ``v_i = Gamma_i (g_i + u)`` with ``Gamma`` from ``grasp_qmix_scales``. Here ``g_i`` is agent
    ``i``'s gradient of the quantity being *ascended* (for a TD loss, pass minus its gradient, or
    the loss gradients and their min-norm ``u`` consistently: ``v`` is linear in the sign).
    Returns ``(v[n, p], Gamma[n])``. Properties (at ``u = u*``): ``<g_i, v_i> >= 0`` and
    ``<u*, v_i> >= 0``."""
    gamma = grasp_qmix_scales(grads, u)
    return gamma[:, None] * (grads + u[None, :]), gamma
