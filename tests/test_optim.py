"""The speed kit (marlopt.optim) against plain torch: each trick equal to what it replaces (bit for
bit where the arithmetic is the same), the switch back to plain torch, and the fallbacks where this
torch lacks a private op the tricks call."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from marlopt import optim
from marlopt.optim import (
    _FAST_TANH_MIN_NUMEL,
    LeanFusedAdam,
    adam,
    clip_and_step,
    clip_grad_norm,
    set_speed_kit,
    speed_kit_enabled,
    tanh_,
)


#: torch's fused Adam runs on CPU (torch >= 2.4): the tests that build one directly need it.
needs_fused_cpu = pytest.mark.skipif(not optim._fused_adam_works(torch.device("cpu"), torch.float32),
                                     reason="this torch has no fused Adam on CPU (torch < 2.4)")


@pytest.fixture
def kit_off():
    """The speed kit switched off for one test (then on again, its default)."""
    set_speed_kit(False)
    try:
        yield
    finally:
        set_speed_kit(True)


@pytest.fixture
def without(monkeypatch):
    """``without(*names)``: these private ops removed from ``torch`` for one test, detected afresh."""

    def remove(*names: str) -> optim._TorchOps:
        for name in names:
            monkeypatch.delattr(torch, name)
        monkeypatch.setattr(optim, "_OPS", optim._detect())
        monkeypatch.setattr(optim, "_FUSED_ADAM", {})
        return optim._OPS

    return remove


def _twins(seed: int = 0, shapes=((16, 5), (16,), (3, 16))) -> tuple[list, list]:
    """Two lists of equal parameters: ours and plain torch's."""
    g = torch.Generator().manual_seed(seed)
    ours = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in shapes]
    return ours, [torch.nn.Parameter(p.detach().clone()) for p in ours]


def _step_both(ours, ref, opt_ours, opt_ref, steps: int = 5, seed: int = 1) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p, q in zip(ours, ref):
            grad = torch.randn(p.shape, generator=g)
            p.grad, q.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_ref.step()


# -- 3. Adam -------------------------------------------------------------------------------------------
def test_adam_helper_matches_plain_adam():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(7, 5)), torch.nn.Parameter(torch.randn(5))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    initial = [p.detach().clone() for p in params]
    fast, plain = adam(params, lr=1e-2, eps=1e-6), torch.optim.Adam(twins, lr=1e-2, eps=1e-6)
    assert fast.defaults["lr"] == 1e-2 and fast.defaults["eps"] == 1e-6
    assert isinstance(fast, LeanFusedAdam) == optim._fused_adam_works(torch.device("cpu"), torch.float32)
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


@needs_fused_cpu
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


@needs_fused_cpu
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


# -- 4. Gradient clipping ---------------------------------------------------------------------------
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


# -- 6. Fast in-place tanh ---------------------------------------------------------------------------
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


# -- 5. One optimiser step ----------------------------------------------------------------------------
@needs_fused_cpu
def test_clip_and_step_is_torchs_backward_clip_and_fused_step_bit_for_bit():
    torch.manual_seed(0)
    ours, ref = _twins()
    opt_ours, opt_ref = adam(ours, lr=1e-2, eps=1e-6), torch.optim.Adam(ref, lr=1e-2, eps=1e-6, fused=True)
    x = torch.randn(32, 5)

    def loss(params):
        w1, b1, w2 = params
        return F.linear(torch.tanh(F.linear(x, w1, b1)), w2).square().mean() * 50.0

    for _ in range(4):
        norm = clip_and_step(opt_ours, ours, loss(ours), max_norm=0.5)
        opt_ref.zero_grad(set_to_none=True)
        loss(ref).backward()
        expected = torch.nn.utils.clip_grad_norm_(ref, 0.5)
        opt_ref.step()
        assert isinstance(norm, float) and norm == float(expected)
        assert all(torch.equal(p, q) for p, q in zip(ours, ref))


# -- 1. The switch ------------------------------------------------------------------------------------
def test_speed_kit_switch_is_on_by_default_and_toggles():
    assert speed_kit_enabled()
    set_speed_kit(False)
    try:
        assert not speed_kit_enabled()
    finally:
        set_speed_kit(True)
    assert speed_kit_enabled()


def test_speed_kit_off_adam_is_plain_torch_adam(kit_off):
    ours, ref = _twins()
    opt = adam(ours, lr=1e-2, eps=1e-6)
    assert type(opt) is torch.optim.Adam and not opt.defaults["fused"]
    assert opt.defaults["lr"] == 1e-2 and opt.defaults["eps"] == 1e-6
    plain = torch.optim.Adam(ref, lr=1e-2, eps=1e-6)
    _step_both(ours, ref, opt, plain)
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))


