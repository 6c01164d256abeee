"""Tests of marlopt.algos.trust_region (what writes parameters: ``set_flat_params_`` and HATRPO's
backtracking line search), on the tiny softmax policy of tests/objectives/test_trpo.py."""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.algos.trust_region import LineSearchResult, backtracking_line_search, set_flat_params_
from marlopt.objectives.trpo import (
    conjugate_gradient,
    flat_grad,
    flat_params,
    make_fisher_vector_product,
    trpo_step_size,
)
from tests.objectives.test_trpo import F64, Setup


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# flat parameters, written back
# ---------------------------------------------------------------------------------------------
def test_flat_params_roundtrip_and_copy() -> None:
    s = Setup(0)
    flat = flat_params(s.params)
    assert flat.shape == (51,) and not flat.requires_grad
    new = torch.randn(51, dtype=F64)
    set_flat_params_(s.params, new)
    assert torch.equal(flat_params(s.params), new)
    assert torch.equal(s.params[0].reshape(-1), new[:24])  # order of .parameters()
    assert not torch.equal(flat, new)  # flat_params returned a copy, not a view
    with pytest.raises(ValueError):
        set_flat_params_(s.params, torch.zeros(50, dtype=F64))


# ---------------------------------------------------------------------------------------------
# Line search
# ---------------------------------------------------------------------------------------------
def hatrpo_full_step(s: Setup, kl_threshold: float) -> tuple[torch.Tensor, float, float]:
    """The HATRPO full step (CG on the damped Fisher, beta from the KL model)."""
    surr = s.surrogate()
    g = flat_grad(surr, s.params)
    fvp = make_fisher_vector_product(s.mean_kl(), s.params, damping=0.1)
    x = conjugate_gradient(fvp, g, iters=10)
    beta = trpo_step_size(x, fvp(x), kl_threshold)
    full_step = beta * x
    return full_step, float(g @ full_step), float(surr.detach())


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("blow_up", [1.0, 8.0])
def test_line_search_accepted_step_satisfies_kl_bound(seed: int, blow_up: float) -> None:
    kl_threshold = 0.01
    s = Setup(seed, batch=128)
    full_step, expected, old_surr = hatrpo_full_step(s, kl_threshold)
    full_step = blow_up * full_step  # too large a step forces backtracking
    expected = blow_up * expected
    old = flat_params(s.params)

    def evaluate() -> tuple[float, float]:
        return float(s.surrogate()) - old_surr, float(s.mean_kl())

    res = backtracking_line_search(s.params, old, full_step, expected, evaluate, kl_threshold,
                                   accept_ratio=0.5, backtrack_coeff=0.5, max_backtracks=10)
    assert isinstance(res, LineSearchResult)
    now = flat_params(s.params)
    if res.accepted:
        assert torch.equal(now, old + res.step_fraction * full_step)
        with torch.no_grad():  # recomputed independently at the final parameters
            kl = float(s.mean_kl(now))
            imp = float(s.surrogate(now)) - old_surr
        assert kl <= kl_threshold and res.kl == pytest.approx(kl)
        assert imp > 0 and res.improvement == pytest.approx(imp)
        assert imp / (expected * res.step_fraction) > 0.5
        assert res.step_fraction == 0.5 ** (res.iterations - 1)
        if blow_up > 1.0:
            assert res.step_fraction < 1.0
    else:
        assert torch.equal(now, old)
    if blow_up == 1.0:
        assert res.accepted  # the quadratic-model step is accepted on these smooth problems


def test_line_search_never_acceptable_restores_bit_identical() -> None:
    s = Setup(4)
    # parameters with full float64 mantissas (nn.Linear's init is float32-representable)
    set_flat_params_(s.params, torch.randn(51, dtype=F64) / 3)
    before = [p.detach().clone() for p in s.params]
    old = flat_params(s.params)
    # a step whose scaled versions are not exactly representable, so old + 0 * step or
    # subtracting the last step would not reproduce the old values bit for bit
    full_step = torch.randn(51, dtype=F64) * 1e3 + 1 / 3
    seen: list[torch.Tensor] = []

    def evaluate() -> tuple[float, float]:
        seen.append(flat_params(s.params))
        return -1.0, 0.0  # the surrogate always gets worse

    res = backtracking_line_search(s.params, old, full_step, 1.0, evaluate, 0.01,
                                   backtrack_coeff=0.8, max_backtracks=10)
    assert res.accepted is False and res.step_fraction == 0.0 and res.iterations == 10
    assert res.last_improvement == -1.0
    assert len(seen) == 10
    for j, theta in enumerate(seen):  # tried old + coeff^j * step, j = 0..9
        torch.testing.assert_close(theta, old + 0.8**j * full_step, rtol=1e-15, atol=1e-12)
    for p, b in zip(s.params, before):
        assert torch.equal(p, b)


