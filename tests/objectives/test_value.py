"""Clipped value loss: loop reference, Huber vs MSE/2, clipping in the normalised space."""

from __future__ import annotations

import pytest
import torch

from marlopt.objectives import value_loss
from marlopt.returns import ValueNorm

SHAPE = (4, 3, 2)  # [T, E, N]
F64 = torch.float64


def _l(x: float, d: float | None) -> float:
    if d is None:
        return 0.5 * x * x
    return 0.5 * x * x if abs(x) <= d else d * (abs(x) - d / 2)


def _dl(x: float, d: float | None) -> float:
    if d is None or abs(x) <= d:
        return x
    return d if x > 0 else -d


def _ref(v, vo, ret, clip, d, mask):
    rows = list(zip(v.detach().flatten().tolist(), vo.flatten().tolist(), ret.flatten().tolist(),
                    [1.0] * v.numel() if mask is None else mask.flatten().tolist()))
    n = sum(1 for *_, m in rows if m)
    total, grads = 0.0, []
    for vi, oi, ri, m in rows:
        lo = _l(vi - ri, d)
        g = _dl(vi - ri, d)
        if clip is not None:
            diff = vi - oi
            vc = oi + min(max(diff, -clip), clip)
            lc = _l(vc - ri, d)
            if lc > lo:
                lo, g = lc, (_dl(vc - ri, d) if abs(diff) < clip else 0.0)
        if m:
            total += lo
        grads.append(g / n if m else 0.0)
    return total / max(n, 1), torch.tensor(grads, dtype=F64).reshape(v.shape)


def _data(seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    v = (torch.randn(SHAPE, generator=g, dtype=F64) * scale).requires_grad_()
    vo = v.detach() + torch.randn(SHAPE, generator=g, dtype=F64) * 0.3
    ret = torch.randn(SHAPE, generator=g, dtype=F64) * scale
    mask = (torch.rand(SHAPE, generator=g) > 0.3).double()
    return v, vo, ret, mask


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("clip", [0.2, 0.05, None])
@pytest.mark.parametrize("delta", [10.0, 0.5, None])
def test_matches_reference(use_mask, clip, delta):
    v, vo, ret, mask = _data(0, scale=3.0)
    mask = mask if use_mask else None
    loss = value_loss(v, vo, ret, clip, delta, mask)
    ref, grad = _ref(v, vo, ret, clip, delta, mask)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss.backward()
    torch.testing.assert_close(v.grad, grad, rtol=1e-10, atol=1e-12)


def test_huber_vs_mse_switch():
    v = torch.tensor([0.0, 0.0], dtype=F64)
    ret = torch.tensor([1.0, 30.0], dtype=F64)
    # MSE convention is x^2 / 2 (MAPPO's mse_loss), i.e. half of F.mse_loss
    assert value_loss(v, v, ret, clip=None, huber_delta=None).item() == pytest.approx((0.5 + 450.0) / 2)
    # Huber(10): small errors identical, large errors linear
    assert value_loss(v, v, ret, clip=None, huber_delta=10.0).item() == pytest.approx((0.5 + 10 * (30 - 5)) / 2)
    small = torch.tensor([0.5, -2.0], dtype=F64)
    assert value_loss(v, v, small, None, 10.0).item() == value_loss(v, v, small, None, None).item()


def test_clip_takes_the_pessimistic_branch():
    # V moved from V_old=0 to 1.0 towards R=2: the clipped prediction 0.2 has the larger error
    v = torch.tensor([1.0], dtype=F64, requires_grad=True)
    loss = value_loss(v, torch.zeros(1, dtype=F64), torch.tensor([2.0], dtype=F64), clip=0.2, huber_delta=None)
    assert loss.item() == pytest.approx(0.5 * 1.8**2)
    loss.backward()
    assert v.grad.item() == 0.0  # the clipped branch is flat in V
    # V moved away from R: the unclipped branch is the larger, gradient flows
    v = torch.tensor([-1.0], dtype=F64, requires_grad=True)
    loss = value_loss(v, torch.zeros(1, dtype=F64), torch.tensor([2.0], dtype=F64), clip=0.2, huber_delta=None)
    loss.backward()
    assert loss.item() == pytest.approx(0.5 * 9.0) and v.grad.item() == pytest.approx(-3.0)


def test_clipping_happens_in_the_normalised_space():
    """With a ValueNorm (std ~ 10), the 0.2 clip applies to normalised values (2.0 raw units)."""
    vn = ValueNorm(beta=0.9)
    vn.update(torch.tensor([-10.0, 10.0], dtype=F64))  # mean 0, std 10
    mean, std = vn.mean_std()
    assert (mean.item(), std.item()) == pytest.approx((0.0, 10.0))
    v_n = torch.tensor([0.15], dtype=F64)  # raw 1.5: inside the normalised clip, outside a raw 0.2 clip
    vo_n = torch.zeros(1, dtype=F64)
    ret_n = vn.normalize(torch.tensor([5.0], dtype=F64))  # 0.5
    loss = value_loss(v_n, vo_n, ret_n, clip=0.2, huber_delta=None)
    assert loss.item() == pytest.approx(0.5 * 0.35**2)  # unclipped: |0.15 - 0| < 0.2
    # raw-space clipping would have produced a different (wrong) loss
    raw = value_loss(vn.denormalize(v_n), vn.denormalize(vo_n), torch.tensor([5.0], dtype=F64), 0.2, None)
    assert raw.item() / std.item() ** 2 != pytest.approx(loss.item())


def test_zero_mask_detached_targets_and_validation():
    v, vo, ret, _ = _data(1)
    vo.requires_grad_()
    ret.requires_grad_()
    loss = value_loss(v, vo, ret, mask=torch.zeros(SHAPE))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(v.grad).all()
    value_loss(v, vo, ret).backward()
    assert vo.grad is None and ret.grad is None
    for kw in ({"clip": 0.0}, {"huber_delta": -1.0}):
        with pytest.raises(ValueError):
            value_loss(v, vo, ret, **kw)
    with pytest.raises(ValueError, match="returns"):
        value_loss(torch.zeros(4), torch.zeros(4), torch.zeros(4, 1))
