"""Tests of marlopt.objectives.grasp: the exact min-norm solver against cvxpy, degenerate
gradient sets, the KKT (Pareto-improvement) property, continuity, and the GRASP-QMIX factors."""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.objectives.grasp import (
    consensus_direction,
    grasp_qmix_directions,
    grasp_qmix_scales,
    kkt_residual,
    min_norm_coefficients,
    min_norm_coefficients_cvxpy,
    min_norm_coefficients_from_gram,
)

F64 = torch.float64


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def objective(grads: torch.Tensor, c: torch.Tensor) -> float:
    """1/2 ||c @ grads||^2 in float64."""
    u = c.to(F64) @ grads.to(F64)
    return 0.5 * float(u @ u)


def scale(grads: torch.Tensor) -> float:
    """max_j ||g_j||^2 (the natural scale of the objective), 1 if all zero."""
    s = float((grads.to(F64) ** 2).sum(1).max())
    return s if s > 0 else 1.0


def assert_on_simplex(c: torch.Tensor, atol: float = 1e-12) -> None:
    assert c.ndim == 1
    assert bool((c >= 0).all()), c
    assert abs(float(c.to(F64).sum()) - 1.0) <= atol


def random_grads(seed: int, n: int, p: int, shared: float = 1.0) -> torch.Tensor:
    """Gaussian gradients plus a shared component (so that some agents are inactive)."""
    g = torch.Generator().manual_seed(seed)
    G = torch.randn(n, p, generator=g, dtype=F64)
    return G + shared * torch.randn(1, p, generator=g, dtype=F64)


# ---------------------------------------------------------------------------------------------
# Against the cvxpy reference
# ---------------------------------------------------------------------------------------------
CASES = [(1, 10), (2, 7), (3, 50), (4, 2000), (7, 300), (10, 1000), (17, 1200), (30, 2000),
         (30, 60), (12, 3), (30, 5)]


