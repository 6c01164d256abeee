"""ppo_clip_loss and ratio_diagnostics against plain-Python per-sample references."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.objectives import masked_mean, masked_mean_std, ppo_clip_loss, ratio_diagnostics

SHAPE = (5, 3, 4)  # [T, E, N]


def _data(seed: int = 0, shape=SHAPE):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(shape, generator=g, dtype=torch.float64) * 0.3 - 1.0).requires_grad_()
    logp_old = torch.randn(shape, generator=g, dtype=torch.float64) * 0.3 - 1.0
    adv = torch.randn(shape, generator=g, dtype=torch.float64)
    mask = (torch.rand(shape, generator=g) > 0.3).double()
    return logp, logp_old, adv, mask


def _ref_ppo(logp, logp_old, adv, mask, lo_w, hi_w):
    """Per-sample loop: loss and dL/dlogp (analytic) for -mean_mask min(rA, clip(r)A)."""
    lp, lpo, a = logp.detach().flatten().tolist(), logp_old.flatten().tolist(), adv.flatten().tolist()
    m = [1.0] * len(lp) if mask is None else mask.flatten().tolist()
    count = sum(1 for x in m if x != 0)
    total, grads = 0.0, []
    for x, y, adv_i, m_i in zip(lp, lpo, a, m):
        r = math.exp(x - y)
        rc = min(max(r, 1 - lo_w), 1 + hi_w)
        s = min(r * adv_i, rc * adv_i)
        # the unclipped branch is active iff r*A <= clip(r)*A
        d = r * adv_i if r * adv_i <= rc * adv_i else 0.0
        if m_i != 0:
            total += s
            grads.append(-d / count)
        else:
            grads.append(0.0)
    return -total / max(count, 1), torch.tensor(grads, dtype=torch.float64).reshape(logp.shape)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("widths", [(0.2, 0.2), (0.1, 0.3), (0.35, 0.05)])
def test_matches_loop_reference_and_analytic_grad(use_mask, widths):
    logp, logp_old, adv, mask = _data(1)
    mask = mask if use_mask else None
    lo, hi = widths
    if lo == hi:
        loss = ppo_clip_loss(logp, logp_old, adv, lo, mask)
    else:
        loss = ppo_clip_loss(logp, logp_old, adv, 0.2, mask, clip_low=lo, clip_high=hi)
    ref, ref_grad = _ref_ppo(logp, logp_old, adv, mask, lo, hi)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_asymmetric_bounds_are_used():
    """clip_low / clip_high clip to [1 - eps_low, 1 + eps_high] independently."""
    logp_old = torch.zeros(2, dtype=torch.float64)
    logp = torch.tensor([math.log(1.25), math.log(0.75)], dtype=torch.float64)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    # sample 0: A>0, r=1.25: clipped at 1+hi; sample 1: A<0, r=0.75: clipped at 1-lo
    loss = ppo_clip_loss(logp, logp_old, adv, clip_low=0.1, clip_high=0.3)
    assert loss.item() == pytest.approx(-(1.25 * 1.0 + 0.9 * -1.0) / 2)
    loss = ppo_clip_loss(logp, logp_old, adv, clip_low=0.3, clip_high=0.1)
    assert loss.item() == pytest.approx(-(1.1 * 1.0 + 0.75 * -1.0) / 2)


def test_broadcast_mask_and_adv_over_agents():
    logp, logp_old, adv, _ = _data(2)
    team_adv = adv[..., :1]  # [T, E, 1] shared by all agents
    env_mask = (torch.arange(SHAPE[1]) != 1).double()[None, :, None]  # [1, E, 1]
    loss = ppo_clip_loss(logp, logp_old, team_adv, 0.2, env_mask)
    full_mask = env_mask.expand(SHAPE)
    ref, _ = _ref_ppo(logp, logp_old, team_adv.expand(SHAPE), full_mask, 0.2, 0.2)
    assert loss.item() == pytest.approx(ref, rel=1e-12)


def test_all_zero_mask_gives_zero_and_finite_grad():
    logp, logp_old, adv, _ = _data(3)
    logp_old = logp_old.clone()
    logp_old[0, 0, 0] = float("nan")  # padding garbage must not leak through the mask
    loss = ppo_clip_loss(logp, logp_old, adv, 0.2, torch.zeros(SHAPE, dtype=torch.bool))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logp.grad).all() and (logp.grad == 0).all()


def test_masked_garbage_is_ignored():
    logp, logp_old, adv, mask = _data(4)
    clean = ppo_clip_loss(logp, logp_old, adv, 0.2, mask)
    dirty_old = torch.where(mask == 0, torch.full_like(logp_old, float("-inf")), logp_old)
    dirty = ppo_clip_loss(logp, dirty_old, adv, 0.2, mask)
    assert dirty.item() == pytest.approx(clean.item(), rel=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extreme_log_ratios_stay_finite(dtype):
    logp = torch.tensor([50.0, -50.0, 50.0, -50.0], dtype=dtype, requires_grad=True)
    logp_old = torch.zeros(4, dtype=dtype)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0], dtype=dtype)
    loss = ppo_clip_loss(logp, logp_old, adv)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()
    # the A<0, r>>1 sample keeps its (unclipped) corrective gradient through the clamp
    assert logp.grad[2] > 0


@settings(max_examples=100, deadline=None)
@given(
    log_r=st.floats(0.01, 5.0),
    a=st.floats(1e-3, 10.0),
    eps=st.floats(0.05, 0.5),
)
def test_zero_gradient_outside_trust_region_in_improving_direction(log_r, a, eps):
    """Clipping removes the gradient: A>0 with r>1+eps and A<0 with r<1-eps."""
    # A > 0, r > 1 + eps
    lp = torch.tensor([math.log1p(eps) + log_r], dtype=torch.float64, requires_grad=True)
    ppo_clip_loss(lp, torch.zeros(1, dtype=torch.float64), torch.tensor([a], dtype=torch.float64), eps).backward()
    assert lp.grad.item() == 0.0
    # A < 0, r < 1 - eps
    lp = torch.tensor([math.log1p(-eps) - log_r], dtype=torch.float64, requires_grad=True)
    ppo_clip_loss(lp, torch.zeros(1, dtype=torch.float64), torch.tensor([-a], dtype=torch.float64), eps).backward()
    assert lp.grad.item() == 0.0


def test_logp_old_and_adv_get_no_gradient():
    logp, logp_old, adv, mask = _data(5)
    logp_old.requires_grad_()
    adv.requires_grad_()
    ppo_clip_loss(logp, logp_old, adv, 0.2, mask).backward()
    assert logp_old.grad is None and adv.grad is None and logp.grad is not None


def test_shape_mismatch_is_rejected():
    logp = torch.zeros(8)
    with pytest.raises(ValueError, match="adv"):
        ppo_clip_loss(logp, torch.zeros(8), torch.zeros(8, 1))  # would silently become [8, 8]
    with pytest.raises(ValueError, match="mask"):
        ppo_clip_loss(logp, torch.zeros(8), torch.zeros(8), mask=torch.ones(8, 1))
    with pytest.raises(ValueError):
        ppo_clip_loss(logp, torch.zeros(8), torch.zeros(8), clip_low=1.0)


def test_ratio_diagnostics_against_reference():
    logp, logp_old, _, mask = _data(6)
    logp = logp.detach() + torch.linspace(-0.5, 0.5, logp.numel(), dtype=torch.float64).reshape(SHAPE)
    out = ratio_diagnostics(logp, logp_old, mask, low=0.8, high=1.2)
    assert set(out) == {"ratio_max", "ratio_min", "ratio_frac_outside", "approx_kl"}
    assert all(type(v) is float for v in out.values())
    rows = zip(logp.flatten().tolist(), logp_old.flatten().tolist(), mask.flatten().tolist())
    rs = [math.exp(x - y) for x, y, m in rows if m]
    assert out["ratio_max"] == pytest.approx(max(rs), rel=1e-12)
    assert out["ratio_min"] == pytest.approx(min(rs), rel=1e-12)
    assert out["ratio_frac_outside"] == pytest.approx(sum(r < 0.8 or r > 1.2 for r in rs) / len(rs))
    assert out["approx_kl"] == pytest.approx(sum((r - 1) - math.log(r) for r in rs) / len(rs), rel=1e-10)
    assert out["approx_kl"] > 0


def test_ratio_diagnostics_edge_cases():
    z = torch.zeros(4)
    assert ratio_diagnostics(z, z, torch.zeros(4)) == {
        "ratio_max": 1.0, "ratio_min": 1.0, "ratio_frac_outside": 0.0, "approx_kl": 0.0
    }
    big = ratio_diagnostics(torch.tensor([50.0, -50.0]), torch.zeros(2))
    assert big["ratio_max"] == pytest.approx(math.exp(50.0)) and big["ratio_min"] == pytest.approx(math.exp(-50.0))
    assert big["ratio_frac_outside"] == 1.0 and math.isfinite(big["approx_kl"])


def test_masked_mean_helpers():
    x = torch.tensor([[1.0, 2.0], [3.0, float("nan")]], requires_grad=True)
    m = torch.tensor([[1, 1], [1, 0]], dtype=torch.bool)
    assert masked_mean(x, m).item() == pytest.approx(2.0)
    assert masked_mean(x, torch.tensor([1.0, 0.0])).item() == pytest.approx(2.0)  # broadcast mask
    zero = masked_mean(x, torch.zeros(2, 2))
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(x.grad).all()
    mean, std = masked_mean_std(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1, 1, 0]))
    assert (mean.item(), std.item()) == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError):
        masked_mean(torch.zeros(3), torch.ones(3, 1))
