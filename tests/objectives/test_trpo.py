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
from marlopt.models.distributions import DiagGaussian, MaskedCategorical
from marlopt.objectives import masked_mean
from marlopt.objectives.trpo import (
    KL_MEASURES,
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    harl_discrete_kl,
    make_fisher_vector_product,
    policy_kl,
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


# ---------------------------------------------------------------------------------------------
# The KL measures (algo.kl_measure): the true KL and HARL's code's discrete measure
# ---------------------------------------------------------------------------------------------
def _harl_terms_loop(logits_old: torch.Tensor, logits_new: torch.Tensor, avail: torch.Tensor | None) -> torch.Tensor:
    """HARL's sum_a [exp(D_a) - 1 - D_a] sample by sample, action by action, in Python floats.
    Unavailable actions stay in the sum with both logits pinned at -1e10, i.e. (exactly)
    D_a = lse_old - lse_new, lse = log sum_{b available} exp(logit_b)."""
    out = []
    for i in range(logits_old.shape[0]):
        xo, xn = logits_old[i].tolist(), logits_new[i].tolist()
        ok = [True] * len(xo) if avail is None else avail[i].tolist()
        lse_o = math.log(sum(math.exp(v) for v, k in zip(xo, ok) if k))
        lse_n = math.log(sum(math.exp(v) for v, k in zip(xn, ok) if k))
        total = 0.0
        for a in range(len(xo)):
            d = (xn[a] - lse_n) - (xo[a] - lse_o) if ok[a] else lse_o - lse_n
            total += math.exp(d) - 1.0 - d
        out.append(total)
    return torch.tensor(out, dtype=F64)


@pytest.mark.parametrize("with_avail", [False, True])
@pytest.mark.parametrize("n_actions", [2, 5, 14])
def test_harl_discrete_kl_equals_the_loop_over_samples_and_actions(with_avail: bool, n_actions: int) -> None:
    g = torch.Generator().manual_seed(n_actions)
    old = torch.randn(32, n_actions, generator=g, dtype=F64)
    new = old + 0.5 * torch.randn(32, n_actions, generator=g, dtype=F64)
    avail = None
    if with_avail:
        avail = torch.rand(32, n_actions, generator=g) > 0.3
        avail[:, 0] = True  # at least one available action per sample
    ref = _harl_terms_loop(old, new, avail)
    # float64: -1e10 - lse keeps lse to ~2e-6, so an unavailable action's D_a is within ~4e-6
    torch.testing.assert_close(harl_discrete_kl(old, new, avail), ref, rtol=1e-9, atol=0 if avail is None else 2e-5)
    # raw logits or normalised log-probabilities (HARL passes torch Categorical's normalised logits)
    lp_old, lp_new = torch.log_softmax(old, -1), torch.log_softmax(new, -1)
    if avail is None:
        torch.testing.assert_close(harl_discrete_kl(lp_old, lp_new), ref, rtol=1e-9, atol=1e-12)
    # not the true KL: not weighted by pi_old, and summed over all actions
    true = (lp_old.exp() * (lp_old - lp_new)).sum(-1)
    assert not torch.allclose(harl_discrete_kl(old, new), true, rtol=0.1)
    assert torch.equal(harl_discrete_kl(old, old, avail), torch.zeros(32, dtype=F64))
    # leading dims are free: [L, B, N, A] -> [L, B, N]
    assert harl_discrete_kl(old.view(2, 4, 4, n_actions), new.view(2, 4, 4, n_actions)).shape == (2, 4, 4)


def test_harl_discrete_kl_float32_unavailable_actions_add_no_value() -> None:
    """HARL's float32 arithmetic: -1e10 - lse rounds to -1e10, so an unavailable action's term is 0."""
    g = torch.Generator().manual_seed(0)
    old = torch.randn(16, 6, generator=g)
    new = old + torch.randn(16, 6, generator=g)
    avail = torch.rand(16, 6, generator=g) > 0.4
    avail[:, 0] = True
    lp_new, lp_old = (torch.log_softmax(x.masked_fill(~avail, -1e30), -1) for x in (new, old))
    delta = lp_new - lp_old
    over_available = torch.where(avail, torch.expm1(delta) - delta, torch.zeros(())).sum(-1)
    torch.testing.assert_close(harl_discrete_kl(old, new, avail), over_available)


class MeasureSetup:
    """A tiny softmax policy with some unavailable actions and inactive samples, and the mean KL
    in either measure (``policy_kl`` on ``MaskedCategorical``s, masked mean over active samples)
    as a function of a flat parameter vector, for dense autograd references."""

    def __init__(self, seed: int, n_actions: int = 5, batch: int = 48, with_avail: bool = True,
                 uniform: bool = False) -> None:
        g = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(OBS, HID), nn.Tanh(), nn.Linear(HID, n_actions)).to(F64)
        if uniform:  # pi(.|o) = 1/A everywhere at theta_old
            nn.init.zeros_(self.net[2].weight)
            nn.init.zeros_(self.net[2].bias)
        self.params = list(self.net.parameters())
        self.names = [n for n, _ in self.net.named_parameters()]
        self.shapes = [p.shape for p in self.params]
        self.n = sum(p.numel() for p in self.params)
        self.obs = torch.randn(batch, OBS, generator=g, dtype=F64)
        self.avail = None
        if with_avail:
            self.avail = torch.rand(batch, n_actions, generator=g) > 0.3
            self.avail[:, 0] = True
        self.active = torch.rand(batch, generator=g) > 0.2
        self.theta_old = flat_params(self.params)
        with torch.no_grad():
            self.old = MaskedCategorical(self.net(self.obs), self.avail)

    def dist(self, flat: torch.Tensor | None = None) -> MaskedCategorical:
        if flat is None:
            return MaskedCategorical(self.net(self.obs), self.avail)
        out, i = {}, 0
        for name, shape in zip(self.names, self.shapes):
            k = math.prod(shape)
            out[name] = flat[i : i + k].view(shape)
            i += k
        return MaskedCategorical(functional_call(self.net, out, (self.obs,)), self.avail)

    def mean_kl(self, measure: str, flat: torch.Tensor | None = None) -> torch.Tensor:
        return masked_mean(policy_kl(self.old, self.dist(flat), measure), self.active)

    def hessian(self, measure: str) -> torch.Tensor:
        return torch.autograd.functional.hessian(lambda f: self.mean_kl(measure, f), self.theta_old)

    def gauss_newton(self, measure: str) -> torch.Tensor:
        """Closed form at theta_old: mean over active samples of sum_a w_a J_a J_a^T, J_a = grad log pi(a),
        w_a = pi_old(a) (true KL: the Fisher) or 1 (HARL's measure, all actions incl. unavailable)."""
        J = torch.autograd.functional.jacobian(lambda f: self.dist(f).log_probs, self.theta_old)  # [B, A, P]
        w = self.old.probs() if measure == "true" else torch.ones_like(self.old.log_probs)
        per = torch.einsum("ba,bap,baq->bpq", w, J, J)
        return per[self.active].mean(0)


