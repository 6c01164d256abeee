"""The speed kit: every place where marlopt does what plain torch does, faster, in one file.

Each trick computes what its plain-torch counterpart computes — bit for bit where stated, else
within the stated tolerance — and skips per-call Python work or memory passes that cost more than
the arithmetic on this project's small networks. Timings are in docs/benchmarks.md; the tests in
``tests/test_optim.py`` hold each trick against plain torch.

Sections, top to bottom:

1. The switch: :func:`set_speed_kit` turns every trick off (plain torch everywhere).
2. Private torch ops: which of the ops the tricks call this torch has (detected once; a missing
   one sends its trick to the public path).
3. Adam: :class:`LeanFusedAdam` and the factory :func:`adam`.
4. Gradient clipping: :func:`clip_grad_norm`.
5. One optimiser step: :func:`clip_and_step` (through the non-finite guard, :mod:`marlopt.guard`).
6. Fast in-place tanh: :func:`tanh_` (the activation of Tanh MLPs and of the GRU's candidate).
7. Two optimiser steps side by side: :func:`side_by_side` (a recurrent update's critic step on a
   second thread beside the actor's).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Iterable, Iterator, NamedTuple, TypeVar

import torch
from torch import Tensor, nn

from marlopt.guard import admit

__all__ = [
    "set_speed_kit",
    "speed_kit_enabled",
    "LeanFusedAdam",
    "adam",
    "clip_grad_norm",
    "clip_and_step",
    "tanh_",
    "side_by_side",
]


# -- 1. The switch ---------------------------------------------------------------------------------
#
# One module-level flag. Off, the factories and functions below are plain torch:
# ``adam`` -> ``torch.optim.Adam(params, lr=, eps=)``, ``clip_grad_norm`` ->
# ``torch.nn.utils.clip_grad_norm_``, ``tanh_`` -> ``torch.tanh`` (out of place), and
# ``GroupedGRUCell.forward`` over a sequence -> its cell loop (on, one fused autograd node:
# ``marlopt.models.fast_gru``, tested in tests/models/test_gru_fast.py; on the CPU in float32 its
# loops run in C++, ``marlopt.models.gru_kernel``, built once per machine; ``MARLOPT_GRU_KERNEL=0``
# keeps them in Python). ``adam`` reads the flag when
# it builds an optimiser; ``clip_grad_norm``, ``tanh_`` and the GRU at every call. Set it once, at
# start, before the networks and optimisers are built.

_SPEED_KIT = True


def set_speed_kit(enabled: bool) -> None:
    """Use the speed kit (``True``, the default) or plain torch everywhere (``False``)."""
    global _SPEED_KIT
    _SPEED_KIT = bool(enabled)


def speed_kit_enabled() -> bool:
    """Whether the speed kit is on."""
    return _SPEED_KIT


# -- 2. Private torch ops ----------------------------------------------------------------------------
#
# pyproject promises ``torch>=2.3``; the tricks call ops that are not public API. Their presence is
# detected once, at import; a trick whose op is missing takes the public path instead (the same
# numbers as plain torch). Fused Adam on CPU (torch >= 2.4 only) is probed once per device type and
# dtype, by building and stepping a one-element fused Adam (:func:`_fused_adam_works`).


class _TorchOps(NamedTuple):
    foreach_clip: bool  # torch._foreach_norm and torch._foreach_mul_ (clip_grad_norm)
    lean_adam: bool  # torch._foreach_add_ and torch._fused_adam_ (LeanFusedAdam's direct step; fused Adam)
    foreach_add: bool  # torch._foreach_add_ (torch's own foreach Adam)
    tanh_backward: bool  # torch.ops.aten.tanh_backward (the fast tanh's backward)


def _detect() -> _TorchOps:
    def has_aten(name: str) -> bool:
        try:
            return hasattr(torch.ops.aten, name)
        except Exception:  # an op namespace that cannot be queried: treat the op as missing
            return False

    return _TorchOps(
        foreach_clip=hasattr(torch, "_foreach_norm") and hasattr(torch, "_foreach_mul_"),
        lean_adam=hasattr(torch, "_foreach_add_") and hasattr(torch, "_fused_adam_"),
        foreach_add=hasattr(torch, "_foreach_add_"),
        tanh_backward=has_aten("tanh_backward"),
    )


_OPS = _detect()

#: (device type, dtype) -> whether torch's fused Adam runs there (probed once each).
_FUSED_ADAM: dict[tuple[str, torch.dtype], bool] = {}


def _fused_adam_works(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether ``torch.optim.Adam(..., fused=True)`` builds and steps on ``device`` for ``dtype``.

    torch < 2.4 has no fused Adam on CPU; depending on the version the refusal comes at
    construction or at the first step, so the probe does both, on a one-element parameter.
    """
    key = (device.type, dtype)
    ok = _FUSED_ADAM.get(key)
    if ok is None:
        try:
            with torch.inference_mode(False), torch.enable_grad():
                p = torch.zeros(1, device=device, dtype=dtype, requires_grad=True)
                p.grad = torch.zeros_like(p)
                torch.optim.Adam([p], lr=1e-3, fused=True).step()
            ok = True
        except (RuntimeError, TypeError, ValueError, AttributeError, NotImplementedError):
            ok = False
        _FUSED_ADAM[key] = ok
    return ok


