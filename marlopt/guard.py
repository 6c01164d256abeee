"""The non-finite guard: no optimiser step with a NaN or infinite loss or gradient is ever applied,
and a run that keeps producing them stops with one line saying what diverged and what to do.

Without it a learning rate that is far too large (``algo.lr=1e30``) or an env that returns a NaN
reward turns every parameter into NaN within a few iterations, and the run goes on, logging NaN
and writing NaN checkpoints. With it:

1. Every optimiser step asks :func:`admit` first, with the step's name (``"actor"``, ``"critic"``,
   ``"actor_2"``, ``"guider"``, ``"td"``, ...), its loss and its pre-clip gradient norm. A
   non-finite one means the step is *skipped*: the caller zeroes the gradients and does not call
   ``optim.step()``, so the parameters and the optimiser's state are exactly what they were.
   :func:`marlopt.optim.clip_and_step` (every on-policy rule's actor, critic and guider step) does
   this; a rule with its own step calls :func:`admit` itself (``QLearningRule.update``,
   HATRPO's ``trpo_update``). ``admit`` costs one host sync: the quantities are stacked into one
   tensor and read back together.
2. The runner installs a :class:`NonFiniteGuard` around each ``rule.update(...)``
   (``with guard.watch(): ...``), so the rules reach it without knowing of it. The guard counts
   the skipped steps (``train/nonfinite_steps`` in the metrics, from :meth:`NonFiniteGuard.take_metrics`)
   and raises :class:`NonFiniteError` once ``patience`` consecutive steps of one name were
   skipped: a step that keeps failing does not recover by itself. Consecutive counts are kept per
   step name, so a critic that diverges alone is not hidden by finite actor steps between its
   own. With no guard installed (a rule or an objective used on its own) non-finite steps are
   still skipped, just neither counted nor raised.
3. After each update the runner calls :func:`check_parameters` on the rule's modules: one sync
   that catches a non-finite parameter written outside the guarded steps (a future rule that
   writes its parameters directly, a line search), before anything is saved.

:class:`NonFiniteError` propagates out of ``runner.train``; ``marlopt.train`` prints its one line
and exits non-zero without writing a checkpoint, so the last checkpoint, written before the
divergence, is kept. The guard's counts are not checkpointed: they restart on resume.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Union

import torch
from torch import Tensor, nn

__all__ = ["NonFiniteError", "NonFiniteGuard", "admit", "active_guard", "check_parameters"]

#: What the one-line messages tell the user to do.
FIX = "lower algo.lr (or algo.critic_lr) or check the env's rewards"
KEPT = "nothing was saved after the divergence (the checkpoints written before it are kept)"


class NonFiniteError(RuntimeError):
    """Training diverged: the run must stop. The message is one line naming the first non-finite
    quantity and the fix."""


# -- 1. Reading a step's quantities ------------------------------------------------------------------


def _host_values(quantities: Mapping[str, Union[Tensor, float]]) -> dict[str, float]:
    """The quantities as Python floats, with one host sync for all of their tensors (stacked in
    their common dtype, so each float equals ``float(tensor)``)."""
    tensors = [(k, v.detach().reshape(())) for k, v in quantities.items() if isinstance(v, Tensor)]
    out = {k: float(v) for k, v in quantities.items() if not isinstance(v, Tensor)}
    if tensors:
        dtype, device = tensors[0][1].dtype, tensors[0][1].device
        for _, t in tensors[1:]:
            dtype = torch.promote_types(dtype, t.dtype)
        host = torch.stack([t.to(device=device, dtype=dtype) for _, t in tensors]).tolist()
        out.update(zip((k for k, _ in tensors), host))
    return {k: out[k] for k in quantities}


def admit(name: str, **quantities: Union[Tensor, float]) -> tuple[bool, dict[str, float]]:
    """Whether the optimiser step ``name`` may be applied, and its quantities as floats.

    ``quantities`` are the step's scalars by kind, e.g. ``loss=loss, grad_norm=norm`` (0-d tensors
    or floats; a tensor is read without its graph). The step may be applied when every one is
    finite. When it may not, the caller must leave the parameters and the optimiser alone: zero
    the gradients, do not call ``optim.step()``. The active guard (:func:`active_guard`), if any,
    counts the step and raises :class:`NonFiniteError` after its patience; without one the step
    is only refused. One host sync for all the tensors.
    """
    values = _host_values(quantities)
    finite = all(math.isfinite(v) for v in values.values())
    guard = _ACTIVE.get()
    if guard is not None:
        guard.record(name, finite, values)
    return finite, values


# -- 2. The guard ------------------------------------------------------------------------------------

_ACTIVE: contextvars.ContextVar["NonFiniteGuard | None"] = contextvars.ContextVar("marlopt_nonfinite_guard",
                                                                                  default=None)


def active_guard() -> "NonFiniteGuard | None":
    """The guard installed by the innermost :meth:`NonFiniteGuard.watch` in this context, if any."""
    return _ACTIVE.get()


class NonFiniteGuard:
    """Counts skipped optimiser steps and stops the run after ``patience`` consecutive ones.

    Per step name: how many steps in a row were skipped and the first non-finite quantity of that
    run of skips (its name, value and update). A finite step of that name resets its count. The
    update number is the number of :meth:`watch` blocks entered (updates since the run, or its
    resume, started in this process).
    """

    def __init__(self, patience: int):
        if patience < 1:
            raise ValueError(f"NonFiniteGuard: patience must be >= 1 (got {patience})")
        self.patience = int(patience)
        self.updates = 0  # watch() blocks entered
        self.skipped = 0  # steps skipped since the last take_metrics()
        self.skipped_total: dict[str, int] = {}  # steps skipped since the guard was built, by name
        self._streaks: dict[str, tuple[int, str, float, int]] = {}  # name -> (count, quantity, value, update)
        self._lock = threading.Lock()  # steps may report from two threads (marlopt.optim.side_by_side)

    @contextlib.contextmanager
    def watch(self) -> Iterator["NonFiniteGuard"]:
        """Install this guard for the steps of one update: ``with guard.watch(): rule.update(...)``."""
        self.updates += 1
        token = _ACTIVE.set(self)
        try:
            yield self
        finally:
            _ACTIVE.reset(token)

    def record(self, name: str, finite: bool, values: Mapping[str, float]) -> None:
        """A step ``name`` with ``values`` was applied (``finite``) or skipped; raises
        :class:`NonFiniteError` when it is the ``patience``-th skip of ``name`` in a row."""
        with self._lock:
            self._record(name, finite, values)

    def _record(self, name: str, finite: bool, values: Mapping[str, float]) -> None:
        if finite:
            self._streaks.pop(name, None)
            return
        self.skipped += 1
        self.skipped_total[name] = self.skipped_total.get(name, 0) + 1
        if name not in self._streaks:  # the first skip of a run of skips: remember what was non-finite
            quantity, value = next(((f"{name}/{k}", v) for k, v in values.items() if not math.isfinite(v)),
                                   (name, math.nan))
            self._streaks[name] = (0, quantity, value, self.updates)
        count, quantity, value, update = self._streaks[name]
        count += 1
        self._streaks[name] = (count, quantity, value, update)
        if count >= self.patience:
            raise NonFiniteError(
                f"training diverged: {count} consecutive {name} optimiser steps had a non-finite loss or gradient "
                f"and were skipped (the first at update {update}: {quantity}={value}); {FIX}; {KEPT}")

    def take_metrics(self) -> dict[str, float]:
        """``{"train/nonfinite_steps": steps skipped since the last call}`` (0.0 when none, so the
        curve exists), and the count starts again."""
        out = {"train/nonfinite_steps": float(self.skipped)}
        self.skipped = 0
        return out


# -- 3. The parameters after an update ---------------------------------------------------------------

Modules = Union[Mapping[str, nn.Module], nn.Module, Iterable[Tensor]]


def _named_tensors(modules: Modules) -> list[tuple[str, Tensor]]:
    """``(name, tensor)`` of every floating-point entry of the modules' ``state_dict``: the
    parameters and the persistent buffers, what a checkpoint saves (a non-persistent buffer, such
    as a mask, may hold infinities on purpose). Named ``key.param`` for a mapping of modules, by
    the module's own names for one module, ``parameter i`` for bare tensors."""
    if isinstance(modules, Mapping):
        groups = list(modules.items())
    elif isinstance(modules, nn.Module):
        groups = [("", modules)]
    else:
        return [(f"parameter {i}", t) for i, t in enumerate(modules)]
    out = []
    for key, module in groups:
        prefix = f"{key}." if key else ""
        out += [(prefix + n, t) for n, t in module.state_dict(keep_vars=True).items()
                if isinstance(t, Tensor) and t.is_floating_point()]
    return out