@pytest.mark.parametrize("measure", KL_MEASURES)
@pytest.mark.parametrize("with_avail", [False, True])
def test_fisher_vector_product_of_each_measure_equals_the_dense_hessian(measure: str, with_avail: bool) -> None:
    s = MeasureSetup(seed=3, with_avail=with_avail)
    H = s.hessian(measure)
    damping = 0.1
    fvp = make_fisher_vector_product(s.mean_kl(measure), s.params, damping=damping)
    for _ in range(3):
        v = torch.randn(s.n, dtype=F64)
        torch.testing.assert_close(fvp(v), H @ v + damping * v, rtol=1e-9, atol=1e-11)
    # and the Hessian is the closed form of the measure (unavailable actions: grad(lse) grad(lse)^T)
    torch.testing.assert_close(H, s.gauss_newton(measure), rtol=1e-7, atol=1e-10)
    assert float(torch.linalg.eigvalsh(H).min()) > -1e-10


def test_the_two_measures_are_different_quadratic_forms() -> None:
    s = MeasureSetup(seed=4, with_avail=False)
    assert not torch.allclose(s.hessian("harl"), s.hessian("true"), rtol=0.5)


@pytest.mark.parametrize("n_actions", [5, 14])
def test_harl_curvature_is_A_times_the_true_kl_for_a_uniform_policy(n_actions: int) -> None:
    """At a uniform pi_old, sum_a J_a J_a^T = A * sum_a (1/A) J_a J_a^T: the harl measure's Hessian is
    exactly A times the Fisher of the true KL, so a delta tuned on it allows ~A times less true KL."""
    s = MeasureSetup(seed=1, n_actions=n_actions, with_avail=False, uniform=True)
    fvp_true = make_fisher_vector_product(s.mean_kl("true"), s.params, damping=0.0)
    fvp_harl = make_fisher_vector_product(s.mean_kl("harl"), s.params, damping=0.0)
    for _ in range(3):
        v = torch.randn(s.n, dtype=F64)
        ratio = float(v @ fvp_harl(v)) / float(v @ fvp_true(v))
        assert ratio == pytest.approx(n_actions, rel=1e-9)
        torch.testing.assert_close(fvp_harl(v), n_actions * fvp_true(v), rtol=1e-9, atol=1e-12)
    # a peaked policy: the ratio grows beyond A (about 1 / min_a pi(a))
    with torch.no_grad():
        s.net[2].bias.copy_(torch.tensor([4.0] + [0.0] * (n_actions - 1), dtype=F64))
        s.old = MaskedCategorical(s.net(s.obs), None)
    s.theta_old = flat_params(s.params)
    H_true, H_harl = s.hessian("true"), s.hessian("harl")
    # every sample has these logits, so the trace ratio is the logit-space one,
    # sum_a |e_a - pi|^2 / sum_a pi_a |e_a - pi|^2 = (A - 2 + A |pi|^2) / (1 - |pi|^2): 56 (A=5), 61 (A=14)
    pi = s.old.probs()[0]
    sq = float(pi @ pi)
    expected = (n_actions - 2 + n_actions * sq) / (1 - sq)
    assert float(torch.trace(H_harl) / torch.trace(H_true)) == pytest.approx(expected, rel=1e-9)
    assert expected > 4 * n_actions


def test_policy_kl_picks_the_measure() -> None:
    g = torch.Generator().manual_seed(0)
    old = MaskedCategorical(torch.randn(8, 4, generator=g), None)
    new = MaskedCategorical(torch.randn(8, 4, generator=g), None)
    torch.testing.assert_close(policy_kl(old, new, "true"), old.kl(new))
    torch.testing.assert_close(policy_kl(old, new), old.kl(new))
    torch.testing.assert_close(policy_kl(old, new, "harl"), harl_discrete_kl(old.log_probs, new.log_probs))
    # Gaussians: HARL's code uses the true KL (its _kl_normal_normal, summed over action dims)
    p = DiagGaussian(torch.randn(8, 3, generator=g), torch.zeros(3), None)
    q = DiagGaussian(torch.randn(8, 3, generator=g), 0.2 * torch.ones(3), None)
    torch.testing.assert_close(policy_kl(p, q, "harl"), p.kl(q))
    with pytest.raises(ValueError, match="unknown KL measure"):
        policy_kl(old, new, "approx")
