"""HAPPO / HAA2C losses: factor outside the clip, no gradient into the factor."""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.objectives import a2c_loss, happo_loss, ppo_clip_loss

SHAPE = (4, 3, 2)  # [T, E, N]
F64 = torch.float64


def _data(seed: int):
    g = torch.Generator().manual_seed(seed)
    logp = (torch.randn(SHAPE, generator=g, dtype=F64) * 0.3).requires_grad_()
    logp_old = torch.randn(SHAPE, generator=g, dtype=F64) * 0.3
    adv = torch.randn(SHAPE, generator=g, dtype=F64)
    factor = torch.exp(torch.randn(SHAPE, generator=g, dtype=F64) * 0.3)
    mask = (torch.rand(SHAPE, generator=g) > 0.3).double()
    return logp, logp_old, adv, factor, mask


def _ref(logp, logp_old, adv, factor, mask, clip):
    """Per-sample loop: -mean min(r F A, clip(r) F A) and analytic dL/dlogp."""
    rows = zip(
        logp.detach().flatten().tolist(), logp_old.flatten().tolist(), adv.flatten().tolist(),
        factor.flatten().tolist(), ([1.0] * logp.numel() if mask is None else mask.flatten().tolist()),
    )
    rows = list(rows)
    n = sum(1 for *_, m in rows if m)
    total, grads = 0.0, []
    for x, y, a, f, m in rows:
        r = math.exp(x - y)
        rc = min(max(r, 1 - clip), 1 + clip)
        unclipped, clipped = r * f * a, rc * f * a
        if m:
            total += min(unclipped, clipped)
        grads.append(-(r * f * a if unclipped <= clipped else 0.0) / n if m else 0.0)
    return -total / max(n, 1), torch.tensor(grads, dtype=F64).reshape(logp.shape)


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("clip", [0.1, 0.2])
def test_happo_matches_reference(use_mask, clip):
    logp, logp_old, adv, factor, mask = _data(0)
    mask = mask if use_mask else None
    loss = happo_loss(logp, logp_old, adv, factor, clip, mask)
    ref, grad = _ref(logp, logp_old, adv, factor, mask, clip)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, grad, rtol=1e-10, atol=1e-12)


def test_factor_is_outside_the_clip():
    """r inside [1-eps, 1+eps] but r*factor far outside: the sample still has gradient -F A r.
    (Clipping r*factor instead would zero it.) And r outside in the improving direction: zero."""
    lp = torch.tensor([math.log(1.1), math.log(1.5)], dtype=F64, requires_grad=True)
    adv = torch.tensor([2.0, 2.0], dtype=F64)
    factor = torch.tensor([3.0, 0.5], dtype=F64)
    loss = happo_loss(lp, torch.zeros(2, dtype=F64), adv, factor, clip=0.2)
    assert loss.item() == pytest.approx(-(1.1 * 3.0 * 2.0 + 1.2 * 0.5 * 2.0) / 2)
    loss.backward()
    assert lp.grad[0].item() == pytest.approx(-1.1 * 3.0 * 2.0 / 2)
    assert lp.grad[1].item() == 0.0


def test_factor_gets_no_gradient_and_factor_one_is_ppo():
    logp, logp_old, adv, factor, mask = _data(1)
    factor.requires_grad_()
    happo_loss(logp, logp_old, adv, factor, 0.2, mask).backward()
    assert factor.grad is None and logp.grad is not None
    ones = torch.ones(SHAPE[:-1] + (1,), dtype=F64)
    assert happo_loss(logp, logp_old, adv, ones, 0.2, mask).item() == pytest.approx(
        ppo_clip_loss(logp, logp_old, adv, 0.2, mask).item(), rel=1e-14
    )


def test_a2c_loss():
    logp, logp_old, adv, factor, mask = _data(2)
    loss = a2c_loss(logp, logp_old, adv, factor, mask)
    r = torch.exp(logp.detach() - logp_old)
    ref = -(r * factor * adv * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-12)
    loss.backward()
    torch.testing.assert_close(logp.grad, -(r * factor * adv * mask) / mask.sum())
    # at r = 1 the gradient is the vanilla policy gradient -M / n; no clip for large ratios
    lp = torch.tensor([0.0, 3.0], dtype=F64, requires_grad=True)
    a2c_loss(lp, torch.zeros(2, dtype=F64), torch.tensor([1.5, 1.0], dtype=F64)).backward()
    assert lp.grad.tolist() == pytest.approx([-0.75, -math.exp(3.0) / 2])
    f = torch.tensor([2.0, 2.0], dtype=F64, requires_grad=True)
    a2c_loss(lp, torch.zeros(2, dtype=F64), torch.ones(2, dtype=F64), f).backward()
    assert f.grad is None


def test_zero_mask_and_shape_checks():
    logp, logp_old, adv, factor, _ = _data(3)
    zero = torch.zeros(SHAPE)
    assert happo_loss(logp, logp_old, adv, factor, 0.2, zero).item() == 0.0
    assert a2c_loss(logp, logp_old, adv, factor, zero).item() == 0.0
    with pytest.raises(ValueError, match="factor"):
        happo_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.ones(4, 1))
    with pytest.raises(ValueError, match="factor"):
        a2c_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4), torch.ones(4, 1))
