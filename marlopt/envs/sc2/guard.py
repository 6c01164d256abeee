"""The SC2 process guard: StarCraft II must not outlive the process that launched it.

``guard_pid(pid)`` registers a game with this process's watchdog (``watchdog.py``, started on first
use, one per process, in its own session so that it survives us), ``release_pid(pid)`` takes it
off again. If this process dies first, even by SIGKILL (a hung env worker), the watchdog reads EOF
and kills the games still registered. ``kill_pid``/``kill_popen`` kill a game now. Linux only; on
other systems the guard does nothing.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from marlopt.envs.sc2.watchdog import start_time

log = logging.getLogger(__name__)

#: Run as a script: its directory (this package) heads its ``sys.path``, so no module here may
#: take the name of a standard module it imports (``os``, ``signal``, ``sys``).
WATCHDOG_SCRIPT = str(Path(__file__).with_name("watchdog.py"))

_guard_lock = threading.Lock()
_guard: dict[str, Any] = {"proc": None, "owner": None}  # this process's watchdog


def _guard_send(line: str) -> None:
    if not sys.platform.startswith("linux"):
        return
    with _guard_lock:
        proc = _guard["proc"]
        if proc is None or proc.poll() is not None or _guard["owner"] != os.getpid():
            try:
                proc = subprocess.Popen(
                    [sys.executable, WATCHDOG_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                )
            except OSError as err:  # the guard is a safety net, never a reason to fail
                log.warning("could not start the SC2 process guard: %s", err)
                return
            _guard["proc"], _guard["owner"] = proc, os.getpid()
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            _guard["proc"] = None


def guard_pid(pid: int) -> None:
    """Kill ``pid`` if this process dies before ``release_pid(pid)``."""
    start = start_time(pid)
    if start is not None:
        _guard_send(f"+ {pid} {start}")


def release_pid(pid: int) -> None:
    """Take ``pid`` off the watchdog's list (it was closed normally)."""
    _guard_send(f"- {pid}")


def sc2_popen(raw_env: Any) -> Any:
    """The ``subprocess.Popen`` of the game an env launched (pysc2's ``StarcraftProcess._proc``)."""
    proc = getattr(raw_env, "_sc2_proc", None)
    return getattr(proc, "_proc", None) if proc is not None else None


def kill_pid(pid: int, start: str | None) -> None:
    """SIGKILL ``pid`` if it is still the process that started at ``start``."""
    if start is None or start_time(pid) != start:
        return
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def kill_popen(popen: Any) -> None:
    """Kill a game launched with ``subprocess.Popen`` and reap it (never raises)."""
    try:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
    except Exception:  # noqa: BLE001
        pass