@pytest.mark.parametrize("n,p", CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_cvxpy(n: int, p: int, seed: int) -> None:
    G = random_grads(seed, n, p, shared=[0.0, 1.0, 3.0][seed])
    c = min_norm_coefficients(G)
    c_ref = min_norm_coefficients_cvxpy(G)
    assert_on_simplex(c)
    s = scale(G)
    f, f_ref = objective(G, c), objective(G, c_ref)
    # never worse than the interior-point reference, and equal to its accuracy
    assert f <= f_ref + 1e-10 * s
    assert abs(f - f_ref) <= 1e-8 * s
    assert kkt_residual(G, c) <= 1e-12
    if n <= p:  # Gaussian rows are affinely independent: the optimal c is unique
        assert torch.allclose(c, c_ref, atol=1e-6, rtol=0)


def test_cvxpy_reference_accepts_gram_and_ndarray() -> None:
    G = random_grads(5, 8, 40)
    c_t = min_norm_coefficients_cvxpy(G)
    c_gram = min_norm_coefficients_cvxpy((G @ G.T).numpy(), is_gram=True)
    assert isinstance(c_t, torch.Tensor) and c_t.dtype == F64
    assert isinstance(c_gram, np.ndarray)
    np.testing.assert_allclose(c_t.numpy(), c_gram, atol=1e-7)
    np.testing.assert_allclose(min_norm_coefficients(G).numpy(), c_gram, atol=1e-6)


def test_cvxpy_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cvxpy", None)  # makes `import cvxpy` raise ImportError
    with pytest.raises(ImportError, match="pip install cvxpy"):
        min_norm_coefficients_cvxpy(torch.randn(3, 4))


# ---------------------------------------------------------------------------------------------
# Closed forms and degenerate gradient sets
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_two_agents_closed_form(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    g1, g2 = torch.randn(2, 9, generator=g, dtype=F64) * torch.tensor([[1.0], [3.0 * seed + 0.1]], dtype=F64)
    if seed % 2:
        g2 = g2 + 3 * g1  # make one endpoint optimal sometimes
    t = float((g2 - g1) @ g2 / ((g1 - g2) @ (g1 - g2)))
    c1 = min(max(t, 0.0), 1.0)
    c = min_norm_coefficients(torch.stack([g1, g2]))
    torch.testing.assert_close(c, torch.tensor([c1, 1 - c1], dtype=F64), atol=1e-12, rtol=0)


def test_single_agent() -> None:
    g = torch.randn(1, 17)
    c = min_norm_coefficients(g)
    assert torch.equal(c, torch.ones(1))
    u, c2 = consensus_direction(g)
    torch.testing.assert_close(u, g[0])


@pytest.mark.parametrize("n", [2, 3, 8, 30])
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_identical_gradients_first_vertex(n: int, dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(n)
    for p in (1, 31, 1000):
        for _ in range(5):
            g = torch.randn(p, generator=gen, dtype=dtype)
            G = g.repeat(n, 1)  # G @ G.T may still differ in the last bits between entries
            u, c = consensus_direction(G)
            expected = torch.zeros(n, dtype=dtype)
            expected[0] = 1.0  # documented choice among the (all optimal) simplex points
            assert torch.equal(c, expected)
            assert torch.equal(u, g)


def test_opposed_gradients_cancel() -> None:
    g = torch.randn(23, dtype=F64)
    u, c = consensus_direction(torch.stack([g, -g]))
    torch.testing.assert_close(c, torch.tensor([0.5, 0.5], dtype=F64))
    assert float(u.norm()) <= 1e-12 * float(g.norm())
    u, c = consensus_direction(torch.stack([g, -2.0 * g]))
    torch.testing.assert_close(c, torch.tensor([2 / 3, 1 / 3], dtype=F64))
    assert float(u.norm()) <= 1e-12 * float(g.norm())
    # three agents, two opposed plus an orthogonal-ish one: u* = 0 still
    G = torch.stack([g, -g, torch.randn(23, dtype=F64)])
    u, c = consensus_direction(G)
    assert_on_simplex(c)
    assert float(u.norm()) <= 1e-10 * float(G.norm())


def test_zero_gradients() -> None:
    for dtype in (torch.float32, F64):
        G = torch.zeros(4, 11, dtype=dtype)
        u, c = consensus_direction(G)
        assert c.dtype == dtype
        assert_on_simplex(c)
        assert torch.equal(c, torch.tensor([1.0, 0, 0, 0], dtype=dtype))
        assert torch.equal(u, torch.zeros(11, dtype=dtype))
    # one zero gradient among others: u* = 0, the zero row carries all the weight
    G = torch.randn(3, 11, dtype=F64)
    G[1] = 0.0
    u, c = consensus_direction(G)
    assert float(u.norm()) == 0.0
    assert torch.equal(c, torch.tensor([0.0, 1.0, 0.0], dtype=F64))


@pytest.mark.parametrize(
    "factor,dtype",
    [(1e8, F64), (1e-10, F64), (1e200, F64), (1e-200, F64),
     (1e8, torch.float32), (1e-10, torch.float32), (1e20, torch.float32), (1e-22, torch.float32)],
)
def test_scale_invariance(factor: float, dtype: torch.dtype) -> None:
    """c* does not depend on the scale of the gradients, even where G G^T over/underflows."""
    G = random_grads(3, 9, 200, shared=1.0)
    c0 = min_norm_coefficients(G)
    c = min_norm_coefficients((G * factor).to(dtype))
    assert c.dtype == dtype
    assert_on_simplex(c, atol=1e-6)
    atol = 1e-9 if dtype == F64 else 2e-4
    torch.testing.assert_close(c.to(F64), c0, atol=atol, rtol=0)


def test_duplicated_rows_same_consensus() -> None:
    G = random_grads(7, 6, 80)
    u0, _ = consensus_direction(G)
    Gd = torch.cat([G, G[[0, 2, 2, 5]], G[:3]])
    u, c = consensus_direction(Gd)
    assert_on_simplex(c)
    torch.testing.assert_close(u, u0, atol=1e-10 * float(G.abs().max()), rtol=0)
    assert kkt_residual(Gd, c) <= 1e-12


@pytest.mark.parametrize("seed", range(4))
def test_rank_deficient(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    # n > p: more agents than dimensions (u* = 0 when 0 is inside the hull)
    A = torch.randn(30, 4, generator=g, dtype=F64)
    # low-rank plus an offset: 25 points on a 3-dim affine subspace not containing 0
    B = torch.randn(25, 3, generator=g, dtype=F64) @ torch.randn(3, 100, generator=g, dtype=F64)
    B = B + 4.0 * torch.randn(1, 100, generator=g, dtype=F64)
    for G in (A, B, torch.cat([B, -B[:2]])):
        c = min_norm_coefficients(G)
        c_ref = min_norm_coefficients_cvxpy(G)
        assert_on_simplex(c)
        assert kkt_residual(G, c) <= 1e-12
        assert objective(G, c) <= objective(G, c_ref) + 1e-9 * scale(G)


def test_non_finite_raises() -> None:
    G = torch.randn(3, 5)
    G[1, 2] = float("nan")
    with pytest.raises(ValueError):
        min_norm_coefficients(G)
    G[1, 2] = float("inf")
    with pytest.raises(ValueError):
        min_norm_coefficients(G)


def test_kkt_residual_detects_wrong_coefficients() -> None:
    G = random_grads(11, 6, 30, shared=2.0)
    c = min_norm_coefficients(G)
    assert kkt_residual(G, c) <= 1e-12
    uniform = torch.full((6,), 1 / 6, dtype=F64)
    if not torch.allclose(c, uniform, atol=1e-3):
        assert kkt_residual(G, uniform) > 1e-4
    assert kkt_residual(G, c * 1.1) > 1e-3  # off the simplex


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------
@st.composite
def gradient_sets(draw):
    """Random gradient sets including degenerate ones: duplicated, negated, scaled and zero
    rows, low rank, and entries spanning many orders of magnitude."""
    n = draw(st.integers(1, 12))
    p = draw(st.integers(1, 40))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    rank = draw(st.integers(1, max(1, min(n, p))))
    G = torch.randn(n, rank, generator=g, dtype=F64) @ torch.randn(rank, p, generator=g, dtype=F64)
    G = G + draw(st.floats(0, 5)) * torch.randn(1, p, generator=g, dtype=F64)
    for i in range(n):
        op = draw(st.sampled_from(["keep", "keep", "dup", "neg", "scale", "zero"]))
        j = draw(st.integers(0, n - 1))
        if op == "dup":
            G[i] = G[j]
        elif op == "neg":
            G[i] = -G[j] * draw(st.floats(0.1, 10))
        elif op == "scale":
            G[i] = G[i] * 10.0 ** draw(st.integers(-6, 6))
        elif op == "zero":
            G[i] = 0.0
    return G * 10.0 ** draw(st.integers(-12, 12))


@settings(max_examples=100, deadline=None)
@given(gradient_sets())
def test_kkt_pareto_property(G: torch.Tensor) -> None:
    """g_j . u* >= ||u*||^2 for every agent (equality on the support), c on the simplex."""
    u, c = consensus_direction(G)
    assert_on_simplex(c)
    s = scale(G)
    gu = G @ u
    uu = u @ u
    assert bool((gu >= uu - 1e-10 * s).all())
    assert bool(((c > 0) <= ((gu - uu).abs() <= 1e-10 * s)).all())
    assert kkt_residual(G, c) <= 1e-10


@pytest.mark.filterwarnings("ignore:Solution may be inaccurate")
@settings(max_examples=30, deadline=None)
@given(gradient_sets())
def test_objective_not_worse_than_cvxpy(G: torch.Tensor) -> None:
    c = min_norm_coefficients(G)
    c_ref = min_norm_coefficients_cvxpy(G)
    assert objective(G, c) <= objective(G, c_ref) + 1e-9 * scale(G)


@pytest.mark.parametrize("seed", range(20))
def test_continuity(seed: int) -> None:
    """A small perturbation of the gradients moves u* proportionally (Lipschitz on generic,
    well-conditioned instances): ||du*|| <= 3 ||dG||_F."""
    g = torch.Generator().manual_seed(1000 + seed)
    n = int(torch.randint(2, 12, (1,), generator=g))
    p = int(torch.randint(n, 80, (1,), generator=g))
    G = torch.randn(n, p, generator=g, dtype=F64) + 1.5 * torch.randn(1, p, generator=g, dtype=F64)
    u, c = consensus_direction(G)
    for eps in (1e-7, 1e-4, 1e-2):
        D = torch.randn(n, p, generator=g, dtype=F64)
        D *= eps * float(G.norm()) / float(D.norm())
        u2, c2 = consensus_direction(G + D)
        assert float((u2 - u).norm()) <= 3.0 * float(D.norm())
        if eps <= 1e-4:
            assert float((c2 - c).abs().max()) <= 1e-2


def test_permutation_equivariance_and_determinism() -> None:
    G = random_grads(21, 9, 50, shared=2.0)
    u, c = consensus_direction(G)
    u_again, c_again = consensus_direction(G)
    assert torch.equal(c, c_again) and torch.equal(u, u_again)
    perm = torch.randperm(9, generator=torch.Generator().manual_seed(0))
    u_p, c_p = consensus_direction(G[perm])
    torch.testing.assert_close(u_p, u, atol=1e-12, rtol=0)
    torch.testing.assert_close(c_p, c[perm], atol=1e-10, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_dtype_preserved(dtype: torch.dtype) -> None:
    G = random_grads(4, 5, 64).to(dtype)
    u, c = consensus_direction(G)
    assert c.dtype == dtype and u.dtype == dtype
    assert c.device == G.device and u.shape == (64,)
    assert bool((c >= 0).all())
    atol = {torch.float16: 2e-3, torch.bfloat16: 1e-2}.get(dtype, 1e-6)
    assert abs(float(c.double().sum()) - 1.0) <= atol
    torch.testing.assert_close(c.double(), min_norm_coefficients(G.double()), atol=20 * atol, rtol=0)


def test_float32_gram_accuracy() -> None:
    G = random_grads(8, 20, 3000, shared=1.0)
    c32 = min_norm_coefficients(G.float())
    assert c32.dtype == torch.float32
    assert kkt_residual(G, c32) <= 1e-5
    c64 = min_norm_coefficients(G.float(), gram_dtype=torch.float64)
    assert c64.dtype == torch.float32
    assert kkt_residual(G.float().double(), c64.double()) <= 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_device_preserved() -> None:
    G = random_grads(4, 12, 500, shared=1.0)
    for dtype in (torch.float32, F64):
        Gc = G.to("cuda", dtype)
        u, c = consensus_direction(Gc)
        assert c.device == Gc.device and u.device == Gc.device and c.dtype == dtype
        torch.testing.assert_close(c.cpu().double(), min_norm_coefficients(G), atol=1e-5, rtol=0)


def test_from_gram_matches() -> None:
    G = random_grads(9, 14, 100, shared=2.0)
    P = G @ G.T
    c = min_norm_coefficients(G)
    c_t = min_norm_coefficients_from_gram(P)
    c_np = min_norm_coefficients_from_gram(P.numpy())
    assert isinstance(c_np, np.ndarray) and c_t.dtype == F64
    torch.testing.assert_close(c_t, c, atol=1e-12, rtol=0)
    np.testing.assert_allclose(c_np, c.numpy(), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# GRASP-QMIX (off-policy) factors
# ---------------------------------------------------------------------------------------------
def test_grasp_qmix_scales_formula() -> None:
    G = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.0, 0.0], [-3.0, 0.0]], dtype=F64)
    u = torch.tensor([0.5, 0.5], dtype=F64)
    gamma = grasp_qmix_scales(G, u)
    # (||u||^2 + <g,u>) / (||g||^2 + ||u||^2)
    expected = torch.tensor([(0.5 + 0.5) / (1 + 0.5), (0.5 + 1.0) / (4 + 0.5), 0.5 / 0.5, 0.0], dtype=F64)
    expected[3] = max(0.0, (0.5 - 1.5) / (9 + 0.5))  # clamped at 0
    torch.testing.assert_close(gamma, expected)
    # 0 / 0 -> 0
    zero = grasp_qmix_scales(torch.zeros(2, 3), torch.zeros(3))
    assert torch.equal(zero, torch.zeros(2))
    # clamp at 1: <g,u> large relative to ||g||^2 cannot happen at u*, but can for other u
    assert float(grasp_qmix_scales(torch.tensor([[1.0, 0.0]]), torch.tensor([2.0, 0.0]))[0]) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_grasp_qmix_directions_properties(seed: int) -> None:
    """App. G.2: at u = u*, Gamma in [0, 1], <g_i, v_i> >= 0 and <u*, v_i> >= 0."""
    G = random_grads(seed, 7, 40, shared=0.5)
    u, _ = consensus_direction(G)
    v, gamma = grasp_qmix_directions(G, u)
    raw = ((u @ u) + G @ u) / ((G * G).sum(1) + u @ u)
    torch.testing.assert_close(gamma, raw)  # no clamping needed at u*
    assert bool(((gamma >= 0) & (gamma <= 1)).all())
    torch.testing.assert_close(v, gamma[:, None] * (G + u))
    tol = 1e-10 * scale(G)
    assert bool(((G * v).sum(1) >= -tol).all())
    assert bool((v @ u >= -tol).all())


# ---------------------------------------------------------------------------------------------
# Timing (not part of the default run: `pytest -m benchmark -s`)
# ---------------------------------------------------------------------------------------------
@pytest.mark.benchmark
def test_report_solve_times() -> None:
    for n in (3, 10, 27):
        G = torch.randn(n, 10_000) + torch.randn(1, 10_000)
        min_norm_coefficients(G)
        reps = 200
        t0 = time.perf_counter()
        for _ in range(reps):
            min_norm_coefficients(G)
        t = (time.perf_counter() - t0) / reps
        t0 = time.perf_counter()
        min_norm_coefficients_cvxpy(G)
        tc = time.perf_counter() - t0
        print(f"n={n:2d} p=10000: min_norm_coefficients {t * 1e6:.0f} us, cvxpy {tc * 1e3:.1f} ms")
