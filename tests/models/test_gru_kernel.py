"""The speed kit's CPU GRU kernel (marlopt.models.gru_kernel): where it is used, how it is named
and built, and that it computes the fused sequence's equations (the cell-loop equality of every
shape is in tests/models/test_gru_fast.py, which runs each case through the kernel and the Python
loop)."""

from __future__ import annotations

import pytest
import torch

from marlopt.models import fast_gru, gru_kernel


@pytest.fixture
def fresh_loader(monkeypatch):
    """A loader that has not tried to load yet (restored afterwards)."""
    monkeypatch.setattr(gru_kernel, "_loaded", {})


def _case(seed: int, steps: int, groups: int, rows: int, hidden: int, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    gx = (scale * torch.randn(steps, groups, rows, 3 * hidden, generator=gen)).requires_grad_()
    h0 = torch.randn(groups, rows, hidden, generator=gen).requires_grad_()
    w = (0.3 * torch.randn(groups, 3 * hidden, hidden, generator=gen)).requires_grad_()
    b = torch.randn(groups, 3 * hidden, generator=gen).requires_grad_()
    keep = (torch.rand(steps, groups, rows, 1, generator=gen) > 0.1).float()
    return gx, h0, w, b, keep


def _outputs_and_grads(fn, gx, h0, w, b, keep):
    out, last = fn(gx, h0, w, b, keep)
    loss = (out * torch.sin(out)).sum() + last.pow(2).sum()
    return [out, last, *torch.autograd.grad(loss, [gx, h0, w, b])]


@pytest.mark.parametrize("scale", [1.0, 40.0], ids=["ordinary", "saturated"])
@pytest.mark.parametrize("groups", [1, 3])
def test_kernel_equals_the_reference_equations(groups, scale):
    """Outputs and every gradient against ``reference_sequence`` (ordinary autograd), with gates
    saturated far into the sigmoid's and tanh's flat tails too (the vectorised exp and tanh)."""
    if gru_kernel.ops() is None:
        pytest.skip(f"the CPU GRU kernel is unavailable here ({gru_kernel.unavailable_reason() or 'build failed'})")
    case = _case(0, 64, groups, 7, 32, scale)
    assert fast_gru._kernel_for(*case[:4]) is not None
    got = _outputs_and_grads(fast_gru.gru_sequence, *case)
    ref = _outputs_and_grads(fast_gru.reference_sequence, *case)
    for g, r in zip(got, ref):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, r, atol=1e-5 * max(1.0, r.abs().max().item()), rtol=1e-4)


def test_a_nan_stays_a_nan():
    """A non-finite value in the inputs reaches the outputs and the gradients (the NaN guard,
    marlopt/guard.py, must see it), as in the Python loop."""
    if gru_kernel.ops() is None:
        pytest.skip(f"the CPU GRU kernel is unavailable here ({gru_kernel.unavailable_reason() or 'build failed'})")
    gx, h0, w, b, keep = _case(2, 6, 1, 3, 8)
    keep = torch.ones_like(keep)
    with torch.no_grad():
        h0[0, 1, 2] = float("nan")
        w[0, 5, 0] = float("nan")  # the gate g_r[5] reads h̃[0]: NaN from step 1 on in every row
    out, last, d_gx, d_h0, d_w, d_b = _outputs_and_grads(fast_gru.gru_sequence, gx, h0, w, b, keep)
    assert torch.isnan(out[0, 0, 1]).any() and torch.isnan(out[1:]).any(-1).all()
    for grad in (d_gx, d_h0, d_w, d_b):
        assert torch.isnan(grad).any()


def test_float64_and_no_kernel_take_the_python_loop(fresh_loader):
    case = [t.double() for t in _case(1, 5, 1, 2, 4)]
    assert fast_gru._kernel_for(*case[:4]) is None  # float64: never the kernel
    gru_kernel._loaded["ops"] = None  # the kernel reported unavailable: float32 takes the loop too
    case32 = _case(1, 5, 1, 2, 4)
    assert fast_gru._kernel_for(*case32[:4]) is None
    got = _outputs_and_grads(fast_gru.gru_sequence, *case32)
    ref = _outputs_and_grads(fast_gru.reference_sequence, *case32)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_the_environment_switch_turns_it_off(fresh_loader, monkeypatch):
    monkeypatch.setenv("MARLOPT_GRU_KERNEL", "0")
    assert gru_kernel.unavailable_reason() == "MARLOPT_GRU_KERNEL=0"
    assert gru_kernel.ops() is None


def test_the_build_name_changes_with_the_cpu_and_the_source(monkeypatch, tmp_path):
    """One build per CPU type (-march=native) and per source: a shared home directory never loads a
    build made for another CPU."""
    name = gru_kernel.build_name()
    assert name.startswith("marlopt_gru_") and name == gru_kernel.build_name()
    monkeypatch.setattr(gru_kernel, "_cpu_identity", lambda: "flags : sse2")
    assert gru_kernel.build_name() != name
    monkeypatch.undo()
    source = tmp_path / "gru_kernel.cpp"
    source.write_text(gru_kernel.SOURCE.read_text() + "\n// changed\n")
    monkeypatch.setattr(gru_kernel, "SOURCE", source)
    assert gru_kernel.build_name() != name


def test_a_finished_build_is_loaded_without_running_the_builder(tmp_path):
    """A process that finds this source's build loads it directly: the builder (ninja), which
    would rebuild it whenever another checkout of the same source built it last, never runs."""
    import subprocess
    import sys

    if gru_kernel.ops() is None:
        pytest.skip("the kernel is not available here")
    code = (
        "import torch.utils.cpp_extension as c\n"
        "def refuse(*a, **k): raise SystemExit('the builder ran')\n"
        "c.load = refuse\n"
        "from marlopt.models import gru_kernel\n"
        "assert gru_kernel.ops() is not None\n"
        "print('loaded', gru_kernel.build_name())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == f"loaded {gru_kernel.build_name()}"


def test_a_failed_build_says_so_in_one_line_and_falls_back(fresh_loader, monkeypatch, capsys, tmp_path):
    from torch.utils import cpp_extension

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # the attempt's build directory, not the user's cache

    if gru_kernel.unavailable_reason() is not None:
        pytest.skip(f"the kernel is not attempted here ({gru_kernel.unavailable_reason()})")

    def fail(*args, **kwargs):
        raise RuntimeError("Error building extension 'x': c++: fatal error\nmore lines")

    monkeypatch.setattr(cpp_extension, "load", fail)
    monkeypatch.setattr(gru_kernel, "build_name", lambda: "marlopt_gru_never_built")
    monkeypatch.setattr(gru_kernel, "_registered", lambda: False)  # as in a process that never loaded it
    assert gru_kernel.ops() is None
    assert gru_kernel.ops() is None  # tried once per process
    err = [line for line in capsys.readouterr().err.splitlines() if "did not build" in line]
    assert len(err) == 1 and "Error building extension 'x': c++: fatal error" in err[0]
    assert "Python GRU loop" in err[0] and "MARLOPT_GRU_KERNEL=0" in err[0]
