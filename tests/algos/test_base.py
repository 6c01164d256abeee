"""Shared update machinery: Adam, gradient clipping and minibatching, each against torch's or the
plain way of doing it."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.algos.base import Chunks, LeanFusedAdam, OnPolicyRule, adam, clip_grad_norm


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


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), scale=st.floats(1e-3, 1e3), max_norm=st.floats(0.1, 10.0))
def test_clip_grad_norm_equals_torchs_bit_for_bit(seed, scale, max_norm):
    g = torch.Generator().manual_seed(seed)
    shapes = [(256, 18), (256,), (5, 256), (5,)]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    ref = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, q in zip(ours, ref):
        p.grad = torch.randn(p.shape, generator=g) * scale
        q.grad = p.grad.clone()
    ours[1].grad = None  # a parameter without gradient is skipped by both
    ref[1].grad = None
    norm = clip_grad_norm(ours, max_norm)
    expected = torch.nn.utils.clip_grad_norm_(ref, max_norm)
    assert torch.equal(norm, expected)
    for p, q in zip(ours, ref):
        assert (p.grad is None and q.grad is None) or torch.equal(p.grad, q.grad)
    after = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in ours if p.grad is not None]))
    assert after <= max_norm * (1 + 1e-5) or torch.isclose(after, norm)  # clipped, or already inside


def _chunks(length: int, sequences: int) -> Chunks:
    g = torch.Generator().manual_seed(1)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(length, sequences, *shape, generator=g)

    return Chunks(obs=r(3, 4), state=r(1, 6), avail=r(3, 2) > 0, actions=r(3), logp=r(3), values=r(1),
                  active=r(3) > 0, critic_active=r(1) > 0, starts=r(1), advantages=r(3), returns=r(1),
                  h_actor=torch.randn(sequences, 3, 8, generator=g), h_critic=None)


def test_minibatches_are_the_gathered_chunks_of_one_permutation():
    """Slices of the once-shuffled data = gathering each ``perm.chunk(k)`` separately (the plain way)."""
    rule = OnPolicyRule.__new__(OnPolicyRule)  # only the config is needed for minibatching
    rule.cfg = SimpleNamespace(num_minibatches=4)
    chunks = _chunks(length=5, sequences=22)  # 22 sequences -> minibatches of 6, 6, 6, 4
    torch.manual_seed(3)
    got = list(rule.minibatches(chunks))
    torch.manual_seed(3)
    expected = [chunks.select(i) for i in torch.randperm(22).chunk(4)]
    assert [mb.num_sequences for mb in got] == [6, 6, 6, 4]
    for mb, ref in zip(got, expected):
        for name in ("obs", "state", "avail", "actions", "advantages", "h_actor"):
            assert torch.equal(getattr(mb, name), getattr(ref, name)), name
        assert mb.h_critic is None


def test_lean_fused_adam_is_torchs_fused_adam_bit_for_bit():
    torch.manual_seed(0)
    shapes = [(16, 5), (16,), (3, 16)]
    lean = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().clone()) for p in lean]
    ours, torchs = LeanFusedAdam(lean, lr=1e-2, eps=1e-6), torch.optim.Adam(ref, lr=1e-2, eps=1e-6, fused=True)

    def step(grads):
        for p, q, g in zip(lean, ref, grads):
            p.grad, q.grad = (None, None) if g is None else (g.clone(), g.clone())
        ours.step()
        torchs.step()
        for p, q in zip(lean, ref):
            assert torch.equal(p, q)

    for _ in range(3):
        step([torch.randn(s) for s in shapes])
    assert ours._lists is not None, "after the first step the direct path is taken"
    step([torch.randn(shapes[0]), None, torch.randn(shapes[2])])  # a missing gradient: torch's path
    ours.param_groups[0]["lr"] = torchs.param_groups[0]["lr"] = 3e-3  # a schedule changes lr
    step([torch.randn(s) for s in shapes])
    assert ours.state_dict()["state"][0]["step"] == torchs.state_dict()["state"][0]["step"] == 5
    ours.load_state_dict(copy.deepcopy(torchs.state_dict()))  # resume: fresh state tensors, listed again
    assert ours._lists is None
    for _ in range(2):
        step([torch.randn(s) for s in shapes])
    assert ours._lists is not None and torch.equal(ours.state_dict()["state"][2]["exp_avg_sq"],
                                                     torchs.state_dict()["state"][2]["exp_avg_sq"])


def test_lean_fused_adam_zero_grad_clears_every_gradient():
    params = [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(3))]
    opt = LeanFusedAdam(params, lr=1e-2)
    for _ in range(2):  # the second step takes the direct path (its lists exist)
        for p in params:
            p.grad = torch.ones_like(p)
        opt.step()
    assert opt._lists is not None
    opt.zero_grad()
    assert all(p.grad is None for p in params)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.zero_grad(set_to_none=False)  # torch's path: zeroed in place
    assert all(p.grad is not None and not p.grad.any() for p in params)
