"""``VectorEnv``: E copies of a ``MultiAgentEnv`` stepped together, stacked, auto-reset, crash-proof.

Two modes, one behaviour (same seeds + same actions => bit-identical outputs):

- ``mode="inproc"``: a Python loop over the envs in this process (no IPC; best for cheap envs or
  one core).
- ``mode="subproc"``: ``n_workers`` processes started with the **spawn** context, each owning a
  contiguous slice of the envs. One message per worker per step (its slice of the actions) and one
  reply (its slice of every output, as stacked arrays). Workers import numpy and the env's own
  modules only (never torch). Scripts that use it need the usual ``if __name__ == "__main__":``
  guard of spawn.

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


_N_SLICE_FIELDS = 13  # VecStep fields without ``restarts``: what one group/worker returns


class _GiveUp(RuntimeError):
    pass


def _derive_seed(base: int | None, index: int, generation: int, serial: int) -> int:
    """A fresh, deterministic seed for a restarted env (never equal to the base seed's stream)."""
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
        self.first = first_index
        self.generation = generation
        self.max_restarts = max_restarts
        self.restarts = 0
        self.last_error = ""
        self.seeds: list[int | None] = [None] * self.n
        self.serial = [0] * self.n
        self.ep_return = [0.0] * self.n
        self.ep_length = [0] * self.n
        s = self.spec
        self._shapes = (s.n_agents, s.obs_dim, s.state_rows, s.state_dim, s.n_actions)

    # -- crash handling -----------------------------------------------------------------------
    def _restart(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rebuild env ``i`` after an exception (called from an ``except`` block)."""
        self.last_error = traceback.format_exc()
        last_line = self.last_error.strip().splitlines()[-1] if self.last_error.strip() else "?"
        log.warning("env %d crashed (%s); rebuilding it", self.first + i, last_line)
        while True:
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise _GiveUp(
                    f"VectorEnv gave up: more than max_restarts={self.max_restarts} env restarts; "
                    f"last error:\n{self.last_error}"
                )
            try:
                self.envs[i].close()
            except Exception:  # noqa: BLE001 - a crashed simulator may fail to close
                pass
            try:
                env = self.env_fns[i]()
                self.envs[i] = env
                self.serial[i] += 1
                out = env.reset(_derive_seed(self.seeds[i], self.first + i, self.generation, self.serial[i]))
                break
            except Exception:  # noqa: BLE001 - retry (counted) until max_restarts
                self.last_error = traceback.format_exc()
        self.ep_return[i] = 0.0
        self.ep_length[i] = 0
        return out

    # -- commands -----------------------------------------------------------------------------
    def reset(
        self, seeds: Sequence[int | None], derive: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Reset every env with its seed (``derive``: with a seed derived from it, after a respawn)."""
        n_agents, obs_dim, s_rows, s_dim, n_act = self._shapes
        obs = np.empty((self.n, n_agents, obs_dim), dtype=np.float32)
        state = np.empty((self.n, s_rows, s_dim), dtype=np.float32)
        avail = np.empty((self.n, n_agents, n_act), dtype=bool)
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

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, ...]:
        n = self.n
        n_agents, obs_dim, s_rows, s_dim, n_act = self._shapes
        obs = np.empty((n, n_agents, obs_dim), dtype=np.float32)
        state = np.empty((n, s_rows, s_dim), dtype=np.float32)
        avail = np.empty((n, n_agents, n_act), dtype=bool)
        active = np.empty((n, n_agents), dtype=bool)
        reward = np.zeros(n, dtype=np.float32)
        terminated = np.zeros(n, dtype=bool)
        truncated = np.zeros(n, dtype=bool)
        dropped = np.zeros(n, dtype=bool)
        final_state = np.empty((n, s_rows, s_dim), dtype=np.float32)
        final_active = np.empty((n, n_agents), dtype=bool)
        won = np.zeros(n, dtype=bool)
        episode_return = np.zeros(n, dtype=np.float32)
        episode_length = np.zeros(n, dtype=np.int64)
        envs, ep_return, ep_length = self.envs, self.ep_return, self.ep_length
        for i in range(n):
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
        return (
            obs, state, avail, active, reward, terminated, truncated, dropped,
            final_state, final_active, won, episode_return, episode_length,
        )  # fmt: skip

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
        n_agents, obs_dim, s_rows, s_dim, n_act = self._shapes
        reset_mask = np.zeros(self.n, dtype=bool)
        obs = np.zeros((self.n, n_agents, obs_dim), dtype=np.float32)
        state = np.zeros((self.n, s_rows, s_dim), dtype=np.float32)
        avail = np.zeros((self.n, n_agents, n_act), dtype=bool)
        for i in range(self.n):
            self.seeds[i] = seeds[i]
            env = None
            if blobs[i] is not None:
                try:
                    env = pickle.loads(blobs[i])  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - unrestorable: reset it instead (warned)
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
                o, s, a = self.envs[i].reset(
                    _derive_seed(seeds[i], self.first + i, self.generation, self.serial[i])
                )
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
) -> None:
    """Entry point of a worker process. Protocol: (command, *args) -> ("ok", ...) | ("error", tb)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it closes us
    try:
        group = _EnvGroup(env_fns, first_index, max_restarts, generation)
    except BaseException:  # noqa: BLE001 - report any start-up failure to the parent
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            conn.close()
        return
    conn.send(("ready", group.spec, os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # parent gone
            break
        cmd = msg[0]
        try:
            if cmd == "step":
                out = group.step(msg[1])
                reply: tuple[Any, ...] = ("ok", out, group.restarts, group.last_error)
            elif cmd == "reset":
                reply = ("ok", group.reset(msg[1], derive=msg[2]), group.restarts, group.last_error)
            elif cmd == "get_state":
                reply = ("ok", group.get_state())
            elif cmd == "set_state":
                reply = ("ok", group.set_state(*msg[1:]), group.restarts, group.last_error)
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


def _stop_worker(w: _Worker, graceful: bool) -> None:
    """Stop one worker: ask it to close (``graceful``, a ``close`` already sent), else kill it."""
    proc, conn = w.proc, w.conn
    if proc is None:
        return
    if graceful:
        try:
            if conn.poll(5.0):
                conn.recv()
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
    closing = []
    for w in workers:
        if w.proc is None:
            continue
        try:
            w.conn.send(("close",))
            closing.append(True)
        except Exception:  # noqa: BLE001 - already dead
            closing.append(False)
    for w in [w for w in workers if w.proc is not None]:
        _stop_worker(w, graceful=closing.pop(0))
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
        mode: ``"inproc"`` or ``"subproc"``.
        n_workers: subproc only; default ``min(E, os.cpu_count())``; each worker owns a contiguous
            slice of the envs.
        step_timeout: subproc only; seconds a worker may take for one step before it is deemed hung,
            killed and respawned (``None``: wait forever; a dead worker is still detected).
        max_restarts: total env rebuilds + worker respawns tolerated before ``RuntimeError``.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], MultiAgentEnv]],
        mode: str = "inproc",
        n_workers: int | None = None,
        step_timeout: float | None = None,
        max_restarts: int = 100,
    ) -> None:
        if mode not in ("inproc", "subproc"):
            raise ValueError(f"unknown VectorEnv mode {mode!r}; valid modes: ['inproc', 'subproc']")
        if len(env_fns) == 0:
            raise ValueError("VectorEnv needs at least one env_fn")
        if step_timeout is not None and step_timeout <= 0:
            raise ValueError(f"step_timeout must be positive or None, got {step_timeout}")
        self.mode = mode
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
        self._workers: list[_Worker] = []
        self._groups: list[_EnvGroup] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._workers, self._groups)

        if mode == "inproc":
            self._group = _EnvGroup(self._env_fns, 0, self.max_restarts)
            self._groups.append(self._group)
            self.spec: EnvSpec = self._group.spec
            self.n_workers = 0
        else:
            self._ctx = mp.get_context("spawn")
            n_workers = min(self.num_envs, n_workers or os.cpu_count() or 1)
            if n_workers < 1:
                raise ValueError(f"n_workers must be >= 1, got {n_workers}")
            self.n_workers = n_workers
            bounds = np.linspace(0, self.num_envs, n_workers + 1).round().astype(int)
            for k in range(n_workers):
                self._workers.append(_Worker(k, int(bounds[k]), int(bounds[k + 1])))
            try:
                for w in self._workers:  # start them all, then wait: start-up runs in parallel
                    self._start(w)
                specs = [self._await_ready(w) for w in self._workers]
            except _WorkerLost as err:
                self.close()
                raise RuntimeError(f"env worker failed to start: {err}") from err
            except BaseException:
                self.close()
                raise
            for k, s in enumerate(specs[1:], start=1):
                if s != specs[0]:
                    self.close()
                    raise ValueError(f"worker {k} built envs with spec {s}, worker 0 with {specs[0]}")
            self.spec = specs[0]
        s = self.spec
        self._shapes = (s.n_agents, s.obs_dim, s.state_rows, s.state_dim, s.n_actions)

    # ------------------------------------------------------------------ public API
    @property
    def restarts(self) -> int:
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
        if self.mode == "inproc":
            obs, state, avail = self._group.reset(self._seeds)
            self._sync_inproc_restarts()
        else:
            parts = self._broadcast(
                lambda w: ("reset", self._seeds[w.lo : w.hi], False), self._slow_timeout
            )
            results = []
            for w, msg in zip(self._workers, parts):
                if msg is None:  # lost: respawned, already reset with derived seeds
                    results.append(self._respawn(w))
                else:
                    self._account(w, msg[2], msg[3])
                    results.append(msg[1])
            obs, state, avail = (self._cat([r[k] for r in results]) for k in range(3))
        self._pending_dropped[:] = False
        active = np.ones((self.num_envs, self.spec.n_agents), dtype=bool)
        self._remember(obs, state, avail, active)
        return VecObs(obs, state, avail, active)

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env with ``actions[i]`` (int ``[E, N]``, or float ``[E, N, A]`` if continuous)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("VectorEnv.step called before reset(seeds)")
        actions = np.asarray(actions)
        if actions.shape[0] != self.num_envs:
            raise ValueError(f"actions must have {self.num_envs} rows, got shape {actions.shape}")
        if self.mode == "inproc":
            out = self._group.step(actions)
            self._sync_inproc_restarts()
        else:
            out = self._step_subproc(actions)
        if self._pending_dropped.any():  # envs reset behind the caller's back (get_state respawn)
            pend = self._pending_dropped
            out[5][pend] = False  # terminated
            out[6][pend] = False  # truncated
            out[7][pend] = True  # dropped
            out[4][pend] = 0.0
            pend[:] = False
        self._remember(out[0], out[1], out[2], out[3])
        return VecStep(*out, self._restarts)

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot for exact resume (see the module docstring)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("VectorEnv.get_state called before reset(seeds)")
        if self.mode == "inproc":
            blobs, ep_return, ep_length, seeds = self._group.get_state()
        else:
            blobs, ep_return, ep_length, seeds = [], [], [], []
            parts = self._broadcast(lambda w: ("get_state",), self._slow_timeout)
            for w, msg in zip(self._workers, parts):
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

        Envs saved as ``None`` (not picklable) are reset with a derived seed instead;
        ``self.last_restore_reset[E]`` marks them.
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
        if self.mode == "inproc":
            mask, obs, st, avail = self._group.set_state(blobs, ep_ret, ep_len, seeds)
            self._sync_inproc_restarts()
        else:
            parts = self._broadcast(
                lambda w: ("set_state", blobs[w.lo : w.hi], ep_ret[w.lo : w.hi],
                           ep_len[w.lo : w.hi], seeds[w.lo : w.hi]),
                self._slow_timeout,
            )  # fmt: skip
            results = []
            for w, msg in zip(self._workers, parts):
                if msg is None:  # lost while restoring: its envs start over
                    o, s, a = self._respawn(w)
                    results.append((np.ones(w.hi - w.lo, dtype=bool), o, s, a))
                else:
                    self._account(w, msg[2], msg[3])
                    results.append(msg[1])
            mask, obs, st, avail = (self._cat([r[k] for r in results]) for k in range(4))
        last_obs, last_state, last_avail, last_active = (np.array(x) for x in state["last"])
        last_obs[mask], last_state[mask], last_avail[mask] = obs[mask], st[mask], avail[mask]
        last_active[mask] = True
        self._seeds = list(seeds)
        self._restarts = int(state["restarts"]) + (self._restarts - restarts_before)
        if self.mode == "inproc":
            self._group.max_restarts = max(0, self.max_restarts - self._restarts)
        self._pending_dropped[:] = False
        self.last_restore_reset = mask.astype(bool)
        self._remember(last_obs, last_state, last_avail, last_active)
        return VecObs(last_obs.copy(), last_state.copy(), last_avail.copy(), last_active.copy())

    def workers_have_module(self, name: str) -> list[bool]:
        """Whether each worker process has imported module ``name`` (e.g. ``"torch"``)."""
        self._check_open()
        if self.mode == "inproc":
            return [name in sys.modules]
        try:
            return [bool(self._request(w, ("has_module", name), self._slow_timeout)[1]) for w in self._workers]
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
        if self._closed:
            raise RuntimeError("VectorEnv is closed")

    def _remember(self, obs: np.ndarray, state: np.ndarray, avail: np.ndarray, active: np.ndarray) -> None:
        # Private copies: callers may modify what they get; checkpoints need the true values.
        self._last = VecObs(obs.copy(), state.copy(), avail.copy(), active.copy())

    @staticmethod
    def _cat(arrays: list[np.ndarray]) -> np.ndarray:
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)

    def _count_restart(self, reason: str) -> None:
        self._restarts += 1
        self.last_error = reason
        if self._restarts > self.max_restarts:
            raise RuntimeError(
                f"VectorEnv gave up: more than max_restarts={self.max_restarts} restarts; "
                f"last error:\n{reason}"
            )

    def _sync_inproc_restarts(self) -> None:
        g = self._group
        if g.restarts:
            self._restarts += g.restarts
            self.last_error = g.last_error
            g.restarts = 0
            if self._restarts > self.max_restarts:
                raise RuntimeError(
                    f"VectorEnv gave up: more than max_restarts={self.max_restarts} restarts; "
                    f"last error:\n{g.last_error}"
                )
            g.max_restarts = max(0, self.max_restarts - self._restarts)  # the group's own budget

    def _account(self, w: _Worker, worker_restarts: int, last_error: str) -> None:
        """Add the env restarts a worker reported since its last reply."""
        delta = worker_restarts - w.restarts_seen
        if delta:
            w.restarts_seen = worker_restarts
            self._restarts += delta
            self.last_error = last_error
            if self._restarts > self.max_restarts:
                raise RuntimeError(
                    f"VectorEnv gave up: more than max_restarts={self.max_restarts} restarts; "
                    f"last error:\n{last_error}"
                )

    # -- worker management ----------------------------------------------------------------
    def _start(self, w: _Worker) -> None:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._env_fns[w.lo : w.hi], w.lo,
                  max(0, self.max_restarts - self._restarts), w.generation),  # fmt: skip
            name=f"marlopt-env-worker-{w.index}",
            daemon=True,
        )
        proc.start()
        child.close()  # so that the worker's death reads as EOF here
        w.proc, w.conn, w.pid, w.restarts_seen = proc, parent, proc.pid, 0

    def _await_ready(self, w: _Worker) -> EnvSpec:
        msg = self._recv(w, self._deadline(self._slow_timeout), raise_worker_errors=False)
        if msg[0] != "ready":
            raise RuntimeError(f"env worker {w.index} failed to start:\n{msg[1]}")
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
                msg = self._recv(w, deadline)
                self._account(w, msg[2], msg[3])
                return msg[1]
            except (_WorkerLost, OSError) as err:
                self._count_restart(f"respawning env worker {w.index} failed: {err}")

    def _deadline(self, timeout: float | None) -> float | None:
        return None if timeout is None else time.monotonic() + timeout

    def _recv(self, w: _Worker, deadline: float | None, raise_worker_errors: bool = True) -> tuple:
        try:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not w.conn.poll(timeout):
                raise _WorkerLost(f"env worker {w.index} (pid {w.pid}) did not answer in time")
            msg = w.conn.recv()
        except _WorkerLost:
            raise
        except Exception as err:  # noqa: BLE001 - EOF / broken pipe / truncated message
            code = w.proc.exitcode if w.proc is not None else None
            raise _WorkerLost(
                f"env worker {w.index} (pid {w.pid}) died (exit code {code}): {err!r}"
            ) from err
        if raise_worker_errors and msg[0] == "error":
            raise RuntimeError(f"env worker {w.index} failed:\n{msg[1]}")
        return msg

    def _request(self, w: _Worker, msg: tuple, timeout: float | None) -> tuple:
        """Send one command to one worker and wait for its answer (raises ``_WorkerLost``)."""
        try:
            w.conn.send(msg)
        except (OSError, ValueError) as err:
            raise _WorkerLost(f"env worker {w.index} (pid {w.pid}): {err!r}") from err
        return self._recv(w, self._deadline(timeout))

    def _broadcast(self, make_msg: Callable[[_Worker], tuple], timeout: float | None) -> list:
        """Send to every worker, then collect every answer; ``None`` for lost workers (counted)."""
        sent = []
        for w in self._workers:
            try:
                w.conn.send(make_msg(w))
                sent.append(True)
            except (OSError, ValueError):
                sent.append(False)
        deadline = self._deadline(timeout)
        replies: list = []
        reasons: list[str] = []
        for w, ok in zip(self._workers, sent):
            if not ok:
                replies.append(None)
                reasons.append(f"env worker {w.index} (pid {w.pid}): broken pipe")
                continue
            try:
                replies.append(self._recv(w, deadline))
            except _WorkerLost as err:
                replies.append(None)
                reasons.append(str(err))
        for reason in reasons:  # after collecting everyone, so a slow respawn delays nobody
            log.warning("%s; respawning it", reason)
            self._count_restart(reason)
        return replies

    def _step_subproc(self, actions: np.ndarray) -> list[np.ndarray]:
        parts = self._broadcast(lambda w: ("step", actions[w.lo : w.hi]), self.step_timeout)
        slices = []
        n_agents, _, s_rows, s_dim, _ = self._shapes
        for w, msg in zip(self._workers, parts):
            if msg is not None:
                self._account(w, msg[2], msg[3])
                slices.append(msg[1])
                continue
            obs, state, avail = self._respawn(w)  # lost: all its envs dropped
            n = w.hi - w.lo
            slices.append((
                obs, state, avail, np.ones((n, n_agents), dtype=bool),
                np.zeros(n, dtype=np.float32), np.zeros(n, dtype=bool), np.zeros(n, dtype=bool),
                np.ones(n, dtype=bool), state.copy(), np.ones((n, n_agents), dtype=bool),
                np.zeros(n, dtype=bool), np.zeros(n, dtype=np.float32), np.zeros(n, dtype=np.int64),
            ))  # fmt: skip
        if len(slices) == 1:
            return list(slices[0])
        return [np.concatenate([s[k] for s in slices]) for k in range(_N_SLICE_FIELDS)]
