"""A GRU over a whole sequence as one autograd node, with a hand-written backward through time.

The cell loop (``GroupedGRUCell.forward`` with the speed kit off) records about a dozen autograd
nodes per step; over a 128-step BPTT chunk the update then spends its time in Python and in the
autograd engine's per-node work, not in the arithmetic (the tensors are ``[B·N, 3H]`` with B·N in
the tens). :class:`_GRUSequence` runs the same equations under ``no_grad``, and its backward is the
GRU's adjoint written out by hand, with no autograd bookkeeping: per step one ``baddbmm`` (the
state's gradient) and a few elementwise ops; per block of steps (``BLOCK_ELEMENTS``) the
step-local factors of the adjoint and the recurrent weights' gradients, vectorised. Measured in
``scripts/bench_gru.py`` against the cell loop, torch's own ``torch.gru`` over reset-free
segments and a ``torch.jit.script`` loop (both slower than this).

Layout: ``G`` weight groups, ``R`` rows per group. ``gates_x[L, G, R, 3H]`` (the input map
``x W_iᵀ + b_i``, computed outside with ordinary autograd), ``h0[G, R, H]``, ``w_h[G, 3H, H]``,
``b_h[G, 3H]``, ``keep[L, G, R, 1]`` (``1 - starts``: the state is zeroed *before* a step that
starts an episode). Forward, for each step ``t``::

    h̃ = keep_t ⊙ h_{t-1};  g = h̃ W_hᵀ + b_h = [g_r, g_z, g_n]
    r = σ(x_r + g_r);  z = σ(x_z + g_z);  n = tanh(x_n + r ⊙ g_n);  h_t = n + z ⊙ (h̃ - n)

Backward, with ``δ_t = ∂L/∂h_t`` (the output's gradient plus the next step's)::

    δn = δ_t ⊙ (1 - z)(1 - n²);  δz = δ_t ⊙ (h̃ - n) z (1 - z);  δr = δn ⊙ g_n r (1 - r)
    ∂g = [δr, δz, δn ⊙ r];  ∂x = [δr, δz, δn];  δ_{t-1} = keep_t ⊙ (δ_t ⊙ z + ∂g W_h)
    ∂W_h = Σ_t ∂gᵀ h̃;  ∂b_h = Σ_t ∂g

On the CPU in float32 both loops run in C++ when the speed kit's kernel is available
(:mod:`marlopt.models.gru_kernel`: the same equations, one ATen matmul and one vectorised loop per
step); elsewhere (CUDA, float64, no compiler) in the Python below.

Where a second derivative is asked for (``create_graph=True``: HATRPO's Fisher-vector product) or
the cotangents are batched (``is_grads_batched=True``: GRASP's per-agent gradients), the backward
recomputes the sequence with the differentiable cell equations and differentiates that, so those
are torch's own.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from marlopt.models import gru_kernel


def reference_sequence(
    gates_x: Tensor, h0: Tensor, w_h: Tensor, b_h: Tensor, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The same equations as :class:`_GRUSequence`, step by step through ordinary autograd."""
    hidden = h0.shape[-1]
    outs = []
    h = h0
    for t in range(gates_x.shape[0]):
        if keep is not None:
            h = h * keep[t]
        g = torch.baddbmm(b_h.unsqueeze(1), h, w_h.transpose(1, 2))
        xr, xz, xn = gates_x[t].split(hidden, dim=-1)
        gr, gz, gn = g.split(hidden, dim=-1)
        r, z = torch.sigmoid(xr + gr), torch.sigmoid(xz + gz)
        n = torch.tanh(xn + r * gn)
        h = n + z * (h - n)
        outs.append(h)
    return torch.stack(outs), h


#: Backward computes the adjoint's step-local factors for blocks of steps of about this many elements
#: (a few vectorised ops per block, not per step; 64 KiB blocks stay in cache and in the allocator's
#: recycled small blocks).
BLOCK_ELEMENTS = 1 << 14


