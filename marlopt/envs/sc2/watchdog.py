"""The SC2 watchdog: a tiny process that kills StarCraft II games whose owner died.

``guard.py`` starts it as ``python <this file>`` (a script, so that it imports nothing but the
standard library) with a pipe on its stdin, and writes one line per event: ``"+ <pid> <start>"``
when a game starts (``<start>`` is the game's start time, field 22 of ``/proc/<pid>/stat``),
``"- <pid>"`` when it is closed normally. At EOF, that is when the owner (an env worker) exits or
is killed, even by SIGKILL, it kills every pid still registered whose start time is unchanged (so
that a reused pid is never killed). Linux only (``/proc``).

It must import only ``os``, ``signal`` and ``sys``: nothing of marlopt, numpy or the simulators.
"""

from __future__ import annotations

import os
import signal
import sys


def start_time(pid: int) -> str | None:
    """Process ``pid``'s start time in clock ticks since boot (``None`` if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def main() -> None:
    """Read registrations from stdin until EOF, then kill the games still registered."""
    pids: dict[int, str] = {}
    for line in sys.stdin:
        op, _, rest = line.strip().partition(" ")
        if op == "+":
            pid, _, start = rest.partition(" ")
            pids[int(pid)] = start
        elif op == "-":
            pids.pop(int(rest), None)
    for pid, start in pids.items():
        if start_time(pid) == start:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


if __name__ == "__main__":
    main()
