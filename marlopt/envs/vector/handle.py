"""The parent's handle on one env worker process: start it, talk to it over its pipe, stop it.

Every wait has a deadline; a worker that dies, breaks its pipe or misses its deadline raises
``WorkerLost`` (the vector env respawns it and counts a restart). Waiting happens before reading
(``wait``), so a Ctrl-C never lands inside a half-read message; ``awaiting``/``reading`` record
where an interrupted command stopped, so that the next command can drain the late reply.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
import select
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv
from marlopt.envs.vector.group import EnvGroup
from marlopt.envs.vector.wire import BLOCK_TAG, STEP_TAG, StepArrays, step_block, step_layout
from marlopt.envs.vector.worker import worker_main


class WorkerLost(Exception):
    """A worker died, hung past its timeout, or its pipe broke."""


def deadline(timeout: float | None) -> float | None:
    """The ``time.monotonic()`` deadline ``timeout`` seconds from now (``None``: never)."""
    return None if timeout is None else time.monotonic() + timeout


class WorkerHandle:
    """Worker ``index``, owner of envs ``[lo, hi)`` (mutated in place when it is respawned)."""

    def __init__(self, index: int, lo: int, hi: int) -> None:
        self.index, self.lo, self.hi = index, lo, hi
        self.proc: Any = None
        self.conn: Any = None
        self.pid: int | None = None
        self.generation = 0  # respawns so far (enters the derived seeds of its envs)
        self.spin = 0.0  # seconds to busy-poll for a reply before blocking
        self.restarts_seen = 0  # env restarts its current process has reported
        self.awaiting = False  # a reply is owed (still True if the parent was interrupted)
        self.poller: Any = None  # select.poll on the pipe (where available)
        self.reading = False  # inside a read (if interrupted there, the pipe state is unknown)
        self.buf: bytearray | None = None  # the step reply block and views on it
        self.restarts_view: np.ndarray | None = None
        self.views: StepArrays | None = None

    def start(
        self,
        ctx: Any,
        env_fns: Sequence[Callable[[], MultiAgentEnv]],
        budget: int,
        limit: int,
        spin: float,
    ) -> None:
        """Start the process (its env group gets ``budget`` restarts); do not wait for it."""
        parent, child = ctx.Pipe(duplex=True)
        proc = ctx.Process(
            target=worker_main,
            args=(child, list(env_fns), self.lo, budget, self.generation, limit, spin),
            name=f"marlopt-env-worker-{self.index}",
            daemon=True,
        )
        proc.start()
        child.close()  # so that the worker's death reads as EOF here
        self.proc, self.conn, self.pid, self.restarts_seen = proc, parent, proc.pid, 0
        self.spin = spin
        self.awaiting = self.reading = False
        self.poller = None
        if hasattr(select, "poll"):
            self.poller = select.poll()
            self.poller.register(parent.fileno(), select.POLLIN | select.POLLPRI)

    def await_ready(self, timeout: float | None) -> EnvSpec:
        """Wait for the worker's ``ready``; set up its step block; its envs' spec."""
        msg = self.recv(deadline(timeout), raise_worker_errors=False)
        if msg[0] != "ready":
            raise RuntimeError(f"env worker {self.index} failed to start:\n{msg[1]}")
        spec = msg[1]
        self.buf, self.restarts_view, self.views = step_block(self.hi - self.lo, step_layout(spec))
        return spec

    def wait(self, until: float | None) -> None:
        """Wait until there is something to read (a reply, or EOF if it died) or the deadline."""
        if self.poller is not None and self.spin > 0:  # spin first (see worker_main)
            stop = time.perf_counter() + self.spin
            while time.perf_counter() < stop:
                if self.poller.poll(0):
                    return
        timeout = None if until is None else max(0.0, until - time.monotonic())
        if self.poller is not None:  # a persistent select.poll: far cheaper than Connection.poll
            ready = self.poller.poll(None if timeout is None else int(np.ceil(timeout * 1000)))
        else:
            ready = self.conn.poll(timeout)
        if not ready:
            raise WorkerLost(f"env worker {self.index} (pid {self.pid}) did not answer in time")

    def lost(self, err: BaseException) -> WorkerLost:
        """The ``WorkerLost`` for a broken pipe, with the worker's exit code."""
        code = None
        if self.proc is not None:
            self.proc.join(timeout=0.2)  # its pipe broke: it is exiting; report how
            code = self.proc.exitcode
        return WorkerLost(f"env worker {self.index} (pid {self.pid}) died (exit code {code}): {err!r}")

    def recv(self, until: float | None, raise_worker_errors: bool = True) -> tuple:
        """Receive one pickled reply (raises ``WorkerLost`` if the worker died or timed out)."""
        try:
            self.wait(until)
            self.reading = True
            msg = self.conn.recv()
            self.reading = self.awaiting = False
        except WorkerLost:
            raise
        except Exception as err:  # noqa: BLE001 - EOF / broken pipe / truncated message
            raise self.lost(err) from err
        if raise_worker_errors and msg[0] == "error":
            raise RuntimeError(f"env worker {self.index} failed:\n{msg[1]}")
        return msg

    def recv_step(self, until: float | None) -> None:
        """Receive one step block into ``self.buf`` (raises ``WorkerLost``/``RuntimeError``)."""
        try:
            self.wait(until)
            self.reading = True
            n = self.conn.recv_bytes_into(self.buf)
            self.reading = self.awaiting = False
        except WorkerLost:
            raise
        except mp.BufferTooShort as err:  # a pickled error longer than the block
            self.reading = self.awaiting = False
            msg = pickle.loads(err.args[0])
            raise RuntimeError(f"env worker {self.index} failed:\n{msg[1]}") from None
        except Exception as err:  # noqa: BLE001
            raise self.lost(err) from err
        if self.buf[0] != BLOCK_TAG:  # a pickled error shorter than the block
            msg = pickle.loads(bytes(self.buf[:n]))
            raise RuntimeError(f"env worker {self.index} failed:\n{msg[1]}")

    def send(self, msg: tuple) -> None:
        """Send one pickled command (raises ``OSError``/``ValueError`` on a broken pipe)."""
        self.conn.send(msg)
        self.awaiting = True

    def send_step(self, actions: np.ndarray) -> None:
        """Send the step command with this worker's slice of ``actions``."""
        self.conn.send_bytes(STEP_TAG + actions[self.lo : self.hi].tobytes())
        self.awaiting = True

    def request(self, msg: tuple, timeout: float | None) -> tuple:
        """Send one command and wait for its answer (raises ``WorkerLost``)."""
        try:
            self.send(msg)
        except (OSError, ValueError) as err:
            raise self.lost(err) from err
        return self.recv(deadline(timeout))

    def stop(self, graceful: bool) -> None:
        """Wait for the reply to an already sent ``close`` (``graceful``), else kill."""
        proc, conn = self.proc, self.conn
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
        self.proc = self.conn = None


def shutdown(workers: list[WorkerHandle], groups: list[EnvGroup]) -> None:
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
        w.stop(graceful)
    for g in groups:
        g.close()
