"""Tests of marlopt.objectives.trpo (HATRPO's pieces) against dense references on a tiny
categorical (softmax) policy network with ~50 parameters."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from marlopt.objectives.trpo import (
    LineSearchResult,
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    make_fisher_vector_product,
    set_flat_params_,
    trpo_step_size,
)

F64 = torch.float64
OBS, HID, ACT = 4, 6, 3  # 4*6+6 + 6*3+3 = 51 parameters


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


class Setup:
    """A small softmax policy, a batch, the rollout policy's log-probs, and helpers that work
    on a flat parameter vector (for dense autograd references)."""

    def __init__(self, seed: int, batch: int = 64) -> None:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, ACT)).to(F64)
        self.params = list(self.net.parameters())
        self.names = [n for n, _ in self.net.named_parameters()]
        self.shapes = [p.shape for p in self.params]
        self.obs = torch.randn(batch, OBS, generator=g, dtype=F64)
        with torch.no_grad():
            self.old_logp_all = torch.log_softmax(self.net(self.obs), -1)
        self.actions = torch.multinomial(self.old_logp_all.exp(), 1, generator=g).squeeze(-1)
        self.old_logp = self.old_logp_all.gather(-1, self.actions[:, None]).squeeze(-1)
        self.adv = torch.randn(batch, generator=g, dtype=F64)
        self.theta_old = flat_params(self.params)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = math.prod(shape)
            out[name] = flat[i : i + k].view(shape)
            i += k
        return out

    def logp_all(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.net(self.obs) if flat is None else functional_call(self.net, self.unflatten(flat), (self.obs,))
        return torch.log_softmax(logits, -1)

    def mean_kl(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """mean KL(pi_old || pi_theta) over the batch."""
        logp = self.logp_all(flat)
        return (self.old_logp_all.exp() * (self.old_logp_all - logp)).sum(-1).mean()

    def surrogate(self, flat: torch.Tensor | None = None) -> torch.Tensor:
        """mean(r * A) with r = pi_theta(a|o) / pi_old(a|o)."""
        logp = self.logp_all(flat).gather(-1, self.actions[:, None]).squeeze(-1)
        return (torch.exp(logp - self.old_logp) * self.adv).mean()

    def dense_hessian(self, flat: torch.Tensor) -> torch.Tensor:
        return torch.autograd.functional.hessian(self.mean_kl, flat)


# ---------------------------------------------------------------------------------------------
# flat helpers
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


def test_flat_grad_zeros_for_unused_params() -> None:
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(2, 2, requires_grad=True)
    c = torch.randn(4, requires_grad=True)
    out = (a * a).sum() + 3.0 * c.sum()
    g = flat_grad(out, [a, b, c])
    assert g.shape == (3 + 4 + 4,)
    torch.testing.assert_close(g, torch.cat([2 * a.detach(), torch.zeros(4), torch.full((4,), 3.0)]))


# ---------------------------------------------------------------------------------------------
# Fisher-vector products and conjugate gradient against the dense Hessian
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("at_old", [True, False])
def test_fisher_vector_product_matches_dense(seed: int, at_old: bool) -> None:
    s = Setup(seed)
    if not at_old:  # also away from theta_old, where H is no longer the Fisher matrix
        set_flat_params_(s.params, s.theta_old + 0.3 * torch.randn(51, dtype=F64))
    theta = flat_params(s.params)
    H = s.dense_hessian(theta)
    damping = 0.1
    fvp = make_fisher_vector_product(s.mean_kl(), s.params, damping=damping)
    for _ in range(3):  # the callable is reusable (graph retained)
        v = torch.randn(51, dtype=F64)
        torch.testing.assert_close(fvp(v), (H + damping * torch.eye(51, dtype=F64)) @ v, rtol=1e-10, atol=1e-12)
    v = torch.randn(51, dtype=F64)
    one_shot = fisher_vector_product(s.mean_kl(), s.params, v, damping=0.5)
    torch.testing.assert_close(one_shot, H @ v + 0.5 * v, rtol=1e-10, atol=1e-12)
    if at_old:  # at theta_old the KL Hessian is the Fisher matrix E[grad logp grad logp^T]
        eig = torch.linalg.eigvalsh(H)
        assert float(eig.min()) > -1e-10


def test_fisher_vector_product_with_params_outside_kl() -> None:
    s = Setup(0)
    extra = torch.zeros(5, dtype=F64, requires_grad=True)  # kl does not depend on it
    params = s.params + [extra]
    fvp = make_fisher_vector_product(s.mean_kl(), params, damping=0.1)
    v = torch.randn(56, dtype=F64)
    H = s.dense_hessian(s.theta_old)
    out = fvp(v)
    torch.testing.assert_close(out[:51], H @ v[:51] + 0.1 * v[:51], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out[51:], 0.1 * v[51:])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_conjugate_gradient_solves_damped_fisher_system(seed: int) -> None:
    s = Setup(seed)
    g = flat_grad(s.surrogate(), s.params)
    H = s.dense_hessian(s.theta_old) + 0.1 * torch.eye(51, dtype=F64)
    x_ref = torch.linalg.solve(H, g)
    fvp = make_fisher_vector_product(s.mean_kl(), s.params, damping=0.1)
    x = conjugate_gradient(fvp, g, iters=200, residual_tol=1e-24)
    assert float((x - x_ref).norm() / x_ref.norm()) <= 1e-4
    # the default 10 iterations (HARL's setting) already reduce the residual
    x10 = conjugate_gradient(fvp, g)
    assert float((H @ x10 - g).norm()) < float(g.norm())


def test_conjugate_gradient_dense_spd_exact_in_n_steps() -> None:
    g = torch.Generator().manual_seed(3)
    M = torch.randn(8, 8, generator=g, dtype=F64)
    A = M @ M.T + 0.5 * torch.eye(8, dtype=F64)
    b = torch.randn(8, generator=g, dtype=F64)
    x = conjugate_gradient(lambda v: A @ v, b, iters=8, residual_tol=0.0)
    torch.testing.assert_close(x, torch.linalg.solve(A, b), rtol=1e-6, atol=1e-8)
    # early stop on a tiny residual: b = 0 gives x = 0 without calling Avp
    calls = []
    z = conjugate_gradient(lambda v: calls.append(1) or A @ v, torch.zeros(8, dtype=F64))
    assert torch.equal(z, torch.zeros(8, dtype=F64)) and not calls
    # non-positive curvature stops at the current iterate (x_0 = 0)
    neg = conjugate_gradient(lambda v: -v, b)
    assert torch.equal(neg, torch.zeros(8, dtype=F64))


def test_trpo_step_size() -> None:
    x = torch.tensor([1.0, 2.0], dtype=F64)
    Hx = torch.tensor([3.0, 0.5], dtype=F64)  # x^T H x = 4
    assert trpo_step_size(x, Hx, 0.01) == pytest.approx(math.sqrt(2 * 0.01 / 4.0))
    assert trpo_step_size(x, -Hx, 0.01) == 0.0
    assert trpo_step_size(x, torch.zeros(2, dtype=F64), 0.01) == 0.0
    # the full step meets the quadratic KL model with equality: 1/2 (bx)^T H (bx) = delta
    s = Setup(1)
    fvp = make_fisher_vector_product(s.mean_kl(), s.params, damping=0.0)
    g = flat_grad(s.surrogate(), s.params)
    x = conjugate_gradient(fvp, g, iters=100)
    beta = trpo_step_size(x, fvp(x), 0.01)
    step = beta * x
    assert 0.5 * float(step @ fvp(step)) == pytest.approx(0.01, rel=1e-9)


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