def test_speed_kit_off_clip_grad_norm_calls_torchs(kit_off, monkeypatch):
    ours, ref = _twins()
    for p, q in zip(ours, ref):
        p.grad = torch.randn(p.shape) * 10
        q.grad = p.grad.clone()
    calls = []
    torchs = torch.nn.utils.clip_grad_norm_

    def spy(*args, **kwargs):
        calls.append(1)
        return torchs(*args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    norm = clip_grad_norm(ours, 1.0)
    assert calls == [1]
    assert torch.equal(norm, torchs(ref, 1.0))
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours, ref))


def test_speed_kit_off_tanh_is_torch_tanh_out_of_place(kit_off):
    x = torch.linspace(-6, 6, _FAST_TANH_MIN_NUMEL * 2, requires_grad=True)
    y = x * 1.0
    before = y.detach().clone()
    out = tanh_(y)
    assert out.data_ptr() != y.data_ptr() and torch.equal(y.detach(), before), "out of place"
    assert torch.equal(out, torch.tanh(before))
    (gx,) = torch.autograd.grad(out.sum(), x)
    (rx,) = torch.autograd.grad(torch.tanh(x * 1.0).sum(), x)
    assert torch.equal(gx, rx)


def _train_actor(steps: int = 3) -> list[torch.Tensor]:
    """A few HAPPO-like steps of a Tanh actor (fast tanh, Adam, clipping), from one fixed init."""
    from marlopt.config import ModelConfig
    from marlopt.envs.base import EnvSpec
    from marlopt.models import Actor

    spec = EnvSpec(n_agents=3, obs_dim=8, state_dim=4, n_actions=5, episode_limit=10)
    torch.manual_seed(0)
    actor = Actor(spec, ModelConfig(hidden_sizes=[256, 256], activation="tanh", recurrent=False, sharing="separate"))
    g = torch.Generator().manual_seed(1)
    obs = torch.randn(1, 64, 3, 8, generator=g)  # 64 · 3 · 256 elements: the fast tanh's size
    actions = torch.randint(0, 5, (1, 64, 3), generator=g)
    adv = torch.randn(1, 64, 3, generator=g)
    opt = adam(actor.parameters(), lr=1e-3, eps=1e-5)
    params = list(actor.parameters())
    for _ in range(steps):
        logp, entropy = actor.evaluate(obs, None, actions, None, None)
        clip_and_step(opt, params, -(logp * adv).mean() - 0.01 * entropy.mean(), max_norm=0.5)
    return [p.detach().clone() for p in params]


def test_speed_kit_off_trains_to_the_same_parameters_within_tolerance():
    fast = _train_actor()
    set_speed_kit(False)
    try:
        plain = _train_actor()
    finally:
        set_speed_kit(True)
    for p, q in zip(fast, plain):
        torch.testing.assert_close(p, q, atol=1e-5, rtol=1e-4)


# -- 2. Fallbacks where this torch lacks a private op ----------------------------------------------------
def test_this_torch_has_every_op_the_kit_uses():
    """The bit-identity tests above exercise the fast paths: they exist on the torch under test."""
    assert all(optim._detect())
    version = tuple(int(v) for v in torch.__version__.split("+")[0].split(".")[:2])
    assert optim._fused_adam_works(torch.device("cpu"), torch.float32) == (version >= (2, 4))


@pytest.mark.parametrize("missing", ["_fused_adam_", "_foreach_add_"])
def test_adam_without_a_fused_op_is_plain_adam(without, missing):
    ops = without(missing)
    assert not ops.lean_adam
    ours, ref = _twins()
    opt = adam(ours, lr=1e-2, eps=1e-6)
    assert type(opt) is torch.optim.Adam and not opt.defaults["fused"]
    plain = torch.optim.Adam(ref, lr=1e-2, eps=1e-6, foreach=False)
    _step_both(ours, ref, opt, plain)
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))


def test_adam_where_fused_adam_does_not_run_is_plain_adam(monkeypatch):
    """torch < 2.4 has no fused Adam on CPU: the one-time probe finds it, ``adam`` falls back."""

    def unsupported(*args, **kwargs):
        raise RuntimeError("_fused_adam_ is not implemented for 'CPU'")

    monkeypatch.setattr(torch, "_fused_adam_", unsupported)
    monkeypatch.setattr(optim, "_FUSED_ADAM", {})
    ours, ref = _twins()
    opt = adam(ours, lr=1e-2, eps=1e-6)
    assert type(opt) is torch.optim.Adam and not opt.defaults["fused"]
    assert optim._FUSED_ADAM == {("cpu", torch.float32): False}
    plain = torch.optim.Adam(ref, lr=1e-2, eps=1e-6)
    _step_both(ours, ref, opt, plain)
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))


