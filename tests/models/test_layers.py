"""Grouped layers' helpers: the fast CPU tanh must be tanh, value and gradient, and work in place."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from marlopt.models.layers import _FAST_TANH_MIN_NUMEL, tanh_


@settings(max_examples=20, deadline=None)
@given(scale=st.floats(0.01, 30.0), seed=st.integers(0, 2**31 - 1))
def test_fast_tanh_matches_torch_tanh_and_its_gradient(scale, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(_FAST_TANH_MIN_NUMEL + 7, generator=g) * scale).requires_grad_()
    y = tanh_(x * 1.0)  # in place on a fresh intermediate, as a layer's output
    ref = torch.tanh(x.detach().double())
    assert (y.detach().double() - ref).abs().max() <= 3e-7
    w = torch.randn(x.shape, generator=g)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    expected = w.double() * (1 - ref**2)
    # d(1 - y²) = 2y·dy: y's 2e-7 error gives at most ~4e-7·|w|, plus float32 rounding
    assert ((gx.double() - expected).abs() <= 1e-6 * w.abs().double() + 1e-7).all()


def test_fast_tanh_on_a_linear_layers_output_view_has_torchs_gradient():
    """``F.linear`` of a 4-d input returns a view of its matmul's output: in place must still be exact."""
    torch.manual_seed(0)
    x = torch.randn(1, 100, 3, 18)
    w = torch.randn(256, 18, requires_grad=True)
    b = torch.randn(256, requires_grad=True)
    out = tanh_(F.linear(x, w, b))
    assert out.shape == (1, 100, 3, 256)
    gw, gb = torch.autograd.grad(out.square().sum(), (w, b))
    ref = torch.tanh(F.linear(x, w, b))
    rw, rb = torch.autograd.grad(ref.square().sum(), (w, b))
    torch.testing.assert_close(out, ref, atol=3e-7, rtol=0)
    torch.testing.assert_close(gw, rw, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(gb, rb, atol=1e-4, rtol=1e-5)


def test_fast_tanh_refuses_to_overwrite_what_backward_needs():
    x = torch.randn(_FAST_TANH_MIN_NUMEL, requires_grad=True)
    y = x * 2.0
    z = y * y  # saves y for its backward
    tanh_(y)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.sum().backward()


def test_fast_tanh_without_grad_and_small_tensors_are_torch_tanh():
    big = torch.linspace(-12, 12, _FAST_TANH_MIN_NUMEL)
    with torch.no_grad():
        out = tanh_(big.clone())
        assert torch.allclose(out, torch.tanh(big), atol=3e-7, rtol=0)
    small = torch.randn(64, 5)
    assert torch.equal(tanh_(small.clone()), torch.tanh(small))  # rollout-sized inputs: torch's own kernel
    assert out.abs().max() <= 1.0  # saturates at ±1, never beyond
    buf = big.clone()
    assert tanh_(buf).data_ptr() == buf.data_ptr(), "in place: no new buffer"