def check_parameters(modules: Modules, where: str) -> None:
    """Raise :class:`NonFiniteError` if any parameter (or persistent floating-point buffer, e.g.
    ValueNorm's statistics) of ``modules`` holds a NaN or an infinity, naming the first such tensor.

    ``modules``: a mapping of name to module (an update rule's ``modules()``), one module, or
    tensors. ``where`` ends the message (``"after update 3"``). One host sync: the largest
    absolute value of each tensor (``torch._foreach_norm`` with ``ord=inf``, which no finite value
    overflows, unlike the 2-norm), stacked, checked at once.
    """
    named = [(n, t) for n, t in _named_tensors(modules) if t.numel()]
    if not named:
        return
    tensors = [t.detach() for _, t in named]
    try:
        peaks = torch._foreach_norm(tensors, ord=math.inf)
    except (AttributeError, RuntimeError, TypeError):  # a torch without the op or without ord=inf
        peaks = [torch.linalg.vector_norm(t, ord=math.inf) for t in tensors]
    device = tensors[0].device
    if bool(torch.isfinite(torch.stack([p.to(device) for p in peaks])).all()):
        return
    bad = next(n for n, t in named if not bool(torch.isfinite(t).all()))
    raise NonFiniteError(f"training diverged: {bad} is non-finite {where} (written outside the guarded "
                         f"optimiser steps); {FIX}; {KEPT}")
