"""The speed kit's fused GRU sequence (marlopt.models.fast_gru) against the cell loop it replaces
(``GroupedGRUCell`` with the speed kit off): outputs, final state and the gradients to the inputs,
the initial state and every weight, over random shapes and random episode resets; shared and
per-agent weights, one agent's slice (``group=i``), no resets; second derivatives (HATRPO's
Fisher-vector product) and batched cotangents (GRASP's per-agent gradients). Every case runs
twice: through the C++ kernel (marlopt.models.gru_kernel; CPU float32) and through the Python loop."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.models import gru_kernel
from marlopt.models.layers import GroupedGRUCell
from marlopt.optim import set_speed_kit, speed_kit_enabled

ATOL = 1e-5


@pytest.fixture(scope="module", autouse=True, params=["kernel", "python"])
def fused_implementation(request):
    """The fused sequence's two implementations: the C++ kernel, or the Python loop (the kernel
    reported unavailable)."""
    saved = dict(gru_kernel._loaded)
    if request.param == "kernel" and gru_kernel.ops() is None:
        pytest.skip(f"the CPU GRU kernel is unavailable here ({gru_kernel.unavailable_reason() or 'build failed'})")
    if request.param == "python":
        gru_kernel._loaded["ops"] = None
    yield request.param
    gru_kernel._loaded.clear()
    gru_kernel._loaded.update(saved)


@contextmanager
def speed_kit(on: bool):
    before = speed_kit_enabled()
    set_speed_kit(on)
    try:
        yield
    finally:
        set_speed_kit(before)


def make_case(seed: int, steps: int, batch: int, n: int, width: int, hidden: int, groups: int, reset_p: float,
              starts_shape: str):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    cell = GroupedGRUCell(groups, width, hidden)
    with torch.no_grad():  # biases start at zero: make them matter
        for p in cell.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    x = torch.randn(steps, batch, n, width, generator=gen).requires_grad_()
    h = torch.randn(batch, n, hidden, generator=gen).requires_grad_()
    starts = None
    if starts_shape != "none":
        cols = n if starts_shape == "per_agent" else 1
        starts = (torch.rand(steps, batch, cols, generator=gen) < reset_p).float()
    cot = torch.randn(steps, batch, n, hidden, generator=gen)
    cot_last = torch.randn(batch, n, hidden, generator=gen)
    return cell, x, h, starts, cot, cot_last


def run(cell, x, h, starts, cot, cot_last, fused: bool, group=None, create_graph=False):
    with speed_kit(fused):
        out, last = cell(x, h, starts, group=group)
        loss = (out * cot).sum() + (last * cot_last).sum()
        grads = torch.autograd.grad(loss, [x, h, *cell.parameters()], create_graph=create_graph, allow_unused=True)
    return out, last, grads


def assert_equal_runs(a, b, rtol=1e-4):
    out_a, last_a, grads_a = a
    out_b, last_b, grads_b = b
    torch.testing.assert_close(out_b, out_a, atol=ATOL, rtol=rtol)
    torch.testing.assert_close(last_b, last_a, atol=ATOL, rtol=rtol)
    for ga, gb in zip(grads_a, grads_b):
        if ga is None:
            assert gb is None or not gb.abs().any()
            continue
        # the weight gradients sum over every step and row: compare relative to their scale
        torch.testing.assert_close(gb, ga, atol=ATOL * max(1.0, ga.abs().max().item()), rtol=rtol)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), steps=st.integers(2, 40), batch=st.integers(1, 5), n=st.integers(1, 4),
       width=st.integers(1, 12), hidden=st.integers(1, 20), per_agent=st.booleans(),
       reset_p=st.sampled_from([0.0, 0.1, 0.5, 1.0]), starts_shape=st.sampled_from(["none", "per_env", "per_agent"]))
def test_fused_sequence_equals_the_cell_loop(seed, steps, batch, n, width, hidden, per_agent, reset_p, starts_shape):
    case = make_case(seed, steps, batch, n, width, hidden, n if per_agent else 1, reset_p, starts_shape)
    assert_equal_runs(run(*case, fused=False), run(*case, fused=True))


@pytest.mark.parametrize("groups", [1, 3])
def test_realistic_shape_equals_the_cell_loop(groups):
    """A 128-step BPTT chunk at hidden 128, episodes of 25 steps (MPE) and a few random resets."""
    cell, x, h, starts, cot, cot_last = make_case(0, 128, 4, 3, 64, 128, groups, 0.0, "per_env")
    starts[25::25] = 1.0
    starts[7, 1] = 1.0
    assert_equal_runs(run(cell, x, h, starts, cot, cot_last, fused=False),
                      run(cell, x, h, starts, cot, cot_last, fused=True))


@pytest.mark.parametrize("groups", [1, 3])
def test_one_agents_slice_equals_the_cell_loop(groups):
    cell, x, h, starts, cot, cot_last = make_case(1, 12, 3, 3, 5, 8, groups, 0.2, "per_env")
    for i in range(3):
        one = (x[..., i : i + 1, :], h[:, i : i + 1], starts, cot[..., i : i + 1, :], cot_last[:, i : i + 1])
        fused = run(cell, *one, fused=True, group=i)
        assert_equal_runs(run(cell, *one, fused=False, group=i), fused)
        full_out, _, _ = run(cell, x, h, starts, cot, cot_last, fused=True)
        torch.testing.assert_close(fused[0][..., 0, :], full_out[..., i, :], atol=ATOL, rtol=1e-4)


def test_the_switch_gives_the_cell_loop_bit_for_bit():
    """speed_kit=false is today's loop exactly; single steps (rollouts) take the loop either way."""
    cell, x, h, starts, cot, cot_last = make_case(2, 6, 2, 3, 4, 5, 1, 0.3, "per_env")
    with speed_kit(False):
        out, last = cell(x, h, starts)
    manual, state = [], h
    for t in range(6):
        state = cell.step(cell.input_map(x[t]), state * (1.0 - starts[t].unsqueeze(-1)))
        manual.append(state)
    assert torch.equal(out, torch.stack(manual)) and torch.equal(last, state)
    with speed_kit(True):
        one_step = cell(x[:1], h, starts[:1])
    with speed_kit(False):
        assert torch.equal(one_step[0], cell(x[:1], h, starts[:1])[0])


