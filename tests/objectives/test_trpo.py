"""Tests of marlopt.objectives.trpo (HATRPO's pure pieces) against dense references on a tiny
categorical (softmax) policy network with ~50 parameters. The line search, which writes
parameters, is tested in tests/algos/test_trust_region.py (on the same ``Setup``)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from marlopt.algos.trust_region import set_flat_params_
from marlopt.objectives.trpo import (
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    make_fisher_vector_product,
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
# flat gradient
# ---------------------------------------------------------------------------------------------
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
