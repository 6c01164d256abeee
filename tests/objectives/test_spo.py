"""spo_loss (MASPO and its asymmetric ablation) against per-sample references and its optimum."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.objectives import spo_loss

SHAPE = (4, 3, 5)  # [T, E, N]


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(SHAPE, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    logp_old = torch.randn(SHAPE, generator=g, dtype=torch.float64) * 0.3
    adv = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    adv[0, 0, :2] = 0.0
    mask = (torch.rand(SHAPE, generator=g) > 0.3).double()
    return logp, logp_old, adv, mask


def _ref(logp, logp_old, adv, mask, rho_plus, rho_minus):
    """Per-sample loop: J = rA - |A|/(2|rho-1|) (r-1)^2; loss and analytic dL/dlogp."""
    lp, lpo, a = logp.detach().flatten().tolist(), logp_old.flatten().tolist(), adv.flatten().tolist()
    m = [1.0] * len(lp) if mask is None else mask.flatten().tolist()
    count = sum(1 for x in m if x)
    total, grads = 0.0, []
    for x, y, ai, mi in zip(lp, lpo, a, m):
        r = math.exp(x - y)
        rho = rho_plus if ai > 0 else rho_minus
        c = abs(ai) / (2 * abs(rho - 1))
        dj_dr = ai - 2 * c * (r - 1)
        if mi:
            total += r * ai - c * (r - 1) ** 2
        grads.append(-dj_dr * r / count if mi else 0.0)
    return -total / max(count, 1), torch.tensor(grads, dtype=torch.float64).reshape(logp.shape)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("eps", [0.1, 0.2, 0.5])
def test_symmetric_matches_reference(use_mask, eps):
    logp, logp_old, adv, mask = _data(0)
    mask = mask if use_mask else None
    loss = spo_loss(logp, logp_old, adv, eps, mask)
    ref, grad = _ref(logp, logp_old, adv, mask, 1 + eps, 1 - eps)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("targets", [(1.3, 0.9), (1.05, 0.6), (2.0, 0.5)])
def test_asymmetric_matches_reference(targets):
    logp, logp_old, adv, mask = _data(1)
    rp, rm = targets
    loss = spo_loss(logp, logp_old, adv, 0.2, mask, rho_plus=rp, rho_minus=rm)
    ref, grad = _ref(logp, logp_old, adv, mask, rp, rm)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, grad, rtol=1e-10, atol=1e-12)
    # only one target given: the other defaults to 1 -+ eps
    ref_half, _ = _ref(logp, logp_old, adv, mask, rp, 0.8)
    assert spo_loss(logp, logp_old, adv, 0.2, mask, rho_plus=rp).item() == pytest.approx(ref_half, rel=1e-12)


def _grad_at(log_r: float, a: float, **kw) -> float:
    lp = torch.tensor([log_r], dtype=torch.float64, requires_grad=True)
    spo_loss(lp, torch.zeros(1, dtype=torch.float64), torch.tensor([a], dtype=torch.float64), **kw).backward()
    return lp.grad.item()


@settings(max_examples=150, deadline=None)
@given(
    a=st.floats(1e-3, 100.0) | st.floats(-100.0, -1e-3),
    eps=st.floats(0.01, 0.9),
    offset=st.floats(0.01, 2.0),
)
def test_symmetric_optimum_at_one_plus_eps_sign_a(a, eps, offset):
    rho = 1 + eps * math.copysign(1.0, a)
    assert abs(_grad_at(math.log(rho), a, eps=eps)) <= 1e-9 * abs(a)
    # concave in r: the loss's logp-gradient points away from the optimum on either side
    assert _grad_at(math.log(rho) + offset, a, eps=eps) > 0
    assert _grad_at(math.log(rho) - offset, a, eps=eps) < 0


@settings(max_examples=150, deadline=None)
@given(
    a=st.floats(1e-3, 100.0) | st.floats(-100.0, -1e-3),
    rho_plus=st.floats(1.01, 3.0),
    rho_minus=st.floats(0.05, 0.99),
)
def test_asymmetric_optimum_at_targets(a, rho_plus, rho_minus):
    rho = rho_plus if a > 0 else rho_minus
    g = _grad_at(math.log(rho), a, eps=0.2, rho_plus=rho_plus, rho_minus=rho_minus)
    assert abs(g) <= 1e-9 * abs(a)
    assert _grad_at(math.log(rho) + 0.05, a, eps=0.2, rho_plus=rho_plus, rho_minus=rho_minus) > 0
    assert _grad_at(math.log(rho) - 0.05, a, eps=0.2, rho_plus=rho_plus, rho_minus=rho_minus) < 0


def test_zero_advantage_contributes_nothing_and_zero_mask_is_safe():
    logp = torch.tensor([0.3, -2.0], dtype=torch.float64, requires_grad=True)
    loss = spo_loss(logp, torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64))
    loss.backward()
    assert loss.item() == 0.0 and (logp.grad == 0).all()
    logp.grad = None
    loss = spo_loss(logp, torch.zeros(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64), mask=torch.zeros(2))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logp.grad).all()


def test_extreme_log_ratios_finite_in_float32():
    logp = torch.tensor([50.0, -50.0, 50.0, -50.0], requires_grad=True)
    loss = spo_loss(logp, torch.zeros(4), torch.tensor([1.0, 1.0, -1.0, -1.0]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    # r >> 1 is pushed down, and (finite MASPO resistance) r << 1 with A>0 is pushed up
    assert logp.grad[0] > 0 and logp.grad[2] > 0 and logp.grad[1] < 0


def test_validation():
    z = torch.zeros(3)
    for kw in ({"eps": 0.0}, {"rho_plus": 1.0}, {"rho_minus": 1.0}, {"rho_minus": 0.0}):
        with pytest.raises(ValueError):
            spo_loss(z, z, z, **kw)
    with pytest.raises(ValueError):
        spo_loss(z, z, torch.zeros(3, 1))