@needs_fused_cpu
def test_lean_fused_adam_without_its_direct_ops_steps_through_torch(monkeypatch):
    monkeypatch.setattr(optim, "_OPS", optim._OPS._replace(lean_adam=False))
    ours, ref = _twins()
    opt, fused = LeanFusedAdam(ours, lr=1e-2, eps=1e-6), torch.optim.Adam(ref, lr=1e-2, eps=1e-6, fused=True)
    _step_both(ours, ref, opt, fused)
    assert opt._lists is None, "never the direct path"
    assert all(torch.equal(p, q) for p, q in zip(ours, ref))


@pytest.mark.parametrize("missing", ["_foreach_norm", "_foreach_mul_"])
def test_clip_grad_norm_without_a_foreach_op_is_torchs_loop(without, missing):
    g = torch.Generator().manual_seed(4)
    shapes = [(256, 18), (256,), (5, 256), (5,)]
    ours = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    loop = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    default = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    for p, q, r in zip(ours, loop, default):
        p.grad = torch.randn(p.shape, generator=g) * 3
        q.grad, r.grad = p.grad.clone(), p.grad.clone()
    expected_loop = torch.nn.utils.clip_grad_norm_(loop, 1.0, foreach=False)
    expected = torch.nn.utils.clip_grad_norm_(default, 1.0)  # with the op, before it goes
    assert not without(missing).foreach_clip
    norm = clip_grad_norm(ours, 1.0)
    assert torch.equal(norm, expected_loop)
    assert all(torch.equal(p.grad, q.grad) for p, q in zip(ours, loop))
    torch.testing.assert_close(norm, expected)
    for p, r in zip(ours, default):
        torch.testing.assert_close(p.grad, r.grad)


def test_fast_tanh_backward_without_aten_tanh_backward(monkeypatch):
    x = (torch.randn(_FAST_TANH_MIN_NUMEL + 3) * 3).requires_grad_()
    w = torch.randn(x.shape)
    (expected,) = torch.autograd.grad((tanh_(x * 1.0) * w).sum(), x)
    monkeypatch.setattr(optim, "_OPS", optim._OPS._replace(tanh_backward=False))
    y = tanh_(x * 1.0)
    (gx,) = torch.autograd.grad((y * w).sum(), x)
    torch.testing.assert_close(gx, expected, atol=1e-7, rtol=1e-6)
    (reference,) = torch.autograd.grad((torch.tanh(x) * w).sum(), x)
    torch.testing.assert_close(gx, reference, atol=1e-6, rtol=1e-5)


# -- 7. Two optimiser steps side by side ---------------------------------------------------------


def test_side_by_side_runs_the_job_on_the_worker_thread_with_one_intra_op_thread_each():
    import threading

    seen = {}

    def job(x):
        seen["thread"], seen["threads"] = threading.current_thread().name, torch.get_num_threads()
        return x + 1

    torch.set_num_threads(2)
    try:
        with optim.side_by_side(True) as beside:
            join = beside(job, 41)
            inside = torch.get_num_threads()
            assert join() == 42
        assert seen["thread"].startswith("marlopt-side") and seen["threads"] == 1 and inside == 1
        assert torch.get_num_threads() == 2  # restored
    finally:
        torch.set_num_threads(1)


def test_side_by_side_off_runs_the_job_at_the_join_on_the_calling_thread(kit_off):
    import threading

    calls = []
    for enabled in (False, True):  # off by argument, or (kit_off) by the speed kit's switch
        with optim.side_by_side(enabled) as beside:
            join = beside(lambda: calls.append(threading.current_thread().name) or len(calls))
            assert calls == [] or len(calls) == 1  # nothing has run before the join
            before = len(calls)
            assert join() == before + 1
    assert calls == [threading.current_thread().name] * 2


def test_side_by_side_raises_the_jobs_exception_at_the_join_and_an_unjoined_one_at_the_exit():
    def fail():
        raise ValueError("critic exploded")

    with pytest.raises(ValueError, match="critic exploded"):
        with optim.side_by_side(True) as beside:
            beside(fail)()
    with pytest.raises(ValueError, match="critic exploded"):
        with optim.side_by_side(True) as beside:
            beside(fail)  # never joined: not dropped


def test_side_by_side_lets_a_running_job_finish_before_the_blocks_exception_leaves():
    import time

    done = []

    def slow():
        time.sleep(0.2)
        done.append(True)

    with pytest.raises(RuntimeError, match="actor"):
        with optim.side_by_side(True) as beside:
            beside(slow)
            raise RuntimeError("actor step failed")
    assert done == [True]  # nothing still writes parameters after the exception


def test_side_by_side_jobs_see_the_non_finite_guard_of_the_caller():
    from marlopt.guard import NonFiniteGuard, active_guard

    guard = NonFiniteGuard(patience=3)
    with guard.watch(), optim.side_by_side(True) as beside:
        assert beside(active_guard)() is guard
