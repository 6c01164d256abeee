"""``ProcessVectorEnv``: E copies of a ``MultiAgentEnv`` stepped together, stacked, auto-reset,
crash-proof; it implements the ``VectorEnv`` protocol (``marlopt.envs.base``).

Three modes, one behaviour (same seeds + same actions => bit-identical outputs):

- ``mode="inproc"``: a Python loop over the envs in this process (no IPC; best for cheap envs or
  one core).
- ``mode="subproc"``: ``n_workers`` processes started with the **spawn** context, each owning a
  contiguous slice of the envs (``worker.worker_main``). One message per worker per step (the raw
  bytes of its slice of the actions) and one reply (one binary block holding its slice of every
  output; no pickling on the step path, see ``wire``). Workers import numpy and the env's own
  modules only (never torch). Scripts that use it need the usual ``if __name__ == "__main__":``
  guard of spawn.
- ``mode="hybrid"``: subproc workers for envs ``[m, E)`` while the calling process steps envs
  ``[0, m)`` itself *at the same time* (it would otherwise sit idle waiting for the replies);
  ``m = E // (n_workers + 1)``, an equal share, and ``n_workers`` defaults to ``cores - 1``. On
  few cores with cheap envs (MPE; docs/benchmarks.md) this beats both: inproc leaves the other cores
  idle, subproc pays IPC for every env and leaves the parent idle.

Actions are cast once, identically in every mode: discrete to int64 ``[E, N]``, continuous to
float64 ``[E, N, A]``. ``step`` returns a ``VecStep`` (fields and shapes: ``marlopt.envs.base``);
after an episode ends the env is reset with ``seed=None``: each env continues its own RNG, seeded
once by ``reset(seeds)``.

Crash resilience (SC2 and friends die mid-run; keep going): an exception inside an env rebuilds
that env (``group``); a worker process that dies, or does not answer within ``step_timeout``
seconds, is killed and respawned, its envs rebuilt and reset with derived seeds and all marked
``dropped`` (other commands wait ``max(60, 10 * step_timeout)`` seconds). Every env rebuild and
every worker respawn counts as one restart; beyond ``max_restarts`` the vector env gives up with a
``RuntimeError`` carrying the last error. A command interrupted half-way (Ctrl-C) is recovered by
the next call: late worker replies are drained and every env is marked ``dropped`` at the next step.

Checkpointing: ``get_state()`` returns a picklable dict (``common.VECTOR_STATE_FORMAT``) with each
env's ``MultiAgentEnv.get_state()`` bytes (pickled mid-episode), the per-env accumulators (episode
return and length so far), base seeds, restart count and the last outputs returned, so
``set_state(d)`` restores the exact same future trajectory in either mode (a checkpoint taken in one
mode can be loaded in the other, and by ``SmaxVectorEnv`` for SMAX envs). Envs whose
``get_state()`` is ``None`` (e.g. StarCraft II) are reset instead (with a derived seed);
``set_state`` returns the observations to continue from and ``last_restore_reset[E]`` tells which
envs were reset (their partial episodes are lost).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import sys
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, VecObs, VecStep
from marlopt.envs.common import VECTOR_STATE_FORMAT, check_vector_state, usable_cpus
from marlopt.envs.vector.group import EnvGroup, Restored, all_dropped, give_up_message
from marlopt.envs.vector.handle import WorkerHandle, WorkerLost, deadline, shutdown
from marlopt.envs.vector.wire import DEFAULT_SPIN, ResetArrays, StepArrays, action_layout, alloc, step_layout

log = logging.getLogger(__name__)

MODES = ("inproc", "subproc", "hybrid")


class ProcessVectorEnv:
    """E env copies, stacked numpy outputs, auto-reset and crash restarts (see module docstring).

    Args:
        env_fns: one zero-argument factory per env (``registry.env_fn(...)`` gives a picklable one;
            subproc mode pickles them to the workers).
        mode: ``"inproc"``, ``"subproc"`` or ``"hybrid"``.
        n_workers: subproc/hybrid; default ``min(E, usable CPUs)`` (hybrid: ``min(E - 1, CPUs - 1)``,
            at least 1); worker ``k`` owns a contiguous slice of the envs.
        spin: subproc/hybrid; seconds each worker busy-polls for the next command before it blocks,
            and the parent for a step reply (``None``: 10 ms when workers + 1 <= usable CPUs, else 0,
            where spinning would steal a core from a process with work to do).
        step_timeout: subproc only; seconds a worker may take for one step before it is deemed hung,
            killed and respawned (``None``: wait forever; a dead worker is detected regardless).
        max_restarts: total env rebuilds + worker respawns tolerated before ``RuntimeError``.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], MultiAgentEnv]],
        mode: str = "inproc",
        n_workers: int | None = None,
        step_timeout: float | None = None,
        max_restarts: int = 100,
        spin: float | None = None,
    ) -> None:
        if spin is not None and spin < 0:
            raise ValueError(f"spin must be >= 0 seconds, got {spin}")
        if mode not in MODES:
            raise ValueError(f"unknown ProcessVectorEnv mode {mode!r}; valid modes: {list(MODES)}")
        if mode == "hybrid" and len(env_fns) < 2:
            raise ValueError("ProcessVectorEnv mode 'hybrid' needs at least 2 envs (one here, one in a worker)")
        if len(env_fns) == 0:
            raise ValueError("ProcessVectorEnv needs at least one env_fn")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive or None, got {step_timeout}")
        if n_workers is not None and n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        self.mode = mode
        self.spin = 0.0  # set below once the number of workers is known
        self.num_envs = len(env_fns)
        self.max_restarts = int(max_restarts)
        self.step_timeout = step_timeout
        self._slow_timeout = None if step_timeout is None else max(60.0, 10.0 * step_timeout)
        self._env_fns = list(env_fns)
        self._restarts = 0
        self.last_error = ""
        self._seeds: list[int | None] = [None] * self.num_envs
        self._last: VecObs | None = None
        self._pending_dropped = np.zeros(self.num_envs, dtype=bool)
        self.last_restore_reset = np.zeros(self.num_envs, dtype=bool)
        self._closed = False
        self._busy = False  # True while a command runs: still True if it was interrupted
        self._workers: list[WorkerHandle] = []
        self._groups: list[EnvGroup] = []
        self._group: EnvGroup | None = None  # the envs stepped in this process (inproc, hybrid)
        self.local_envs = 0
        self._finalizer = weakref.finalize(self, shutdown, self._workers, self._groups)

        # Envs [0, local_envs) are stepped in this process (all of them in inproc mode), the rest
        # by the workers: every command below serves the three modes with one code path.
        if mode == "inproc":
            self.n_workers, self.local_envs = 0, self.num_envs
        elif mode == "hybrid":
            self.n_workers = min(self.num_envs - 1, n_workers or max(1, usable_cpus() - 1))
            self.local_envs = self.num_envs // (self.n_workers + 1)
        else:
            self.n_workers = min(self.num_envs, n_workers or usable_cpus())
        if self.n_workers:
            self._ctx = mp.get_context("spawn")
            if spin is None:  # spinning pays only while every spinner has a core of its own
                spin = DEFAULT_SPIN if self.n_workers + 1 <= usable_cpus() else 0.0
            self.spin = float(spin)
        bounds = np.linspace(self.local_envs, self.num_envs, self.n_workers + 1).round().astype(int)
        for k in range(self.n_workers):
            self._workers.append(WorkerHandle(k, int(bounds[k]), int(bounds[k + 1])))
        try:
            for w in self._workers:  # start them all, then wait: start-up runs in parallel
                self._start(w)
            specs = []
            if self.local_envs:  # built while the workers start
                self._group = EnvGroup(self._env_fns[: self.local_envs], 0, self.max_restarts)
                self._groups.append(self._group)
                specs.append(self._group.spec)
            specs += [w.await_ready(self._slow_timeout) for w in self._workers]
            for k, s in enumerate(specs[1:], start=1):
                if s != specs[0]:
                    raise ValueError(f"env group {k} built envs with spec {s}, group 0 with {specs[0]}")
        except WorkerLost as err:
            self.close()
            raise RuntimeError(f"env worker failed to start: {err}") from err
        except BaseException:
            self.close()
            raise
        self.spec: EnvSpec = specs[0]
        self._layout = step_layout(self.spec)
        self._act_shape, self._act_dtype = action_layout(self.spec)

    # ------------------------------------------------------------------ public API
    @property
    def restarts(self) -> int:
        """Env rebuilds + worker respawns so far."""
        return self._restarts

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (subproc mode; empty in inproc mode)."""
        return [int(w.pid) for w in self._workers if w.pid is not None]

    def reset(self, seeds: Sequence[int | None]) -> VecObs:
        """Reset env ``i`` with ``seeds[i]`` (its RNG then continues across auto-resets)."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        self._seeds = [None if s is None else int(s) for s in seeds]
        self._busy = True
        parts: list[ResetArrays] = []
        if self._group is not None:
            parts.append(self._group.reset(self._seeds[: self.local_envs]))
            self._sync_inproc_restarts()
        replies = self._broadcast(lambda w: ("reset", self._seeds[w.lo : w.hi], False), self._slow_timeout)
        for w, msg in zip(self._workers, replies):
            if msg is None:  # lost: respawned, reset with derived seeds
                parts.append(self._respawn(w))
            else:
                _, part, worker_restarts = msg
                self._account(w, worker_restarts)
                parts.append(part)
        obs = self._cat([p.obs for p in parts])
        state = self._cat([p.state for p in parts])
        avail = self._cat([p.avail for p in parts])
        self._pending_dropped[:] = False
        active = np.ones((self.num_envs, self.spec.n_agents), dtype=bool)
        self._remember(obs, state, avail, active)
        self._busy = False
        return VecObs(obs, state, avail, active)

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env with ``actions[i]`` (int ``[E, N]``, or float ``[E, N, A]`` if continuous)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("ProcessVectorEnv.step called before reset(seeds)")
        actions = np.ascontiguousarray(actions, dtype=self._act_dtype)
        if actions.shape != (self.num_envs, *self._act_shape):
            raise ValueError(
                f"actions must have shape {(self.num_envs, *self._act_shape)}, got {actions.shape}"
            )
        self._busy = True
        out = self._step_groups(actions)
        if self._pending_dropped.any():  # envs reset behind the caller's back (get_state respawn)
            pend = self._pending_dropped
            out.reward[pend] = 0.0
            out.terminated[pend] = False
            out.truncated[pend] = False
            out.dropped[pend] = True
            pend[:] = False
        self._remember(out.obs, out.state, out.avail, out.active)
        self._busy = False
        return out.to_vec_step(self._restarts)

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot for exact resume (see the module docstring)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("ProcessVectorEnv.get_state called before reset(seeds)")
        self._busy = True
        blobs, ep_return, ep_length, seeds = [], [], [], []
        if self._group is not None:
            own = self._group.get_state()
            blobs, ep_return, ep_length, seeds = own.blobs, own.episode_return, own.episode_length, own.seeds
        replies = self._broadcast(lambda w: ("get_state",), self._slow_timeout)
        for w, msg in zip(self._workers, replies):
            while msg is None:  # lost: respawn (its envs restart: dropped next step), retry
                o, s, a = self._respawn(w)
                self._last.obs[w.lo : w.hi] = o
                self._last.state[w.lo : w.hi] = s
                self._last.avail[w.lo : w.hi] = a
                self._last.active[w.lo : w.hi] = True
                self._pending_dropped[w.lo : w.hi] = True
                try:
                    msg = w.request(("get_state",), self._slow_timeout)
                except WorkerLost as err:
                    self._count_restart(str(err))
            part = msg[1]
            blobs += part.blobs
            ep_return += part.episode_return
            ep_length += part.episode_length
            seeds += part.seeds
        self._busy = False
        return {
            "format": VECTOR_STATE_FORMAT,
            "num_envs": self.num_envs,
            "spec": dataclasses.asdict(self.spec),
            "envs": blobs,
            "episode_return": ep_return,
            "episode_length": ep_length,
            "seeds": seeds,
            "restarts": self._restarts,
            "last": tuple(x.copy() for x in self._last),  # the VecObs, as a plain tuple
        }

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot; returns the observations to continue from.

        Envs saved as ``None`` (not picklable, e.g. StarCraft II) are reset with a derived seed
        instead; ``self.last_restore_reset[E]`` marks them (their partial episodes are lost).
        """
        self._check_open()
        check_vector_state(state, self.num_envs, self.spec)
        blobs, ep_ret, ep_len, seeds = (
            state["envs"], state["episode_return"], state["episode_length"], state["seeds"],
        )  # fmt: skip
        restarts_before = self._restarts
        self._busy = True
        parts: list[Restored] = []
        if self._group is not None:
            m = self.local_envs
            parts.append(self._group.set_state(blobs[:m], ep_ret[:m], ep_len[:m], seeds[:m]))
            self._sync_inproc_restarts()
        replies = self._broadcast(
            lambda w: ("set_state", blobs[w.lo : w.hi], ep_ret[w.lo : w.hi],
                       ep_len[w.lo : w.hi], seeds[w.lo : w.hi]),
            self._slow_timeout,
        )  # fmt: skip
        for w, msg in zip(self._workers, replies):
            if msg is None:  # lost while restoring: its envs start over
                o, s, a = self._respawn(w)
                parts.append(Restored(np.ones(w.hi - w.lo, dtype=bool), o, s, a))
            else:
                _, part, worker_restarts = msg
                self._account(w, worker_restarts)
                parts.append(part)
        mask = self._cat([p.reset_mask for p in parts])
        last = VecObs._make(np.array(x) for x in state["last"])
        last.obs[mask] = self._cat([p.obs for p in parts])[mask]
        last.state[mask] = self._cat([p.state for p in parts])[mask]
        last.avail[mask] = self._cat([p.avail for p in parts])[mask]
        last.active[mask] = True
        self._seeds = list(seeds)
        self._restarts = int(state["restarts"]) + (self._restarts - restarts_before)
        if self._group is not None:
            self._group.max_restarts = max(0, self.max_restarts - self._restarts)
        self._pending_dropped[:] = False
        self.last_restore_reset = mask.astype(bool)
        self._remember(last.obs, last.state, last.avail, last.active)
        self._busy = False
        return last

    def workers_have_module(self, name: str) -> list[bool]:
        """Whether each worker process has imported module ``name`` (e.g. ``"torch"``)."""
        self._check_open()
        if not self._workers:
            return [name in sys.modules]
        try:
            return [bool(w.request(("has_module", name), self._slow_timeout)[1]) for w in self._workers]
        except WorkerLost as err:
            raise RuntimeError(str(err)) from err

    def close(self) -> None:
        """Shut down workers and close envs. Idempotent; also runs at interpreter exit."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> ProcessVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    def _check_open(self) -> None:
        """Called first by every command: refuse if closed; recover from an interrupted command.

        A command interrupted half-way (KeyboardInterrupt) leaves envs stepped that the caller
        never saw and, in subproc mode, replies in the pipes: drain those, and mark every env
        dropped at the next step (the caller's in-flight episodes have a gap).
        """
        if self._closed:
            raise RuntimeError("ProcessVectorEnv is closed")
        if not self._busy:
            return
        for w in self._workers:
            if w.awaiting:
                try:
                    if w.reading:  # interrupted inside a read: the pipe may hold half a message
                        raise WorkerLost("interrupted while reading its reply")
                    w.wait(deadline(self._slow_timeout))
                    w.conn.recv_bytes()
                    w.awaiting = False
                except Exception as err:  # noqa: BLE001 - lost meanwhile: start it over
                    self._count_restart(f"env worker {w.index} lost: {err!r}")
                    o, s, a = self._respawn(w)
                    if self._last is not None:
                        self._last.obs[w.lo : w.hi] = o
                        self._last.state[w.lo : w.hi] = s
                        self._last.avail[w.lo : w.hi] = a
                        self._last.active[w.lo : w.hi] = True
        self._pending_dropped[:] = True
        self._busy = False

    def _remember(
        self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray, active: np.ndarray
    ) -> None:
        # Private copies: callers may modify what they get; checkpoints need the true values.
        self._last = VecObs(obs.copy(), state.copy(), avail.copy(), active.copy())

    @staticmethod
    def _cat(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def _count_restart(self, reason: str) -> None:
        self._restarts += 1
        self.last_error = reason
        if self._restarts > self.max_restarts:
            raise RuntimeError(give_up_message(self.max_restarts, reason))

    def _sync_inproc_restarts(self) -> None:
        g = self._group
        if g.restarts:
            self._restarts += g.restarts
            self.last_error = g.last_error
            g.restarts = 0
            if self._restarts > self.max_restarts:
                raise RuntimeError(give_up_message(self.max_restarts, g.last_error))
            g.max_restarts = max(0, self.max_restarts - self._restarts)  # the group's own budget

    def _account(self, w: WorkerHandle, worker_restarts: int) -> None:
        """Add the env restarts worker ``w`` reports beyond those already counted."""
        delta = int(worker_restarts) - w.restarts_seen
        if delta:
            w.restarts_seen = int(worker_restarts)
            self._restarts += delta
            try:
                self.last_error = w.request(("last_error",), self._slow_timeout)[1]
            except WorkerLost as err:  # noticed again at the next command
                self.last_error = str(err)
            log.warning("env worker %d restarted %d env(s):\n%s", w.index, delta, self.last_error)
            if self._restarts > self.max_restarts:
                raise RuntimeError(give_up_message(self.max_restarts, self.last_error))

    # -- worker management ----------------------------------------------------------------
    def _start(self, w: WorkerHandle) -> None:
        budget = max(0, self.max_restarts - self._restarts)
        w.start(self._ctx, self._env_fns[w.lo : w.hi], budget, self.max_restarts, self.spin)

    def _respawn(self, w: WorkerHandle) -> ResetArrays:
        """Kill worker ``w``, start a new one and reset its envs with derived seeds.

        The loss itself is counted by the caller; each failed respawn attempt counts once more.
        """
        while True:
            w.stop(graceful=False)
            w.generation += 1
            try:
                self._start(w)
                until = deadline(self._slow_timeout)
                msg = w.recv(until, raise_worker_errors=False)
                if msg[0] != "ready":
                    raise WorkerLost(f"respawned env worker {w.index} failed to start:\n{msg[1]}")
                w.send(("reset", self._seeds[w.lo : w.hi], True))
                _, part, worker_restarts = w.recv(until)
                self._account(w, worker_restarts)
                return part
            except (WorkerLost, OSError) as err:
                self._count_restart(f"respawning env worker {w.index} failed: {err}")

    def _broadcast(self, make_msg: Callable[[WorkerHandle], tuple], timeout: float | None) -> list:
        """Send to every worker, then collect every answer; ``None`` for lost workers (counted)."""
        sent = []
        for w in self._workers:
            try:
                w.send(make_msg(w))
                sent.append(None)
            except (OSError, ValueError) as err:
                sent.append(w.lost(err))
        until = deadline(timeout)
        replies: list = []
        losses: list[WorkerLost] = []
        for w, err in zip(self._workers, sent):
            try:
                if err is not None:
                    raise err
                replies.append(w.recv(until))
            except WorkerLost as lost:
                replies.append(None)
                losses.append(lost)
        for lost in losses:  # after collecting everyone, so a slow respawn delays nobody
            log.warning("%s; respawning it", lost)
            self._count_restart(str(lost))
        return replies

    def _step_groups(self, actions: np.ndarray) -> StepArrays:
        """Send the workers their actions, step the local envs meanwhile, collect the replies."""
        workers = self._workers
        sent: list[WorkerLost | None] = []
        for w in workers:
            try:
                w.send_step(actions)
                sent.append(None)
            except (OSError, ValueError) as err:
                sent.append(w.lost(err))
        out: StepArrays | None = None
        if self._group is not None:  # step our share while the workers step theirs
            m = self.local_envs
            out = alloc(self.num_envs, self._layout)
            self._group.step(actions[:m], StepArrays._make(x[:m] for x in out))
        until = deadline(self.step_timeout)
        lost: list[tuple[WorkerHandle, WorkerLost]] = []
        for w, err in zip(workers, sent):
            try:
                if err is not None:
                    raise err
                w.recv_step(until)
            except WorkerLost as e:
                lost.append((w, e))
        parts: dict[int, StepArrays] = {}
        for w, err in lost:  # after collecting everyone, so a slow respawn delays nobody
            log.warning("%s; respawning it (its envs are dropped)", err)
            self._count_restart(str(err))
            parts[w.index] = all_dropped(self._respawn(w), self.spec.n_agents)
        for w in workers:
            if w.index not in parts:
                self._account(w, w.restarts_view[0])
                parts[w.index] = w.views
        if self._group is not None:
            self._sync_inproc_restarts()
        elif len(workers) == 1:
            return StepArrays._make(np.array(x) for x in parts[0])  # copy: the block is reused
        if out is None:
            out = alloc(self.num_envs, self._layout)
        for w in workers:
            for whole, part in zip(out, parts[w.index]):  # field by field (same named tuple)
                whole[w.lo : w.hi] = part
        return out
