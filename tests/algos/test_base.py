"""Shared update machinery: the (fused where possible) Adam steps exactly like torch's Adam."""

from __future__ import annotations

import torch

from marlopt.algos.base import adam


def test_adam_helper_matches_plain_adam():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    initial = [p.detach().clone() for p in params]
    fast, plain = adam(params, lr=1e-2, eps=1e-6), torch.optim.Adam(twins, lr=1e-2, eps=1e-6)
    assert fast.defaults["lr"] == 1e-2 and fast.defaults["eps"] == 1e-6
    for step in range(5):
        g = [torch.randn_like(p) for p in params]
        for p, q, grad in zip(params, twins, g):
            p.grad, q.grad = grad.clone(), grad.clone()
        fast.step()
        plain.step()
    for p, q, p0 in zip(params, twins, initial):
        assert torch.allclose(p, q, atol=1e-6, rtol=1e-5)
        assert (p.detach() - p0).abs().max() > 1e-3  # it did move
    # its state loads into a plain Adam (checkpoints stay portable)
    restored = torch.optim.Adam(twins, lr=1e-2, eps=1e-6)
    restored.load_state_dict(fast.state_dict())
    assert restored.state_dict()["state"][0]["step"] == 5
