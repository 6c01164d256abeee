"""The main loop of an env worker process (started with **spawn** by ``ProcessVectorEnv``).

A worker owns one ``EnvGroup`` and answers one message per command on its pipe:

- step: ``STEP_TAG + action bytes`` -> the binary step block (``wire.StepBlock``);
- every other command is a pickled ``(name, *args)`` -> ``("ok", ...)``: ``reset``, ``get_state``,
  ``set_state``, ``last_error``, ``has_module``, ``close``;
- any failure (a give-up included) -> ``("error", traceback)``; the parent raises it.

It imports numpy and the env's own modules only (never torch), and ignores Ctrl-C: stopping it is
the parent's business.
"""

from __future__ import annotations

import os
import pickle
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

import numpy as np

from marlopt.envs.base import MultiAgentEnv
from marlopt.envs.vector.group import EnvGroup
from marlopt.envs.vector.wire import STEP_TAG, action_layout, step_block


def worker_main(
    conn: Any,
    env_fns: list[Callable[[], MultiAgentEnv]],
    first_index: int,
    max_restarts: int,
    generation: int,
    limit: int,
    spin_s: float = 0.0,
) -> None:
    """Entry point of a worker process: build the group, send ``("ready", spec, pid)``, serve."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's business; it closes us
    try:
        group = EnvGroup(env_fns, first_index, max_restarts, generation, limit)
    except BaseException:  # noqa: BLE001 - report any start-up failure to the parent
        try:
            conn.send(("error", traceback.format_exc()))
        finally:
            conn.close()
        return
    act_shape, act_dtype = action_layout(group.spec)
    block = step_block(group.n, group.layout)
    conn.send(("ready", group.spec, os.getpid()))
    poller = select.poll() if hasattr(select, "poll") else None
    if poller is not None:
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    while True:
        # Spin briefly before blocking: waking a sleeping process can cost more than an MPE step
        # on VMs (docs/benchmarks.md); the next step command usually arrives within a few ms.
        if poller is not None and spin_s > 0:
            until = time.perf_counter() + spin_s
            while not poller.poll(0) and time.perf_counter() < until:
                pass
        try:
            data = conn.recv_bytes()
        except (EOFError, OSError):  # parent gone
            break
        try:
            if data[:1] == STEP_TAG:
                actions = np.frombuffer(data, dtype=act_dtype, offset=1).reshape(group.n, *act_shape)
                group.step(actions, block.arrays)
                block.restarts[0] = group.restarts
                conn.send_bytes(block.buf)
                continue
            cmd, *args = pickle.loads(data)
            if cmd == "reset":
                seeds, derive = args
                reply: tuple[Any, ...] = ("ok", group.reset(seeds, derive=derive), group.restarts)
            elif cmd == "get_state":
                reply = ("ok", group.get_state())
            elif cmd == "set_state":
                reply = ("ok", group.set_state(*args), group.restarts)
            elif cmd == "last_error":
                reply = ("ok", group.last_error)
            elif cmd == "has_module":
                reply = ("ok", args[0] in sys.modules)
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
