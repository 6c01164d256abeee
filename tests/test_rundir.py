"""Run directories: one process per run, writability checked before anything is created, and the
changes a resume made kept for the next resume."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from marlopt.rundir import RunDirError, RunLock, check_writable, has_run, save_changes, saved_changes
from tests.helpers import REPO


def test_a_second_lock_on_a_run_is_refused_naming_the_owner(tmp_path):
    lock = RunLock(tmp_path)
    code = ("import sys; from pathlib import Path; from marlopt.rundir import RunLock, RunDirError\n"
            "try:\n    RunLock(Path(sys.argv[1]))\nexcept RunDirError as e:\n    print(e); sys.exit(7)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 7, proc.stderr
    assert f"is in use by pid {os.getpid()}" in proc.stdout
    lock.release()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, "a released lock (or a dead owner) does not block"


def test_the_lock_dies_with_its_process(tmp_path):
    code = "import sys, os; from pathlib import Path; from marlopt.rundir import RunLock; RunLock(Path(sys.argv[1])); os._exit(0)"
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    RunLock(tmp_path).release()  # no stale lock to clear by hand


def test_check_writable(tmp_path):
    check_writable(tmp_path / "a" / "b" / "c")  # creatable under a writable ancestor
    assert not (tmp_path / "a").exists(), "the check creates nothing"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        check_writable(tmp_path / "file" / "run")
    with pytest.raises(RunDirError, match="cannot write the run directory /proc/marlopt"):
        check_writable("/proc/marlopt/run")
    assert list(tmp_path.iterdir()) == [tmp_path / "file"], "no probe file left behind"


def test_resume_changes_accumulate(tmp_path):
    (tmp_path / ".hydra").mkdir()
    assert saved_changes(tmp_path) == {}
    save_changes(tmp_path, {"total_steps": "2e6"})
    save_changes(tmp_path, {"device": "cpu"})
    save_changes(tmp_path, {"total_steps": "3e6"})
    assert saved_changes(tmp_path) == {"total_steps": "3e6", "device": "cpu"}


def test_has_run(tmp_path):
    assert not has_run(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("")
    assert has_run(tmp_path)