class _GRUSequence(torch.autograd.Function):
    """``(gates_x, h0, w_h, b_h, keep) -> (outputs[L, G, R, H], h_L[G, R, H])``; see the module.

    Every step's intermediates are small tensors of their own, not slices of sequence-long buffers:
    the allocator recycles small blocks from call to call, where fresh multi-megabyte buffers cost a
    page fault per 4 KiB on first touch (measured: slower than the cell loop from ~100 rows on).
    They are kept on ``ctx`` (not ``save_for_backward``, whose unpacking costs per tensor), so they
    live as long as the graph does, and a ``retain_graph=True`` backward can run again.
    """

    @staticmethod
    def forward(ctx: Any, gates_x: Tensor, h0: Tensor, w_h: Tensor, b_h: Tensor, keep: Tensor | None):  # type: ignore[override]
        ctx.save_for_backward(gates_x, h0, w_h, b_h, keep)
        kernel = ctx.kernel = _kernel_for(gates_x, h0, w_h, b_h)
        if kernel is not None:
            keep_rows = gates_x.new_empty(0) if keep is None else keep.reshape(keep.shape[:3]).contiguous()
            w_t = w_h.transpose(1, 2).contiguous()
            out, *saved = kernel.forward(gates_x.contiguous(), h0.contiguous(), w_t, b_h.unsqueeze(1), keep_rows)
            ctx.steps = (keep_rows, *saved)
            return out, out[-1].clone()
        hidden = h0.shape[-1]
        resets = _reset_steps(keep)
        w_t, bias = w_h.transpose(1, 2).contiguous(), b_h.unsqueeze(1)  # contiguous: MKL's faster case
        h = h0
        h_tilde, rz, n, diff, g_n, outs = [], [], [], [], [], []
        for t, (x_rz, x_n) in enumerate(zip(gates_x[..., : 2 * hidden].unbind(0), gates_x[..., 2 * hidden :].unbind(0))):
            if t in resets:
                h = h * keep[t]  # type: ignore[index]
            g = torch.baddbmm(bias, h, w_t)
            rz_t = torch.add(x_rz, g[..., : 2 * hidden]).sigmoid_()
            g_n_t = g[..., 2 * hidden :]
            n_t = torch.addcmul(x_n, rz_t[..., :hidden], g_n_t).tanh_()
            diff_t = h - n_t
            h_tilde.append(h)
            h = torch.addcmul(n_t, rz_t[..., hidden:], diff_t)  # n + z (h̃ - n)
            rz.append(rz_t), n.append(n_t), diff.append(diff_t), g_n.append(g_n_t), outs.append(h)
        ctx.resets, ctx.steps = resets, (h_tilde, rz, n, diff, g_n)
        return torch.stack(outs), h.clone()

    @staticmethod
    def backward(ctx: Any, d_out: Tensor, d_last: Tensor):  # type: ignore[override]
        gates_x, h0, w_h, b_h, keep = ctx.saved_tensors
        if torch.is_grad_enabled() or _batched(d_out) or _batched(d_last):  # see _recompute_backward
            return _recompute_backward(ctx, d_out, d_last, gates_x, h0, w_h, b_h, keep)
        if ctx.kernel is not None:
            d_x, d_h0, d_w, d_b = ctx.kernel.backward(d_out.contiguous(), d_last.contiguous(), w_h.contiguous(),
                                                      *ctx.steps)
            return d_x, d_h0, d_w, d_b, None
        h_tilde, rz, n, diff, g_n = ctx.steps
        steps, groups, rows, hidden = d_out.shape
        resets = ctx.resets
        d_x = d_out.new_empty(steps, groups, rows, 3 * hidden)  # ∂x = [δr, δz, δn]
        d_w = torch.zeros_like(w_h)  # Σ_t ∂gᵀ h̃
        d_b = torch.zeros_like(b_h)  # Σ_t ∂g, summed over rows
        d_out_prev = [None, *d_out[:-1].unbind(0)]  # ∂L/∂h_{t-1} from the output at t-1
        block = max(1, BLOCK_ELEMENTS // (groups * rows * hidden))
        delta = d_out[-1] + d_last
        for end in range(steps, 0, -block):
            start = max(0, end - block)
            # the adjoint's step-local factors for a block of steps at once (small enough to stay in
            # cache): a = (1 - z)(1 - n²) (δ -> δn), b = z (1 - z)(h̃ - n) (δ -> δz), c = r (1 - r) g_n (δn -> δr)
            rz_b, n_b = torch.stack(rz[start:end]), torch.stack(n[start:end])
            r_b, z_b = rz_b[..., :hidden], rz_b[..., hidden:]
            one_minus_z = 1 - z_b
            a = (1 - n_b * n_b).mul_(one_minus_z)
            b = one_minus_z.mul_(z_b).mul_(torch.stack(diff[start:end]))
            c = (r_b - r_b * r_b).mul_(torch.stack(g_n[start:end]))
            d_g_b = d_x.new_empty(end - start, groups, rows, 3 * hidden)  # ∂g = [δr, δz, δn r]
            factors = zip(range(start, end), a.unbind(0), b.unbind(0), c.unbind(0), r_b.unbind(0), z_b.unbind(0),
                          d_g_b.unbind(0))
            for t, a_t, b_t, c_t, r, z, d_g in reversed(list(factors)):
                d_x_t = d_x[t]
                dn = torch.mul(delta, a_t, out=d_x_t[..., 2 * hidden :])
                torch.mul(delta, b_t, out=d_x_t[..., hidden : 2 * hidden])
                torch.mul(dn, c_t, out=d_x_t[..., :hidden])
                d_g.copy_(d_x_t)[..., 2 * hidden :].mul_(r)
                if t in resets:  # δ_{t-1} = ∂L/∂h_{t-1} directly + keep_t (δ z + ∂g W_h)
                    delta = torch.baddbmm(delta * z, d_g, w_h).mul_(keep[t])
                    if t > 0:
                        delta = delta.add_(d_out_prev[t])
                elif t > 0:
                    delta = torch.baddbmm(torch.addcmul(d_out_prev[t], delta, z), d_g, w_h)
                else:
                    delta = torch.baddbmm(delta * z, d_g, w_h)
            # the block's recurrent weight gradients, one matmul: ∂W_h += Σ_t ∂gᵀ h̃, ∂b_h += Σ_t ∂g
            flat_g = d_g_b.transpose(0, 1).reshape(groups, -1, 3 * hidden)
            d_w.baddbmm_(flat_g.transpose(1, 2), torch.stack(h_tilde[start:end], 1).reshape(groups, -1, hidden))
            d_b.add_(flat_g.sum(1))
        return d_x, delta, d_w, d_b, None


def _kernel_for(*tensors: Tensor) -> Any | None:
    """The C++ kernel's ops where they apply to these tensors (CPU, float32), else None."""
    if any(t.device.type != "cpu" or t.dtype != torch.float32 for t in tensors):
        return None
    return gru_kernel.ops()


def _reset_steps(keep: Tensor | None) -> frozenset[int]:
    """The steps where some row's state is zeroed (one host sync for the whole sequence)."""
    if keep is None:
        return frozenset()
    return frozenset((keep.flatten(1) != 1).any(1).nonzero().flatten().tolist())


def _recompute_backward(ctx: Any, d_out, d_last, gates_x, h0, w_h, b_h, keep):
    """The backward through torch's own autograd: the cell equations rerun on the saved inputs
    (still attached to their graph) and differentiated. For a second derivative
    (``create_graph=True``, HATRPO's Fisher-vector product) and for batched cotangents
    (``autograd.grad(..., is_grads_batched=True)``, GRASP's per-agent gradients), which the hand-written
    backward's ``out=`` ops cannot take."""
    create_graph = torch.is_grad_enabled()
    inputs = (gates_x, h0, w_h, b_h)
    wanted = [t for t, need in zip(inputs, ctx.needs_input_grad) if need]
    with torch.enable_grad():
        out, last = reference_sequence(*inputs, keep)
        grads = iter(torch.autograd.grad([out, last], wanted, [d_out, d_last], create_graph=create_graph,
                                         allow_unused=True))
    return (*(next(grads) if need else None for need in ctx.needs_input_grad[:4]), None)


def _batched(t: Tensor | None) -> bool:
    """Whether ``t`` is a vmap batched tensor (functorch's, or the legacy one of ``is_grads_batched``)."""
    if t is None:
        return False
    functorch = torch._C._functorch
    return any(getattr(functorch, name, lambda _: False)(t) for name in ("is_batchedtensor", "is_legacy_batchedtensor"))


def gru_sequence(
    gates_x: Tensor, h0: Tensor, w_h: Tensor, b_h: Tensor, keep: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Fused GRU over a sequence, layout ``[L, G, R, ·]`` (module docstring); returns the outputs
    ``[L, G, R, H]`` and the state after the last step ``[G, R, H]``."""
    return _GRUSequence.apply(gates_x, h0, w_h, b_h, keep)  # type: ignore[no-any-return]
