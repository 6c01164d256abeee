"""``VectorEnv``: E copies of a ``MultiAgentEnv`` stepped together, stacked, auto-reset, crash-proof.

Three modes, one behaviour (same seeds + same actions => bit-identical outputs):

- ``mode="inproc"``: a Python loop over the envs in this process (no IPC; best for cheap envs or
  one core).
- ``mode="subproc"``: ``n_workers`` processes started with the **spawn** context, each owning a
  contiguous slice of the envs. One message per worker per step (the raw bytes of its slice of the
  actions) and one reply (one binary block holding its slice of every output; no pickling on the
  step path). Workers import numpy and the env's own modules only (never torch). Scripts that use
  it need the usual ``if __name__ == "__main__":`` guard of spawn.
- ``mode="hybrid"``: subproc workers for envs ``[m, E)`` while the calling process steps envs
  ``[0, m)`` itself *at the same time* (it would otherwise sit idle waiting for the replies);
  ``m = E // (n_workers + 1)``, an equal share, and ``n_workers`` defaults to ``cores - 1``. On
  few cores with cheap envs (MPE: ~250 us per step) this beats both: inproc leaves the other cores
  idle, subproc pays IPC for every env and leaves the parent idle.

Actions are cast once, identically in every mode: discrete to int64 ``[E, N]``, continuous to
float64 ``[E, N, A]``.

Outputs of ``step(actions)`` (``VecStep``; E envs, N agents; S = ``spec.state_rows``):

``obs[E,N,O]`` f32, ``state[E,S,D]`` f32, ``avail[E,N,A]`` bool, ``active[E,N]`` bool: the next
inputs of the policy, *already reset* for envs whose episode ended (or that were restarted).
``reward[E]`` f32 (team reward of the step), ``terminated[E]``, ``truncated[E]``, ``dropped[E]``.
``final_state[E,S,D]``, ``final_active[E,N]``: the state/active mask reached by the step before any
auto-reset (valid where ``terminated | truncated``; bootstrap truncated episodes from it).
``won[E]``, ``episode_return[E]`` f32 (sum of team rewards), ``episode_length[E]`` int64: valid
where an episode ended (zero elsewhere). ``restarts``: the total number of restarts so far.

After an episode ends the env is reset with ``seed=None``: each env continues its own RNG, seeded
once by ``reset(seeds)``.

Crash resilience (SC2 and friends die mid-run; keep going):

- an exception inside ``env.step`` / ``env.reset`` (in-process or in a worker): the env is closed,
  rebuilt from its ``env_fn`` and reset with a fresh seed derived deterministically from its base
  seed; the step is marked ``dropped`` (its episode in flight is lost: ``reward`` 0,
  ``terminated``/``truncated`` False, never store it as a terminal transition). If the crash happens
  in the auto-reset *after* a completed episode, that episode is intact: it is reported as ended,
  not dropped, and the restart is still counted.
- a worker process that dies, or does not answer within ``step_timeout`` seconds: it is killed and
  respawned (its envs rebuilt and reset with derived seeds) and all its envs are marked dropped.
  Other commands (reset, get/set_state, start-up) wait ``max(60, 10 * step_timeout)`` seconds.
- every env rebuild and every worker respawn counts as one restart; beyond ``max_restarts`` the
  vector env gives up with a ``RuntimeError`` carrying the last error.

A command interrupted half-way (Ctrl-C) is recovered by the next call: late worker replies are
drained (the pipes never go out of step) and every env is marked ``dropped`` at the next step.

Checkpointing: ``get_state()`` returns a picklable dict with each env's ``MultiAgentEnv.get_state()``
bytes (pickled mid-episode), the vector env's per-env accumulators (episode return and length so
far), base seeds, restart count and the last outputs returned (obs/state/avail/active), so
``set_state(d)`` restores the exact same future trajectory in either mode (a checkpoint taken in one
mode can be loaded in the other). Envs whose ``get_state()`` is ``None`` (e.g. StarCraft II) are
reset instead (with a derived seed); ``set_state`` returns the observations to continue from and
``last_restore_reset[E]`` tells which envs were reset (their partial episodes are lost).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import os
import pickle
import select
import signal
import sys
import time
import traceback
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv

log = logging.getLogger(__name__)

_STATE_FORMAT = "marlopt.VectorEnv/1"


class VecObs(NamedTuple):
    """Stacked observations to act on (``reset`` / ``set_state``)."""

    obs: np.ndarray  # [E, N, obs_dim] float32
    state: np.ndarray  # [E, S, state_dim] float32
    avail: np.ndarray  # [E, N, n_actions] bool
    active: np.ndarray  # [E, N] bool


class VecStep(NamedTuple):
    """One step of all envs (see the module docstring for the exact meaning of each field)."""

    obs: np.ndarray  # [E, N, O] f32, after auto-reset
    state: np.ndarray  # [E, S, D] f32, after auto-reset
    avail: np.ndarray  # [E, N, A] bool, after auto-reset
    active: np.ndarray  # [E, N] bool, after auto-reset
    reward: np.ndarray  # [E] f32
    terminated: np.ndarray  # [E] bool
    truncated: np.ndarray  # [E] bool
    dropped: np.ndarray  # [E] bool: crashed and restarted this step; episode in flight lost
    final_state: np.ndarray  # [E, S, D] f32, before auto-reset (valid where terminated|truncated)
    final_active: np.ndarray  # [E, N] bool, before auto-reset
    won: np.ndarray  # [E] bool (valid where an episode ended and spec.has_won)
    episode_return: np.ndarray  # [E] f32 (valid where an episode ended)
    episode_length: np.ndarray  # [E] int64 (valid where an episode ended)
    restarts: int  # total restarts so far


# Per-env layout of the 13 array fields of VecStep (everything but ``restarts``).
_F32, _BOOL, _I64 = np.dtype(np.float32), np.dtype(np.bool_), np.dtype(np.int64)
_ZERO_FIELDS = (4, 5, 6, 7, 10, 11, 12)  # reward .. dropped, won, episode_return/length
_N_FIELDS = 13


def _fields(spec: EnvSpec) -> list[tuple[tuple[int, ...], np.dtype]]:
    n, o, s, d, a = spec.n_agents, spec.obs_dim, spec.state_rows, spec.state_dim, spec.n_actions
    return [
        ((n, o), _F32), ((s, d), _F32), ((n, a), _BOOL), ((n,), _BOOL),  # obs state avail active
        ((), _F32), ((), _BOOL), ((), _BOOL), ((), _BOOL),  # reward terminated truncated dropped
        ((s, d), _F32), ((n,), _BOOL),  # final_state final_active
        ((), _BOOL), ((), _F32), ((), _I64),  # won episode_return episode_length
    ]  # fmt: skip


def _action_layout(spec: EnvSpec) -> tuple[tuple[int, ...], np.dtype]:
    if spec.continuous:
        return (spec.n_agents, spec.n_actions), np.dtype(np.float64)
    return (spec.n_agents,), _I64


def _alloc(n: int, fields: list[tuple[tuple[int, ...], np.dtype]]) -> tuple[np.ndarray, ...]:
    return tuple(np.empty((n, *shape), dtype) for shape, dtype in fields)


# A worker's step reply is one binary block: 16 header bytes (b"K", then the worker's restart
# count as int64 at offset 8), then each field of its slice, 8-byte aligned.
#: Seconds a worker (and the parent, waiting for a step reply) busy-polls its pipe before it
#: blocks. Waking a blocked process costs 100-400 us on VMs: more than a cheap env step.
_DEFAULT_SPIN = 0.01

_BLOCK_TAG = ord("K")
_STEP_TAG = b"S"  # a step command: b"S" + the raw action bytes (pickles start with b"\x80")


def _block(
    n: int, fields: list[tuple[tuple[int, ...], np.dtype]]
) -> tuple[bytearray, np.ndarray, tuple[np.ndarray, ...]]:
    """A reusable reply buffer and numpy views on it: (buffer, restarts[1], the 13 fields)."""
    counts = [n * int(np.prod(shape, dtype=np.int64)) for shape, _ in fields]
    sizes = [count * dtype.itemsize for count, (_, dtype) in zip(counts, fields)]
    offsets, offset = [], 16
    for size in sizes:
        offsets.append(offset)
        offset += (size + 7) // 8 * 8
    buf = bytearray(offset)
    buf[0] = _BLOCK_TAG
    restarts = np.frombuffer(buf, dtype=np.int64, count=1, offset=8)
    views = tuple(
        np.frombuffer(buf, dtype=dtype, count=count, offset=off).reshape(n, *shape)
        for (shape, dtype), count, off in zip(fields, counts, offsets)
    )
    return buf, restarts, views


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class _GiveUp(RuntimeError):
    pass


def _give_up_message(max_restarts: int, last_error: str) -> str:
    return (
        f"VectorEnv gave up: more than max_restarts={max_restarts} restarts "
        f"(env rebuilds + worker respawns); last error:\n{last_error}"
    )


def _derive_seed(base: int | None, index: int, generation: int, serial: int) -> int:
    """A fresh, deterministic seed for a restarted env (a stream other than the base seed's)."""
    entropy = [int(base or 0) % (2**63), index, generation, serial, 0x6D61726C]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


# ---------------------------------------------------------------------------------------------
# A group of envs: the loop shared by inproc mode and each worker process.
# ---------------------------------------------------------------------------------------------
class _EnvGroup:
    def __init__(
        self,
        env_fns: Sequence[Callable[[], MultiAgentEnv]],
        first_index: int,
        max_restarts: int,
        generation: int = 0,
        limit: int | None = None,
    ) -> None:
        self.env_fns = list(env_fns)
        self.envs: list[MultiAgentEnv] = []
        try:
            for fn in self.env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        self.spec: EnvSpec = self.envs[0].spec
        for i, env in enumerate(self.envs):
            if env.spec != self.spec:
                self.close()
                raise ValueError(
                    f"env {first_index + i} has spec {env.spec}, env {first_index} has {self.spec}"
                )
        self.n = len(self.envs)
        self.fields = _fields(self.spec)
        self.first = first_index
        self.generation = generation
        self.max_restarts = max_restarts  # this group's budget (the parent checks the total)
        self.limit = max_restarts if limit is None else limit  # the VectorEnv's max_restarts
        self.restarts = 0
        self.last_error = ""
        self.seeds: list[int | None] = [None] * self.n
        self.serial = [0] * self.n
        self.ep_return = [0.0] * self.n
        self.ep_length = [0] * self.n

    # -- crash handling -----------------------------------------------------------------------
    def _restart(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rebuild env ``i`` after an exception (call it from the ``except`` block)."""
        self.last_error = traceback.format_exc()
        last_line = (self.last_error.strip().splitlines() or ["?"])[-1]
        log.warning("env %d crashed (%s); rebuilding it", self.first + i, last_line)
        while True:
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise _GiveUp(_give_up_message(self.limit, self.last_error))
            try:
                self.envs[i].close()
            except Exception:  # noqa: BLE001 - a crashed simulator may fail to close
                pass
            try:
                env = self.env_fns[i]()
                self.envs[i] = env
                self.serial[i] += 1
                seed = _derive_seed(self.seeds[i], self.first + i, self.generation, self.serial[i])
                out = env.reset(seed)
                break
            except Exception:  # noqa: BLE001 - retry (counted) until the budget is spent
                self.last_error = traceback.format_exc()
        self.ep_return[i] = 0.0
        self.ep_length[i] = 0
        return out

    # -- commands -----------------------------------------------------------------------------
    def reset(
        self, seeds: Sequence[int | None], derive: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reset every env with its seed (``derive``: with a seed derived from it, after a respawn)."""
        obs, state, avail = _alloc(self.n, self.fields[:3])
        for i in range(self.n):
            self.seeds[i] = None if seeds[i] is None else int(seeds[i])  # type: ignore[arg-type]
            seed = self.seeds[i]
            if derive:
                self.serial[i] += 1
                seed = _derive_seed(seed, self.first + i, self.generation, self.serial[i])
            try:
                o, s, a = self.envs[i].reset(seed)
            except Exception:  # noqa: BLE001
                o, s, a = self._restart(i)
            obs[i], state[i], avail[i] = o, s, a
            self.ep_return[i] = 0.0
            self.ep_length[i] = 0
        return obs, state, avail

    def step(
        self, actions: np.ndarray, out: tuple[np.ndarray, ...] | None = None
    ) -> tuple[np.ndarray, ...]:
        """Step every env; fill ``out`` (the 13 VecStep arrays of this slice; fresh if None)."""
        if out is None:
            out = _alloc(self.n, self.fields)
        for k in _ZERO_FIELDS:
            out[k].fill(0)
        (obs, state, avail, active, reward, terminated, truncated, dropped,
         final_state, final_active, won, episode_return, episode_length) = out  # fmt: skip
        envs, ep_return, ep_length = self.envs, self.ep_return, self.ep_length
        for i in range(self.n):
            env = envs[i]
            try:
                r = env.step(actions[i])
            except Exception:  # noqa: BLE001 - crash: rebuild, drop the episode in flight
                o, s, a = self._restart(i)
                obs[i], state[i], avail[i], active[i] = o, s, a, True
                final_state[i], final_active[i], dropped[i] = s, True, True
                continue
            rew = r.reward
            reward[i] = rew
            ret = ep_return[i] + rew
            length = ep_length[i] + 1
            alive = r.info.get("active", True)
            final_state[i] = r.state
            final_active[i] = alive
            if r.terminated or r.truncated:
                terminated[i] = r.terminated
                truncated[i] = r.truncated
                won[i] = bool(r.info.get("won", False))
                episode_return[i] = ret
                episode_length[i] = length
                ep_return[i] = 0.0
                ep_length[i] = 0
                try:
                    o, s, a = env.reset(None)
                except Exception:  # noqa: BLE001 - the finished episode is intact: not dropped
                    o, s, a = self._restart(i)
                obs[i], state[i], avail[i], active[i] = o, s, a, True
            else:
                ep_return[i] = ret
                ep_length[i] = length
                obs[i], state[i], avail[i], active[i] = r.obs, r.state, r.avail, alive
        return out

    def get_state(self) -> tuple[list[bytes | None], list[float], list[int], list[int | None]]:
        return (
            [env.get_state() for env in self.envs],
            list(self.ep_return),
            list(self.ep_length),
            list(self.seeds),
        )

    def set_state(
        self,
        blobs: Sequence[bytes | None],
        ep_return: Sequence[float],
        ep_length: Sequence[int],
        seeds: Sequence[int | None],
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Restore pickled envs; reset the others. Returns (reset mask, obs, state, avail)."""
        reset_mask = np.zeros(self.n, dtype=bool)
        obs, state, avail = (np.zeros((self.n, *shape), dtype) for shape, dtype in self.fields[:3])
        for i in range(self.n):
            self.seeds[i] = seeds[i]
            env = None
            if blobs[i] is not None:
                try:
                    env = pickle.loads(blobs[i])  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - unrestorable here: reset it instead (warned)
                    log.warning("env %d could not be restored; resetting it\n%s",
                                self.first + i, traceback.format_exc())  # fmt: skip
            if env is not None:
                try:
                    self.envs[i].close()
                except Exception:  # noqa: BLE001
                    pass
                self.envs[i] = env
                self.ep_return[i] = float(ep_return[i])
                self.ep_length[i] = int(ep_length[i])
                continue
            reset_mask[i] = True
            self.serial[i] += 1
            try:
                seed = _derive_seed(seeds[i], self.first + i, self.generation, self.serial[i])
                o, s, a = self.envs[i].reset(seed)
            except Exception:  # noqa: BLE001
                o, s, a = self._restart(i)
            obs[i], state[i], avail[i] = o, s, a
            self.ep_return[i] = 0.0
            self.ep_length[i] = 0
        return reset_mask, obs, state, avail

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass


# ---------------------------------------------------------------------------------------------
# Worker process (spawn): owns one _EnvGroup, answers one message per command.
# ---------------------------------------------------------------------------------------------
def _worker_main(
    conn: Any,
    env_fns: list[Callable[[], MultiAgentEnv]],
    first_index: int,
    max_restarts: int,
    generation: int,
    limit: int,
    spin_s: float = 0.0,
) -> None:
    """Entry point of a worker process.

    Step: ``b"S" + action bytes`` -> the binary block (see ``_block``). Other commands are pickled
    ``(name, *args)`` -> ``("ok", ...)``. Any failure (a give-up included) -> ``("error", tb)``.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it closes us
    try:
        group = _EnvGroup(env_fns, first_index, max_restarts, generation, limit)
    except BaseException:  # noqa: BLE001 - report any start-up failure to the parent
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            conn.close()
        return
    act_shape, act_dtype = _action_layout(group.spec)
    buf, restarts_view, views = _block(group.n, group.fields)
    conn.send(("ready", group.spec, os.getpid()))
    poller = select.poll() if hasattr(select, "poll") else None
    if poller is not None:
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    while True:
        # Spin briefly before blocking: waking a sleeping process costs 100s of us on VMs, more
        # than an MPE step; the next step command usually arrives within a few ms.
        if poller is not None and spin_s > 0:
            until = time.perf_counter() + spin_s
            while not poller.poll(0) and time.perf_counter() < until:
                pass
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # parent gone
            break
        try:
            if data[:1] == _STEP_TAG:
                actions = np.frombuffer(data, dtype=act_dtype, offset=1).reshape(group.n, *act_shape)
                group.step(actions, views)
                restarts_view[0] = group.restarts
                conn.send_bytes(buf)
                continue
            msg = pickle.loads(data)
            cmd = msg[0]
            if cmd == "reset":
                reply: tuple[Any, ...] = ("ok", group.reset(msg[1], derive=msg[2]), group.restarts)
            elif cmd == "get_state":
                reply = ("ok", group.get_state())
            elif cmd == "set_state":
                reply = ("ok", group.set_state(*msg[1:]), group.restarts)
            elif cmd == "last_error":
                reply = ("ok", group.last_error)
            elif cmd == "has_module":
                reply = ("ok", msg[1] in sys.modules)
            elif cmd == "close":
                group.close()
                conn.send(("ok",))
                break
            else:
                reply = ("error", f"unknown command {cmd!r}")
        except Exception:  # noqa: BLE001 - give-ups and bugs go to the parent, which raises
            reply = ("error", traceback.format_exc())
        try:
            conn.send(reply)
        except (OSError, ValueError):
            break
    group.close()
    conn.close()


class _WorkerLost(Exception):
    """A worker died, hung past its timeout, or its pipe broke."""


class _Worker:
    """The parent's handle on one worker process (mutated in place on respawn)."""

    def __init__(self, index: int, lo: int, hi: int) -> None:
        self.index, self.lo, self.hi = index, lo, hi
        self.proc: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self.generation = 0
        self.restarts_seen = 0  # env restarts its current process has reported
        self.awaiting = False  # a reply is owed (still True if the parent was interrupted)
        self.poller: Any = None  # select.poll on the pipe (where available)
        self.reading = False  # inside a read (if interrupted there, the pipe state is unknown)
        self.buf: bytearray | None = None  # the step reply block and views on it
        self.restarts_view: np.ndarray | None = None
        self.views: tuple[np.ndarray, ...] = ()


def _stop_worker(w: _Worker, graceful: bool) -> None:
    """Stop one worker: wait for its reply to an already sent ``close`` (``graceful``), else kill."""
    proc, conn = w.proc, w.conn
    if proc is None:
        return
    if graceful:
        try:
            if conn.poll(5.0):
                conn.recv_bytes()
        except Exception:  # noqa: BLE001 - dead or broken: fall through to kill
            pass
        proc.join(timeout=5.0)
    if proc.is_alive():
        proc.kill()
        proc.join(timeout=5.0)
    for closeable in (conn, proc):
        try:
            closeable.close()
        except Exception:  # noqa: BLE001
            pass
    w.proc = w.conn = None


def _shutdown(workers: list[_Worker], groups: list[_EnvGroup]) -> None:
    """Close everything (also run at interpreter exit via ``weakref.finalize``)."""
    live = [w for w in workers if w.proc is not None]
    asked = []
    for w in live:
        try:
            w.conn.send(("close",))
            asked.append(True)
        except Exception:  # noqa: BLE001 - already dead
            asked.append(False)
    for w, graceful in zip(live, asked):
        _stop_worker(w, graceful)
    for g in groups:
        g.close()


# ---------------------------------------------------------------------------------------------
# The vector env.
# ---------------------------------------------------------------------------------------------
class VectorEnv:
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
        if mode not in ("inproc", "subproc", "hybrid"):
            raise ValueError(f"unknown VectorEnv mode {mode!r}; valid modes: ['inproc', 'subproc', 'hybrid']")
        if mode == "hybrid" and len(env_fns) < 2:
            raise ValueError("VectorEnv mode 'hybrid' needs at least 2 envs (one here, one in a worker)")
        if len(env_fns) == 0:
            raise ValueError("VectorEnv needs at least one env_fn")
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
        self._workers: list[_Worker] = []
        self._groups: list[_EnvGroup] = []
        self._group: _EnvGroup | None = None  # the envs stepped in this process (inproc, hybrid)
        self.local_envs = 0
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._groups)

        # Envs [0, local_envs) are stepped in this process (all of them in inproc mode), the rest
        # by the workers: every command below serves the three modes with one code path.
        if mode == "inproc":
            self.n_workers, self.local_envs = 0, self.num_envs
        elif mode == "hybrid":
            self.n_workers = min(self.num_envs - 1, n_workers or max(1, _usable_cpus() - 1))
            self.local_envs = self.num_envs // (self.n_workers + 1)
        else:
            self.n_workers = min(self.num_envs, n_workers or _usable_cpus())
        if self.n_workers:
            self._ctx = mp.get_context("spawn")
            if spin is None:  # spinning pays only while every spinner has a core of its own
                spin = _DEFAULT_SPIN if self.n_workers + 1 <= _usable_cpus() else 0.0
            self.spin = float(spin)
        bounds = np.linspace(self.local_envs, self.num_envs, self.n_workers + 1).round().astype(int)
        for k in range(self.n_workers):
            self._workers.append(_Worker(k, int(bounds[k]), int(bounds[k + 1])))
        try:
            for w in self._workers:  # start them all, then wait: start-up runs in parallel
                self._start(w)
            specs = []
            if self.local_envs:  # built while the workers start
                self._group = _EnvGroup(self._env_fns[: self.local_envs], 0, self.max_restarts)
                self._groups.append(self._group)
                specs.append(self._group.spec)
            specs += [self._await_ready(w) for w in self._workers]
            for k, s in enumerate(specs[1:], start=1):
                if s != specs[0]:
                    raise ValueError(f"env group {k} built envs with spec {s}, group 0 with {specs[0]}")
        except _WorkerLost as err:
            self.close()
            raise RuntimeError(f"env worker failed to start: {err}") from err
        except BaseException:
            self.close()
            raise
        self.spec: EnvSpec = specs[0]
        self._fields = _fields(self.spec)
        self._act_shape, self._act_dtype = _action_layout(self.spec)

    # ------------------------------------------------------------------ public API
    @property
    def restarts(self) -> int:
        """Env rebuilds + worker respawns so far."""
        return self._restarts

    @property
    def worker_pids(self) -> list[int]:
        """The pids of the worker processes (subproc mode; empty in inproc mode)."""
        return [int(w.pid) for w in self._workers if w.pid is not None]

    def reset(self, seeds: Sequence[int]) -> VecObs:
        """Reset env ``i`` with ``seeds[i]`` (its RNG then continues across auto-resets)."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        self._seeds = [None if s is None else int(s) for s in seeds]
        self._busy = True
        parts = []
        if self._group is not None:
            parts.append(self._group.reset(self._seeds[: self.local_envs]))
            self._sync_inproc_restarts()
        replies = self._broadcast(lambda w: ("reset", self._seeds[w.lo : w.hi], False), self._slow_timeout)
        for w, msg in zip(self._workers, replies):
            if msg is None:  # lost: respawned, reset with derived seeds
                parts.append(self._respawn(w))
            else:
                self._account(w, msg[2])
                parts.append(msg[1])
        obs, state, avail = (self._cat([p[k] for p in parts]) for k in range(3))
        self._pending_dropped[:] = False
        active = np.ones((self.num_envs, self.spec.n_agents), dtype=bool)
        self._remember(obs, state, avail, active)
        self._busy = False
        return VecObs(obs, state, avail, active)

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env with ``actions[i]`` (int ``[E, N]``, or float ``[E, N, A]`` if continuous)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("VectorEnv.step called before reset(seeds)")
        actions = np.ascontiguousarray(actions, dtype=self._act_dtype)
        if actions.shape != (self.num_envs, *self._act_shape):
            raise ValueError(
                f"actions must have shape {(self.num_envs, *self._act_shape)}, got {actions.shape}"
            )
        self._busy = True
        out = self._step_groups(actions)
        if self._pending_dropped.any():  # envs reset behind the caller's back (get_state respawn)
            pend = self._pending_dropped
            out[4][pend] = 0.0  # reward
            out[5][pend] = False  # terminated
            out[6][pend] = False  # truncated
            out[7][pend] = True  # dropped
            pend[:] = False
        self._remember(out[0], out[1], out[2], out[3])
        self._busy = False
        return VecStep(*out, self._restarts)

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot for exact resume (see the module docstring)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("VectorEnv.get_state called before reset(seeds)")
        self._busy = True
        blobs, ep_return, ep_length, seeds = [], [], [], []
        if self._group is not None:
            blobs, ep_return, ep_length, seeds = self._group.get_state()
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
                    msg = self._request(w, ("get_state",), self._slow_timeout)
                except _WorkerLost as err:
                    self._count_restart(str(err))
            b, r, length, sd = msg[1]
            blobs += b
            ep_return += r
            ep_length += length
            seeds += sd
        self._busy = False
        return {
            "format": _STATE_FORMAT,
            "num_envs": self.num_envs,
            "spec": dataclasses.asdict(self.spec),
            "envs": blobs,
            "episode_return": ep_return,
            "episode_length": ep_length,
            "seeds": seeds,
            "restarts": self._restarts,
            "last": tuple(x.copy() for x in self._last),
        }

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot; returns the observations to continue from.

        Envs saved as ``None`` (not picklable, e.g. StarCraft II) are reset with a derived seed
        instead; ``self.last_restore_reset[E]`` marks them (their partial episodes are lost).
        """
        self._check_open()
        if state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a VectorEnv state (format {state.get('format')!r})")
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"state has {state['num_envs']} envs, this VectorEnv {self.num_envs}")
        if state["spec"] != dataclasses.asdict(self.spec):
            raise ValueError(f"state was saved for spec {state['spec']}, this env has {self.spec}")
        blobs, ep_ret, ep_len, seeds = (
            state["envs"], state["episode_return"], state["episode_length"], state["seeds"],
        )  # fmt: skip
        restarts_before = self._restarts
        self._busy = True
        parts = []
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
                parts.append((np.ones(w.hi - w.lo, dtype=bool), o, s, a))
            else:
                self._account(w, msg[2])
                parts.append(msg[1])
        mask, obs, st, avail = (self._cat([p[k] for p in parts]) for k in range(4))
        last_obs, last_state, last_avail, last_active = (np.array(x) for x in state["last"])
        last_obs[mask], last_state[mask], last_avail[mask] = obs[mask], st[mask], avail[mask]
        last_active[mask] = True
        self._seeds = list(seeds)
        self._restarts = int(state["restarts"]) + (self._restarts - restarts_before)
        if self._group is not None:
            self._group.max_restarts = max(0, self.max_restarts - self._restarts)
        self._pending_dropped[:] = False
        self.last_restore_reset = mask.astype(bool)
        self._remember(last_obs, last_state, last_avail, last_active)
        self._busy = False
        return VecObs(last_obs, last_state, last_avail, last_active)

    def workers_have_module(self, name: str) -> list[bool]:
        """Whether each worker process has imported module ``name`` (e.g. ``"torch"``)."""
        self._check_open()
        if not self._workers:
            return [name in sys.modules]
        try:
            return [
                bool(self._request(w, ("has_module", name), self._slow_timeout)[1])
                for w in self._workers
            ]
        except _WorkerLost as err:
            raise RuntimeError(str(err)) from err

    def close(self) -> None:
        """Shut down workers and close envs. Idempotent; also runs at interpreter exit."""
        self._closed = True
        self._finalizer()

    def __enter__(self) -> VectorEnv:
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
            raise RuntimeError("VectorEnv is closed")
        if not self._busy:
            return
        for w in self._workers:
            if w.awaiting:
                try:
                    if w.reading:  # interrupted inside a read: the pipe may hold half a message
                        raise _WorkerLost("interrupted while reading its reply")
                    self._wait(w, self._deadline(self._slow_timeout))
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
            raise RuntimeError(_give_up_message(self.max_restarts, reason))

    def _sync_inproc_restarts(self) -> None:
        g = self._group
        if g.restarts:
            self._restarts += g.restarts
            self.last_error = g.last_error
            g.restarts = 0
            if self._restarts > self.max_restarts:
                raise RuntimeError(_give_up_message(self.max_restarts, g.last_error))
            g.max_restarts = max(0, self.max_restarts - self._restarts)  # the group's own budget

    def _account(self, w: _Worker, worker_restarts: int) -> None:
        """Add the env restarts worker ``w`` reports beyond those already counted."""
        delta = int(worker_restarts) - w.restarts_seen
        if delta:
            w.restarts_seen = int(worker_restarts)
            self._restarts += delta
            try:
                self.last_error = self._request(w, ("last_error",), self._slow_timeout)[1]
            except _WorkerLost as err:  # noticed again at the next command
                self.last_error = str(err)
            log.warning("env worker %d restarted %d env(s):\n%s", w.index, delta, self.last_error)
            if self._restarts > self.max_restarts:
                raise RuntimeError(_give_up_message(self.max_restarts, self.last_error))

    # -- worker management ----------------------------------------------------------------
    def _start(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        budget = max(0, self.max_restarts - self._restarts)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._env_fns[w.lo : w.hi], w.lo, budget, w.generation, self.max_restarts,
                  self.spin),
            name=f"marlopt-env-worker-{w.index}",
            daemon=True,
        )
        proc.start()
        child.close()  # so that the worker's death reads as EOF here
        w.proc, w.conn, w.pid, w.restarts_seen = proc, parent, proc.pid, 0
        w.awaiting = w.reading = False
        w.poller = None
        if hasattr(select, "poll"):
            w.poller = select.poll()
            w.poller.register(parent.fileno(), select.POLLIN | select.POLLPRI)

    def _await_ready(self, w: _Worker) -> EnvSpec:
        msg = self._recv(w, self._deadline(self._slow_timeout), raise_worker_errors=False)
        if msg[0] != "ready":
            raise RuntimeError(f"env worker {w.index} failed to start:\n{msg[1]}")
        w.buf, w.restarts_view, w.views = _block(w.hi - w.lo, _fields(msg[1]))
        return msg[1]

    def _respawn(self, w: _Worker) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kill worker ``w``, start a new one and reset its envs with derived seeds.

        The loss itself is counted by the caller; each failed respawn attempt counts once more.
        """
        while True:
            _stop_worker(w, graceful=False)
            w.generation += 1
            try:
                self._start(w)
                deadline = self._deadline(self._slow_timeout)
                msg = self._recv(w, deadline, raise_worker_errors=False)
                if msg[0] != "ready":
                    raise _WorkerLost(f"respawned env worker {w.index} failed to start:\n{msg[1]}")
                w.conn.send(("reset", self._seeds[w.lo : w.hi], True))
                w.awaiting = True
                msg = self._recv(w, deadline)
                self._account(w, msg[2])
                return msg[1]
            except (_WorkerLost, OSError) as err:
                self._count_restart(f"respawning env worker {w.index} failed: {err}")

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def _wait(self, w: _Worker, deadline: float | None) -> None:
        """Wait until ``w`` has something to read (a reply, or EOF if it died) or the deadline.

        Waiting before reading keeps a Ctrl-C out of the read itself (a half-read message would
        desynchronise the pipe).
        """
        if w.poller is not None and self.spin > 0:  # spin first (see _worker_main)
            until = time.perf_counter() + self.spin
            while time.perf_counter() < until:
                if w.poller.poll(0):
                    return
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        if w.poller is not None:  # a persistent select.poll: far cheaper than Connection.poll
            ready = w.poller.poll(None if timeout is None else int(np.ceil(timeout * 1000)))
        else:
            ready = w.conn.poll(timeout)
        if not ready:
            raise _WorkerLost(f"env worker {w.index} (pid {w.pid}) did not answer in time")

    def _lost(self, w: _Worker, err: BaseException) -> _WorkerLost:
        code = None
        if w.proc is not None:
            w.proc.join(timeout=0.2)  # its pipe broke: it is exiting; report how
            code = w.proc.exitcode
        return _WorkerLost(f"env worker {w.index} (pid {w.pid}) died (exit code {code}): {err!r}")

    def _recv(self, w: _Worker, deadline: float | None, raise_worker_errors: bool = True) -> tuple:
        """Receive one pickled reply (raises ``_WorkerLost`` if the worker died or timed out)."""
        try:
            self._wait(w, deadline)
            w.reading = True
            msg = w.conn.recv()
            w.reading = w.awaiting = False
        except _WorkerLost:
            raise
        except Exception as err:  # noqa: BLE001 - EOF / broken pipe / truncated message
            raise self._lost(w, err) from err
        if raise_worker_errors and msg[0] == "error":
            raise RuntimeError(f"env worker {w.index} failed:\n{msg[1]}")
        return msg

    def _recv_step(self, w: _Worker, deadline: float | None) -> None:
        """Receive one step block into ``w.buf`` (raises ``_WorkerLost``/``RuntimeError``)."""
        try:
            self._wait(w, deadline)
            w.reading = True
            n = w.conn.recv_bytes_into(w.buf)
            w.reading = w.awaiting = False
        except _WorkerLost:
            raise
        except mp.BufferTooShort as err:  # a pickled error longer than the block
            w.reading = w.awaiting = False
            msg = pickle.loads(err.args[0])
            raise RuntimeError(f"env worker {w.index} failed:\n{msg[1]}") from None
        except Exception as err:  # noqa: BLE001
            raise self._lost(w, err) from err
        if w.buf[0] != _BLOCK_TAG:  # a pickled error shorter than the block
            msg = pickle.loads(bytes(w.buf[:n]))
            raise RuntimeError(f"env worker {w.index} failed:\n{msg[1]}")

    def _request(self, w: _Worker, msg: tuple, timeout: float | None) -> tuple:
        """Send one command to one worker and wait for its answer (raises ``_WorkerLost``)."""
        try:
            w.conn.send(msg)
            w.awaiting = True
        except (OSError, ValueError) as err:
            raise self._lost(w, err) from err
        return self._recv(w, self._deadline(timeout))

    def _broadcast(self, make_msg: Callable[[_Worker], tuple], timeout: float | None) -> list:
        """Send to every worker, then collect every answer; ``None`` for lost workers (counted)."""
        sent = []
        for w in self._workers:
            try:
                w.conn.send(make_msg(w))
                w.awaiting = True
                sent.append(None)
            except (OSError, ValueError) as err:
                sent.append(self._lost(w, err))
        deadline = self._deadline(timeout)
        replies: list = []
        losses: list[_WorkerLost] = []
        for w, err in zip(self._workers, sent):
            try:
                if err is not None:
                    raise err
                replies.append(self._recv(w, deadline))
            except _WorkerLost as lost:
                replies.append(None)
                losses.append(lost)
        for lost in losses:  # after collecting everyone, so a slow respawn delays nobody
            log.warning("%s; respawning it", lost)
            self._count_restart(str(lost))
        return replies

    def _step_groups(self, actions: np.ndarray) -> list[np.ndarray]:
        """Send the workers their actions, step the local envs meanwhile, collect the replies."""
        workers = self._workers
        sent: list[_WorkerLost | None] = []
        for w in workers:
            try:
                w.conn.send_bytes(_STEP_TAG + actions[w.lo : w.hi].tobytes())
                w.awaiting = True
                sent.append(None)
            except (OSError, ValueError) as err:
                sent.append(self._lost(w, err))
        out: tuple[np.ndarray, ...] | None = None
        if self._group is not None:  # step our share while the workers step theirs
            m = self.local_envs
            out = _alloc(self.num_envs, self._fields)
            self._group.step(actions[:m], tuple(x[:m] for x in out))
        deadline = self._deadline(self.step_timeout)
        lost: list[tuple[_Worker, _WorkerLost]] = []
        for w, err in zip(workers, sent):
            try:
                if err is not None:
                    raise err
                self._recv_step(w, deadline)
            except _WorkerLost as e:
                lost.append((w, e))
        parts: dict[int, tuple[np.ndarray, ...]] = {}
        for w, err in lost:  # after collecting everyone, so a slow respawn delays nobody
            log.warning("%s; respawning it (its envs are dropped)", err)
            self._count_restart(str(err))
            obs, state, avail = self._respawn(w)
            n, n_agents = w.hi - w.lo, self.spec.n_agents
            parts[w.index] = (
                obs, state, avail, np.ones((n, n_agents), dtype=bool),
                np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool),
                np.ones(n, dtype=bool), state.copy(), np.ones((n, n_agents), dtype=bool),
                np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.int64),
            )  # fmt: skip
        for w in workers:
            if w.index not in parts:
                self._account(w, w.restarts_view[0])
                parts[w.index] = w.views
        if self._group is not None:
            self._sync_inproc_restarts()
        elif len(workers) == 1:
            return [np.array(x) for x in parts[0]]  # copy: the block is reused
        if out is None:
            out = _alloc(self.num_envs, self._fields)
        for w in workers:
            lo, hi, part = w.lo, w.hi, parts[w.index]
            for k in range(_N_FIELDS):
                out[k][lo:hi] = part[k]
        return list(out)
