"""The SC2 watchdog (``marlopt/envs/sc2/watchdog.py``): run as a script by the process guard, it kills
the games still registered when its owner's pipe closes, and only those."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from marlopt.envs.sc2 import guard, watchdog

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the watchdog reads /proc")


def _sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])


def test_the_guard_runs_the_watchdog_file():
    assert guard.WATCHDOG_SCRIPT == watchdog.__file__


def test_eof_kills_registered_games_only():
    kept, released, killed, reused = (_sleeper() for _ in range(4))
    try:
        dog = subprocess.Popen([sys.executable, guard.WATCHDOG_SCRIPT], stdin=subprocess.PIPE, text=True)
        lines = [f"+ {killed.pid} {watchdog.start_time(killed.pid)}",
                 f"+ {released.pid} {watchdog.start_time(released.pid)}", f"- {released.pid}",
                 f"+ {reused.pid} 1"]  # a start time that does not match: a reused pid, spared
        dog.communicate("\n".join(lines) + "\n", timeout=60)  # writes, closes stdin (EOF), waits
        assert dog.returncode == 0
        assert killed.wait(timeout=10) == -9
        time.sleep(0.2)
        assert kept.poll() is None and released.poll() is None and reused.poll() is None
    finally:
        for proc in (kept, released, killed, reused):
            proc.kill()
            proc.wait()
    assert watchdog.start_time(killed.pid) is None  # gone (reaped)