@pytest.mark.parametrize("groups", [1, 3])
def test_second_derivatives_equal_the_cell_loops(groups):
    """create_graph=True (HATRPO's Fisher-vector product) differentiates the gradients again."""
    case = make_case(3, 9, 2, 3, 4, 6, groups, 0.2, "per_agent")
    cell, x = case[0], case[1]
    second = []
    for fused in (False, True):
        _, _, grads = run(*case, fused=fused, create_graph=True)
        with speed_kit(fused):
            second.append(torch.autograd.grad(sum((g * g).sum() for g in grads[2:]), [x, *cell.parameters()]))
    for a, b in zip(*second):
        torch.testing.assert_close(b, a, atol=ATOL * max(1.0, a.abs().max().item()), rtol=1e-4)


def test_batched_cotangents_equal_the_cell_loops():
    """autograd.grad(..., is_grads_batched=True) (GRASP's per-agent gradients) works through it."""
    cell, x, h, starts, _, _ = make_case(4, 7, 2, 3, 4, 6, 1, 0.3, "per_env")
    cots = torch.randn(3, 7, 2, 3, 6)
    grads = []
    for fused in (False, True):
        with speed_kit(fused):
            out, _ = cell(x, h, starts)
            grads.append(torch.autograd.grad(out, [x, *cell.parameters()], grad_outputs=cots, is_grads_batched=True))
    for a, b in zip(*grads):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)


def test_a_retained_graph_runs_backward_twice():
    """retain_graph=True (GRASP's and consensus's per-agent backward passes) gives the same twice."""
    cell, x, h, starts, cot, _ = make_case(6, 8, 2, 3, 4, 6, 3, 0.2, "per_env")
    with speed_kit(True):
        out, _ = cell(x, h, starts)
    first = torch.autograd.grad(out, [x, *cell.parameters()], cot, retain_graph=True)
    second = torch.autograd.grad(out, [x, *cell.parameters()], cot)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


def test_no_gradient_needed_runs_forward_only():
    cell, x, h, starts, _, _ = make_case(5, 10, 2, 3, 4, 6, 3, 0.2, "per_env")
    with torch.no_grad():
        with speed_kit(False):
            loop = cell(x, h, starts)
        with speed_kit(True):
            fused = cell(x, h, starts)
    for a, b in zip(loop, fused):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=1e-4)
