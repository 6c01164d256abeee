"""MARS: per-sample reference, and the propositions of the MARS paper as property tests."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marlopt.objectives import (
    additive_targets,
    mars_loss,
    mars_penalty,
    mars_weight,
    multiplicative_targets,
    ppo_clip_loss,
)

SHAPE = (4, 3, 5)  # [T, E, N]
F64 = torch.float64

nonzero_adv = st.floats(1e-3, 100.0) | st.floats(-100.0, -1e-3)


@st.composite
def targets(draw):
    """(rho_plus, rho_minus, kwargs for mars_loss) in each of the three parameterisations."""
    kind = draw(st.sampled_from(["independent", "multiplicative", "additive"]))
    if kind == "independent":
        rp, rm = draw(st.floats(1.01, 3.0)), draw(st.floats(0.05, 0.99))
        return rp, rm, {"rho_plus": rp, "rho_minus": rm}
    if kind == "multiplicative":
        rp = draw(st.floats(1.01, 3.0))
        return rp, 1 / rp, {"rho_plus": rp}  # rho_minus=None means 1/rho_plus
    rp, rm = additive_targets(draw(st.floats(0.01, 0.95)))
    return rp, rm, {"rho_plus": rp, "rho_minus": rm}


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(SHAPE, generator=g, dtype=F64) * 0.4).requires_grad_()
    logp_old = torch.randn(SHAPE, generator=g, dtype=F64) * 0.4
    adv = torch.randn(SHAPE, generator=g, dtype=F64)
    adv[1, 1, :3] = 0.0
    mask = (torch.rand(SHAPE, generator=g) > 0.3).double()
    return logp, logp_old, adv, mask


def _ref(logp, logp_old, adv, mask, rp, rm):
    """Per-sample loop, written from docs/algorithms/mars.md: loss and analytic dL/dlogp = -(dJ/dr) r / n."""
    lp, lpo, a = logp.detach().flatten().tolist(), logp_old.flatten().tolist(), adv.flatten().tolist()
    m = [1.0] * len(lp) if mask is None else mask.flatten().tolist()
    n = sum(1 for x in m if x)
    total, grads = 0.0, []
    for x, y, ai, mi in zip(lp, lpo, a, m):
        r = math.exp(x - y)
        if ai > 0:
            lam = ai * rp**2 / (rp**2 - 1)
        elif ai < 0:
            lam = ai * rm**2 / (rm**2 - 1)
        else:
            lam = 0.0
        j = r * ai - lam * (r + 1 / r - 2)
        dj_dr = ai - lam * (1 - 1 / r**2)
        if mi:
            total += j
        grads.append(-dj_dr * r / n if mi else 0.0)
    return -total / max(n, 1), torch.tensor(grads, dtype=F64).reshape(logp.shape)


def _dj_dr(r: float, a: float, **kw) -> float:
    """Per-sample dJ/dr through autograd of mars_loss (one sample: dL/dlogp = -dJ/dr * r)."""
    lp = torch.tensor([math.log(r)], dtype=F64, requires_grad=True)
    mars_loss(lp, torch.zeros(1, dtype=F64), torch.tensor([a], dtype=F64), **kw).backward()
    return -lp.grad.item() / r


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize(
    "tg",
    [(1.2, None), (1.5, 0.9), additive_targets(0.2), multiplicative_targets(1.3), (1.1, 0.3)],
)
def test_matches_loop_reference_and_analytic_grad(use_mask, tg):
    logp, logp_old, adv, mask = _data(0)
    mask = mask if use_mask else None
    rp, rm = tg
    loss = mars_loss(logp, logp_old, adv, rp, rm, mask)
    ref, grad = _ref(logp, logp_old, adv, mask, rp, 1 / rp if rm is None else rm)
    assert loss.item() == pytest.approx(ref, rel=1e-11)
    loss.backward()
    torch.testing.assert_close(logp.grad, grad, rtol=1e-9, atol=1e-12)


def test_parameterisation_helpers_and_defaults():
    assert additive_targets(0.2) == pytest.approx((1.2, 0.8))
    assert multiplicative_targets(1.25) == pytest.approx((1.25, 0.8))
    logp, logp_old, adv, mask = _data(1)
    default = mars_loss(logp, logp_old, adv, mask=mask)
    explicit = mars_loss(logp, logp_old, adv, 1.2, 1 / 1.2, mask)
    assert default.item() == pytest.approx(explicit.item(), rel=1e-14)
    additive = mars_loss(logp, logp_old, adv, *additive_targets(0.2), mask=mask)
    assert additive.item() != pytest.approx(default.item(), rel=1e-6)  # 0.8 != 1/1.2


@settings(max_examples=200, deadline=None)
@given(a=nonzero_adv, tg=targets())
def test_gradient_vanishes_exactly_at_target_ratio(a, tg):
    """Target alignment (mars.txt Eq. 11): dJ/dr = 0 at r = rho_plus (A>0) / rho_minus (A<0)."""
    rp, rm, kw = tg
    rho = rp if a > 0 else rm
    assert abs(_dj_dr(rho, a, **kw)) <= 1e-9 * abs(a)
    # ...and it is the maximum of J: dJ/dr > 0 below, < 0 above
    assert _dj_dr(rho * 0.97, a, **kw) > 0
    assert _dj_dr(rho / 0.97, a, **kw) < 0


@settings(max_examples=100, deadline=None)
@given(a=st.floats(-100.0, -1e-3), tg=targets())
def test_barrier_gradient_grows_without_bound_as_ratio_vanishes(a, tg):
    """Prop. 3.1: for A < 0, dJ/dr -> +inf as r -> 0 and the loss -> +inf (no extinction)."""
    _, rm, kw = tg
    lam = a * rm**2 / (rm**2 - 1)
    rs = [rm * 10.0**-k for k in range(1, 7)]
    grads = [_dj_dr(r, a, **kw) for r in rs]
    assert all(g2 > g1 > 0 for g1, g2 in zip(grads, grads[1:]))
    assert grads[-1] >= 0.5 * lam / rs[-1] ** 2  # ~ lambda / r^2: unbounded
    zero, adv = torch.zeros(1, dtype=F64), torch.tensor([a], dtype=F64)
    losses = [mars_loss(torch.tensor([math.log(r)], dtype=F64), zero, adv, **kw).item() for r in rs]
    assert all(l2 > l1 for l1, l2 in zip(losses, losses[1:]))
    assert losses[-1] >= 0.5 * lam / rs[-1]


@settings(max_examples=200, deadline=None)
@given(a=nonzero_adv, tg=targets(), side=st.sampled_from([-1, 1]), dist=st.floats(0.01, 5.0))
def test_no_zero_gradient_outside_trust_region_unlike_clipping(a, tg, side, dist):
    """Prop. 3.2: outside [rho_minus, rho_plus] MARS keeps a nonzero, corrective gradient; the
    clipped objective with the same bounds has exactly zero gradient in the improving direction."""
    rp, rm, kw = tg
    log_r = math.log(rp) + dist if side > 0 else math.log(rm) - dist
    lp = torch.tensor([log_r], dtype=F64, requires_grad=True)
    adv = torch.tensor([a], dtype=F64)
    mars_loss(lp, torch.zeros(1, dtype=F64), adv, **kw).backward()
    g = lp.grad.item()
    rho = rp if a > 0 else rm
    # J is concave in r with its unique maximum at rho: the logp-gradient of the loss has the sign
    # of (r - rho), never zero
    assert g != 0.0 and math.copysign(1.0, g) == math.copysign(1.0, log_r - math.log(rho))

    improving = (a > 0 and side > 0) or (a < 0 and side < 0)
    assume(improving)
    lp_ppo = torch.tensor([log_r], dtype=F64, requires_grad=True)
    ppo_clip_loss(lp_ppo, torch.zeros(1, dtype=F64), adv, clip_low=1 - rm, clip_high=rp - 1).backward()
    assert lp_ppo.grad.item() == 0.0
    assert abs(g) > 0.0


@settings(max_examples=200, deadline=None)
@given(log_r=st.floats(-15.0, 15.0))
def test_penalty_is_inversion_symmetric(log_r):
    r = torch.tensor(math.exp(log_r), dtype=F64)
    p, p_inv = mars_penalty(r).item(), mars_penalty(1 / r).item()
    assert p == pytest.approx(p_inv, rel=1e-9, abs=1e-15)
    assert p == pytest.approx(r.item() + 1 / r.item() - 2, rel=1e-7, abs=1e-12)
    assert p >= 0
    assert mars_penalty(torch.tensor(1.0, dtype=F64)).item() == 0.0


def test_weight_positive_and_zero_advantage_contributes_nothing():
    adv = torch.tensor([-2.0, -1e-8, 0.0, 1e-8, 3.0], dtype=F64)
    lam = mars_weight(adv, 1.2, 0.7)
    assert torch.isfinite(lam).all() and (lam[[0, 1, 3, 4]] > 0).all() and lam[2] == 0.0
    logp = torch.tensor([0.4, -0.7], dtype=F64, requires_grad=True)
    loss = mars_loss(logp, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64))
    loss.backward()
    assert loss.item() == 0.0 and (logp.grad == 0).all()


def test_all_zero_mask_and_extreme_log_ratios():
    logp, logp_old, adv, _ = _data(2)
    loss = mars_loss(logp, logp_old, adv, mask=torch.zeros(SHAPE))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logp.grad).all()
    for dtype in (torch.float32, F64):
        lp = torch.tensor([50.0, -50.0, 50.0, -50.0], dtype=dtype, requires_grad=True)
        loss = mars_loss(lp, torch.zeros(4, dtype=dtype), torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=dtype))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(lp.grad).all()
        # every outlier gets a corrective gradient (towards its target)
        assert lp.grad[0] > 0 and lp.grad[1] < 0 and lp.grad[2] > 0 and lp.grad[3] < 0


def test_validation_messages():
    z = torch.zeros(3)
    with pytest.raises(ValueError, match="rho_plus"):
        mars_loss(z, z, z, rho_plus=1.0)
    with pytest.raises(ValueError, match="rho_plus"):
        mars_loss(z, z, z, rho_plus=0.8)
    with pytest.raises(ValueError, match="rho_minus"):
        mars_loss(z, z, z, rho_plus=1.2, rho_minus=1.1)
    with pytest.raises(ValueError, match="rho_minus"):
        mars_loss(z, z, z, rho_plus=1.2, rho_minus=0.0)
    with pytest.raises(ValueError, match="eps"):
        additive_targets(1.0)
    with pytest.raises(ValueError, match="rho_plus"):
        multiplicative_targets(0.9)
    with pytest.raises(ValueError, match="adv"):
        mars_loss(z, z, torch.zeros(3, 1))