# -- 3. Adam -----------------------------------------------------------------------------------------
#
# Fused Adam updates all parameters with one kernel instead of ~10 per tensor. ``Adam.step`` then
# still regroups the parameters and their state by device and dtype and runs its hook and profiling
# wrappers on every call, Python work that costs more than the kernel itself on these small
# networks; ``LeanFusedAdam`` skips it.


class LeanFusedAdam(torch.optim.Adam):
    """torch's fused Adam whose steps, once its state exists, call the fused kernel directly.

    ``Adam.step`` regroups the parameters and their state by device and dtype and runs its hook and
    profiling wrappers on every call: Python work that costs more than the fused kernel itself on
    this project's small networks (measured faster on CPU, see docs/benchmarks.md; an update with
    BenchMARL's settings takes two steps per minibatch). After the first step (through torch, which
    creates the state) the tensor lists are kept and each step makes the same two calls torch's
    fused path makes, ``_foreach_add_(steps, 1)`` and ``_fused_adam_``: bit-identical results, the
    same ``state_dict``. Anything else — a closure, a missing gradient, several parameter groups,
    amsgrad, a tensor lr, a grad scaler, parameters on several devices — takes torch's own path, as
    does every step where this torch lacks ``_foreach_add_`` or ``_fused_adam_`` (checked at
    construction).
    """

    def __init__(self, params: Iterable[nn.Parameter], **kwargs: Any):
        super().__init__(params, fused=True, **kwargs)
        self._lean = _OPS.lean_adam
        self._lists: tuple[list[Tensor], ...] | None = None

    def step(self, closure: Any = None) -> Any:  # type: ignore[override]
        if closure is None and self._lists is not None:
            params, exp_avgs, exp_avg_sqs, steps = self._lists
            grads = [p.grad for p in params]
            if all(g is not None for g in grads):
                group = self.param_groups[0]
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=group["lr"], beta1=beta1,
                                   beta2=beta2, weight_decay=group["weight_decay"], eps=group["eps"], amsgrad=False,
                                   maximize=group["maximize"], grad_scale=None, found_inf=None)
                return None
        loss = super().step(closure)
        self._lists = self._direct_lists() if self._lean else None
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``p.grad = None`` for every parameter (torch's version does more bookkeeping per call)."""
        if set_to_none and self._lists is not None:
            for p in self._lists[0]:
                p.grad = None
            return
        super().zero_grad(set_to_none=set_to_none)

    def _direct_lists(self) -> tuple[list[Tensor], ...] | None:
        if len(self.param_groups) != 1 or hasattr(self, "grad_scale") or hasattr(self, "found_inf"):
            return None
        group = self.param_groups[0]
        unusual = ("amsgrad", "differentiable", "capturable", "decoupled_weight_decay", "foreach")
        if not group["fused"] or any(group.get(k) for k in unusual) or isinstance(group["lr"], Tensor):
            return None
        params = group["params"]
        states = [self.state.get(p, {}) for p in params]
        if not params or any("exp_avg" not in st for st in states):
            return None
        if any(p.device != params[0].device or p.dtype != params[0].dtype for p in params):
            return None
        return params, [st["exp_avg"] for st in states], [st["exp_avg_sq"] for st in states], [st["step"] for st in states]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._lists = None  # new state tensors: the next step goes through torch and lists them again

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self._lists = None


def adam(params: Iterable[nn.Parameter], lr: float, eps: float) -> torch.optim.Optimizer:
    """Adam, fused where this torch supports it (CPU since torch 2.4, CUDA): one kernel over all
    parameters instead of ~10 per tensor (measured faster on CPU, see docs/benchmarks.md), stepped
    through :class:`LeanFusedAdam`.

    Plain ``torch.optim.Adam(params, lr=lr, eps=eps)`` where the speed kit is off, where this torch
    lacks ``_fused_adam_``/``_foreach_add_``, or where fused Adam does not run on the parameters'
    device and dtype (probed once each).
    """
    params = list(params)
    if _SPEED_KIT and _OPS.lean_adam and all(_fused_adam_works(d, t) for d, t in {(p.device, p.dtype) for p in params}):
        try:
            return LeanFusedAdam(params, lr=lr, eps=eps)
        except (RuntimeError, TypeError, ValueError):  # an unsupported device or dtype
            pass
    if not _OPS.foreach_add:  # torch's foreach Adam (its default on CUDA) needs the op
        return torch.optim.Adam(params, lr=lr, eps=eps, foreach=False)
    return torch.optim.Adam(params, lr=lr, eps=eps)


# -- 4. Gradient clipping ---------------------------------------------------------------------------
#
# ``torch.nn.utils.clip_grad_norm_`` groups the gradients by device and dtype on every call; here
# they are all on one device in one dtype, and the grouping cost as much as the arithmetic.


def clip_grad_norm(params: Iterable[nn.Parameter], max_norm: float) -> Tensor:
    """``g <- g · min(1, max_norm / (‖g‖₂ + 1e-6))`` over all gradients; returns the pre-clip ‖g‖₂.

    The arithmetic of ``torch.nn.utils.clip_grad_norm_`` (same ops, same result bit for bit), without
    its per-call grouping by device and dtype (measured faster on CPU, see docs/benchmarks.md).
    Gradients on several devices or dtypes go to torch's version, and so does everything where the
    speed kit is off or this torch lacks ``_foreach_norm``/``_foreach_mul_`` (then with
    ``foreach=False``, the per-tensor loop).
    """
    if not (_SPEED_KIT and _OPS.foreach_clip):
        return nn.utils.clip_grad_norm_(params, max_norm, foreach=None if _OPS.foreach_clip else False)
    params = list(params)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    first = grads[0]
    if any(g.device != first.device or g.dtype != first.dtype for g in grads):
        return nn.utils.clip_grad_norm_(params, max_norm)
    total = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    torch._foreach_mul_(grads, torch.clamp(max_norm / (total + 1e-6), max=1.0))
    return total


# -- 5. One optimiser step ---------------------------------------------------------------------------


def clip_and_step(optim: torch.optim.Optimizer, params: list[nn.Parameter], loss: Tensor, max_norm: float, *,
                  name: str = "step") -> float:
    """Backward, clip the global grad norm, step. Returns the pre-clip grad norm.

    The step goes through the non-finite guard (:func:`marlopt.guard.admit`, under the step's
    ``name``, e.g. ``"actor"``, ``"critic"``): where the loss or the pre-clip norm is NaN or
    infinite the gradients are zeroed and ``optim.step()`` is not called, so the parameters and the
    optimiser's state stay as they were (the returned norm is then the non-finite value). One host
    sync, as before: the loss and the norm are read back together.
    """
    optim.zero_grad(set_to_none=True)
    loss.backward()
    norm = clip_grad_norm(params, max_norm)
    finite, values = admit(name, loss=loss, grad_norm=norm)
    if finite:
        optim.step()
    else:
        optim.zero_grad(set_to_none=True)
    return values["grad_norm"]


# -- 6. Fast in-place tanh ---------------------------------------------------------------------------
#
# PyTorch's CPU ``tanh`` kernel is several times slower than its ``sigmoid``, and a Tanh MLP's
# update spends a large share of its time there. On large CPU tensors ``tanh_`` computes
# ``2 σ(2x) - 1`` instead, in place on a layer's fresh output.

#: Below this many elements ``tanh_`` calls ``torch.tanh_`` directly (one op beats four small ones).
_FAST_TANH_MIN_NUMEL = 16384


def _tanh_via_sigmoid_(x: Tensor) -> Tensor:
    """``tanh(x) = 2 σ(2x) - 1``, computed in place in ``x``.

    The last step is ``lerp(s, 1, -1) = s - (1 - s)``: one pass over memory instead of two.
    """
    return x.mul_(2.0).sigmoid_().lerp_(torch.ones((), dtype=x.dtype), -1.0)


class _SigmoidTanh_(torch.autograd.Function):
    """:func:`_tanh_via_sigmoid_` forward (in place), ``tanh_backward`` (``g (1 - y²)``) backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.mark_dirty(x)
        y = _tanh_via_sigmoid_(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        if _OPS.tanh_backward:
            return torch.ops.aten.tanh_backward(grad, y)
        return grad * (1 - y * y)  # the same formula through public ops


def tanh_(x: Tensor) -> Tensor:
    """``tanh``, in place, fast on large CPU tensors. For fresh intermediates only (a layer's output).

    PyTorch's CPU ``tanh`` kernel is several times slower than its ``sigmoid``, and a Tanh MLP's
    update spends a large share of its time there (measured on CPU, see docs/benchmarks.md).
    On large CPU tensors this computes ``2 σ(2x) - 1`` instead (absolute error ≤ 2e-7, vs. 3e-8 for
    ``torch.tanh``; the backward is ``torch``'s own ``tanh_backward``), in place: three passes over
    memory that is already in cache, where an out-of-place version allocated two fresh buffers.
    Small tensors (rollout inference) and other devices use ``torch.tanh_``. Autograd checks the
    in-place use: a tensor that backward still needs raises. With the speed kit off: ``torch.tanh``,
    out of place.
    """
    if not _SPEED_KIT:
        return torch.tanh(x)
    if x.device.type != "cpu" or x.numel() < _FAST_TANH_MIN_NUMEL:
        return x.tanh_()
    if torch.is_grad_enabled() and x.requires_grad:
        return _SigmoidTanh_.apply(x)
    return _tanh_via_sigmoid_(x)


# -- 7. Two optimiser steps side by side ------------------------------------------------------------
#
# A recurrent update on the CPU spends much of its time in the GRU's per-step loops (the kernel's
# and their small matmuls), which run on one thread whatever torch's intra-op thread count. The
# actor's and the critic's steps on a minibatch share nothing (their own networks, optimisers and
# inputs; no random numbers), so the critic's can run on a second thread while the actor's runs on
# the calling one, each with one intra-op thread. Every op then computes what it computes with one
# intra-op thread, so the result is bit for bit that of the same two steps one after the other
# with ``torch.set_num_threads(1)`` (tests/algos/test_simultaneous.py; the mechanics in
# tests/test_optim.py), and a seeded run stays deterministic.
# MLP updates, whose larger matmuls use both cores well already, gain nothing and keep the
# sequential path (the measurements are in docs/benchmarks.md).

_T = TypeVar("_T")
_SIDE_POOL: ThreadPoolExecutor | None = None
_SIDE_POOL_LOCK = threading.Lock()


def _side_pool() -> ThreadPoolExecutor:
    """The one worker thread (made on first use, one intra-op thread)."""
    global _SIDE_POOL
    with _SIDE_POOL_LOCK:
        if _SIDE_POOL is None:
            _SIDE_POOL = ThreadPoolExecutor(1, thread_name_prefix="marlopt-side",
                                            initializer=torch.set_num_threads, initargs=(1,))
        return _SIDE_POOL


@contextlib.contextmanager
def side_by_side(enabled: bool) -> Iterator[Callable[..., Callable[[], Any]]]:
    """``with side_by_side(on) as beside: join = beside(fn, *args); ...; result = join()``.

    On (and the speed kit on): ``fn(*args)`` starts at once on the worker thread, in a copy of the
    caller's context (so the non-finite guard, :mod:`marlopt.guard`, sees its steps), and the block
    runs with one intra-op thread, restored after; ``join()`` waits and returns its result or
    raises its exception. Off: ``join()`` calls ``fn(*args)`` itself, where the caller joins (the
    sequential order, intra-op threads untouched). Either way, no job is left running when the
    block exits, an exception included.
    """
    if not (enabled and _SPEED_KIT):
        yield lambda fn, *args: (lambda: fn(*args))
        return
    pool = _side_pool()
    pending: list[Future] = []

    def beside(fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        future = pool.submit(contextvars.copy_context().run, fn, *args)
        pending.append(future)
        return future.result

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield beside
    except BaseException:
        wait(pending)  # a job still running when the block raised: let it finish first
        raise
    else:
        for future in pending:  # a job nobody joined: its exception is not dropped
            future.result()
    finally:
        torch.set_num_threads(threads)
