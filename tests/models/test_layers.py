"""Grouped layers' helpers: the fast CPU tanh must be tanh, value and gradient."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.models.layers import _FAST_TANH_MIN_NUMEL, tanh


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 30.0), seed=st.integers(0, 2**31 - 1))
def test_fast_tanh_matches_torch_tanh_and_its_gradient(scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(_FAST_TANH_MIN_NUMEL + 7, generator=g) * scale).requires_grad_()
    y = tanh(x)
    ref = torch.tanh(x.detach().double())
    assert (y.detach().double() - ref).abs().max() <= 3e-7
    w = torch.randn(x.shape, generator=g)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    expected = w.double() * (1 - ref**2)
    # d(1 - y²) = 2y·dy: y's 2e-7 error gives at most ~4e-7·|w|, plus float32 rounding
    assert ((gx.double() - expected).abs() <= 1e-6 * w.abs().double() + 1e-7).all()


def test_fast_tanh_without_grad_and_small_tensors_are_torch_tanh():
    big = torch.linspace(-12, 12, _FAST_TANH_MIN_NUMEL)
    with torch.no_grad():
        assert torch.allclose(tanh(big), torch.tanh(big), atol=3e-7, rtol=0)
    small = torch.randn(64, 5)
    assert torch.equal(tanh(small), torch.tanh(small))  # rollout-sized inputs: torch's own kernel
    assert tanh(big).abs().max() <= 1.0  # saturates at ±1, never beyond