def _scripted(values: list[tuple[float, float]]):
    """evaluate() returning the scripted (improvement, kl) pairs in order, recording calls."""
    calls: list[int] = []

    def evaluate() -> tuple[float, float]:
        calls.append(1)
        return values[len(calls) - 1]

    return evaluate, calls


def _run(values, expected=1.0, kl_threshold=0.01, coeff=0.5, accept_ratio=0.5, max_backtracks=None):
    p = torch.zeros(3, dtype=F64, requires_grad=True)
    step = torch.tensor([1.0, -2.0, 4.0], dtype=F64)
    evaluate, calls = _scripted(values)
    res = backtracking_line_search([p], flat_params([p]), step, expected, evaluate, kl_threshold,
                                   accept_ratio=accept_ratio, backtrack_coeff=coeff,
                                   max_backtracks=len(values) if max_backtracks is None else max_backtracks)
    return res, p.detach(), step, len(calls)


def test_line_search_first_acceptable_step() -> None:
    res, p, step, n = _run([(1.0, 0.005), (1.0, 0.001)])
    assert res.accepted and res.step_fraction == 1.0 and n == 1 and res.iterations == 1
    assert torch.equal(p, step)
    assert res.kl == 0.005 and res.improvement == 1.0


def test_line_search_kl_branch() -> None:
    # KL too large twice, then within the bound (equality accepted: kl <= delta)
    res, p, step, n = _run([(1.0, 0.02), (0.6, 0.0100001), (0.3, 0.01), (0.2, 0.0)])
    assert res.accepted and n == 3 and res.iterations == 3
    assert res.step_fraction == 0.25 and torch.equal(p, 0.25 * step)


def test_line_search_improvement_sign_branch() -> None:
    # with accept_ratio < 0 the ratio test alone would accept these: only "improvement > 0"
    # rejects them
    res, p, step, n = _run([(-0.1, 0.0), (0.0, 0.0), (1e-9, 0.0)], accept_ratio=-1.0)
    assert res.accepted and n == 3 and res.step_fraction == 0.25 and torch.equal(p, 0.25 * step)
    res, p, _, n = _run([(-0.1, 0.0), (0.0, 0.0)], accept_ratio=-1.0)
    assert not res.accepted and n == 2 and torch.equal(p, torch.zeros(3, dtype=F64))
    # a tiny positive improvement with a matching expectation is accepted
    res, _, _, n = _run([(0.0, 0.0), (1e-9, 0.0)], expected=1e-9)
    assert res.accepted and n == 2  # j=1: ratio 1e-9 / (0.5 * 1e-9) = 2


def test_line_search_ratio_branch_uses_backtracked_expectation() -> None:
    # j=0: 0.4 / 1.0 = 0.4 <= 0.5 rejected; j=1: 0.3 / (1.0 * 0.5) = 0.6 > 0.5 accepted
    # (an implementation that did not shrink the expectation would reject j=1 too)
    res, p, step, n = _run([(0.4, 0.0), (0.3, 0.0), (0.3, 0.0)])
    assert res.accepted and n == 2 and res.step_fraction == 0.5
    assert torch.equal(p, 0.5 * step)
    # ratio exactly at accept_ratio is rejected (strict >)
    res, _, _, n = _run([(0.5, 0.0), (0.2, 0.0)])
    assert not res.accepted and n == 2
    # non-positive expectation never accepts
    res, p, _, _ = _run([(1.0, 0.0)] * 3, expected=0.0)
    assert not res.accepted and torch.equal(p, torch.zeros(3, dtype=F64))


def test_line_search_nan_and_no_candidates() -> None:
    res, p, _, _ = _run([(float("nan"), 0.0), (1.0, float("nan"))])
    assert not res.accepted and torch.equal(p, torch.zeros(3, dtype=F64))
    res, p, _, n = _run([], max_backtracks=0)
    assert not res.accepted and n == 0 and res.iterations == 0 and math.isnan(res.last_kl)
    assert torch.equal(p, torch.zeros(3, dtype=F64))


def test_line_search_accepts_tensor_values() -> None:
    res, p, step, _ = _run([(torch.tensor(0.9), torch.tensor(0.001))])
    assert res.accepted and isinstance(res.kl, float) and torch.equal(p, step)
