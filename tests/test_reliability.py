"""Fault injection through the real command line: what is left on disk, the exit status and the one
line printed, for every fault in docs/reliability.md's table.

Every resumed run here is compared with one uninterrupted run of the same config (``reference``):
after the fault and the resume, ``metrics.jsonl`` must be the same rows (timings aside) — nothing
lost, nothing duplicated.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from marlopt.logger import read_metrics as read_all
from tests.helpers import REPO, read_metrics, run_cli

# 2 envs x 30 steps = 60 frames per iteration; numbered checkpoints every iteration, latest.pt only
# at a stop, so each test decides which checkpoint is the newest.
SMALL = ["env=mpe", "map=simple_spread", "n_envs=2", "rollout_length=30", "progress=false", "eval_episodes=2",
         "env.vector=inproc", "model.hidden_sizes=[16]", "model.rnn_hidden=16", "save_interval=60",
         "latest_interval=1e6"]
TOTAL = "total_steps=240"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every resumed run must equal."""
    root = tmp_path_factory.mktemp("reference")
    run_cli("marlopt.train", *SMALL, TOTAL, f"hydra.run.dir={root / 'run'}", cwd=root)
    return read_metrics(root / "run")


def _part(tmp_path, iterations: int = 3):
    """A run stopped after ``iterations`` (latest.pt and step_60 ... step_<60·iterations>)."""
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, TOTAL, f"max_iterations={iterations}", f"hydra.run.dir={run}", cwd=tmp_path)
    return run


def _errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("marlopt: error:")]


def test_corrupt_newest_checkpoints_fall_back_to_the_newest_readable_one(tmp_path, reference):
    run = _part(tmp_path)
    ckpt = run / "checkpoints"
    (ckpt / "latest.pt").write_bytes(b"garbage")
    (ckpt / "step_180.pt").write_bytes((ckpt / "step_180.pt").read_bytes()[:100])  # a torn write
    proc = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert "skipped latest.pt" in proc.stderr and "skipped step_180.pt" in proc.stderr
    assert "resuming from step_120.pt at 120 frames" in proc.stderr
    assert read_metrics(run) == reference


def test_resume_takes_a_numbered_checkpoint_newer_than_latest(tmp_path, reference):
    run = _part(tmp_path)
    ckpt = run / "checkpoints"
    shutil.copy(ckpt / "step_60.pt", ckpt / "latest.pt")  # latest.pt lagging (latest_interval > save_interval)
    proc = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert "resuming from step_180.pt at 180 frames" in proc.stderr
    assert read_metrics(run) == reference


def test_resume_from_a_chosen_checkpoint_cleans_temporaries_and_a_torn_metrics_line(tmp_path, reference):
    run = _part(tmp_path)
    stale = run / "checkpoints" / ".latest.pt.tmp31337"
    stale.write_bytes(b"half a checkpoint")  # a write killed by kill -9
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 240, "train/ret')  # a line torn by a crash
    proc = run_cli("marlopt.train", f"resume={run}", "checkpoint=step_120", cwd=tmp_path)
    assert "removed 1 temporary file(s) of a checkpoint write that was killed: .latest.pt.tmp31337" in proc.stderr
    assert "dropped 1 unreadable line(s)" in proc.stderr
    assert "resuming from step_120.pt at 120 frames" in proc.stderr
    assert not stale.exists()
    assert read_metrics(run) == reference


def test_resuming_a_finished_run_writes_nothing(tmp_path, reference):
    run = _part(tmp_path, iterations=100)
    assert read_metrics(run) == reference
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert "this run already finished at 240 frames" in proc.stderr
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before, "no duplicate evaluation row, no rewritten checkpoint"


def test_start_and_end_lines_and_wall_clock_in_every_row(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("marlopt.train", *SMALL, "total_steps=120", f"hydra.run.dir={run}", cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == f"marlopt: run directory: {run}"
    assert lines[-1].startswith("marlopt: final greedy evaluation: return ") and "over 2 episodes" in lines[-1]
    elapsed = [row["time/elapsed_s"] for row in read_all(run)]
    assert len(elapsed) == 3 and all(b >= a > 0 for a, b in zip(elapsed, elapsed[1:]))


def _wait_for_rows(run, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        path = run / "metrics.jsonl"
        if path.is_file() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"the run did not reach {count} metrics rows (status {proc.poll()})")


def test_extended_run_preempted_continues_to_its_new_length_and_refuses_a_second_process(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=60", f"hydra.run.dir={run}", cwd=tmp_path)
    rows = len((run / "metrics.jsonl").read_text().splitlines())
    first = subprocess.Popen([sys.executable, "-m", "marlopt.train", f"resume={run}", "total_steps=1e7"],
                             cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(run, rows + 2, first)
        second = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path, check=False)
        assert second.returncode == 2
        assert _errors(second.stderr) == second.stderr.strip().splitlines()  # one line, nothing else
        assert f"run directory {run} is in use by pid {first.pid}" in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)  # a preemption
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err
    stopped_at = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["counters"]["frames"]
    proc = run_cli("marlopt.train", f"resume={run}", "max_iterations=2", cwd=tmp_path)  # no total_steps given
    assert f"max_iterations reached at {stopped_at + 120:,} frames" in proc.stderr, "kept total_steps=1e7"
    steps = [(r["step"], tuple(sorted(r))) for r in read_metrics(run)]
    assert len(steps) == len(set(steps)), "no row written twice"
    assert [s for s, _ in steps] == sorted(s for s, _ in steps), "rows in frame order"


INJECT = """
import errno, sys, torch, marlopt.logger
calls = [0]
def failing(real, what):
    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            if what == "torch.save":
                args[1].write(b"partial")
                raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\\n"
                                   "PytorchStreamWriter failed writing file data/0: file write failed")
            raise OSError(errno.ENOSPC, "No space left on device", "metrics.jsonl")
        return real(*args, **kwargs)
    return wrapper
if sys.argv[1] == "torch.save":
    torch.save = failing(torch.save, "torch.save")
else:
    marlopt.logger.RunLogger.log = failing(marlopt.logger.RunLogger.log, "log")
from marlopt.train import main
main(sys.argv[2:])
"""


@pytest.mark.parametrize(("where", "line"), [("torch.save", "a checkpoint write failed (disk full?)"),
                                             ("log", "No space left on device (metrics.jsonl)")])
def test_a_full_disk_ends_in_one_line_and_the_run_resumes_exactly(tmp_path, reference, where, line):
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", INJECT, where, *SMALL, TOTAL, f"hydra.run.dir={run}"],
                          cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and line in errors[0] and f"resume with: python -m marlopt.train resume={run}" in errors[0]
    assert "Traceback" not in proc.stderr
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert not [n for n in names if ".tmp" in n], "no partial checkpoint left"
    run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert read_metrics(run) == reference


def test_malformed_saved_config_is_one_line(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=60", f"hydra.run.dir={run}", cwd=tmp_path)
    (run / ".hydra" / "config.yaml").write_text("seed: [1, 2\nalgo: {")
    proc = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == _errors(proc.stderr)
    assert f"{run / '.hydra'} is damaged" in proc.stderr


@pytest.mark.parametrize(("args", "expected"), [(["episodes=abc"], "episodes: must be a whole number (got 'abc')"),
                                                (["seed=x"], "seed: must be a whole number (got 'x')"),
                                                (["episodes=0"], "episodes: must be > 0")])
def test_evaluate_bad_arguments_are_one_line(tmp_path, args, expected):
    proc = run_cli("marlopt.evaluate", f"run={tmp_path}", *args, cwd=tmp_path, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"marlopt: error: {expected}")


def test_huge_learning_rate_stops_with_one_line_and_keeps_finite_checkpoints(tmp_path):
    run = tmp_path / "run"
    proc = run_cli("marlopt.train", *SMALL, "total_steps=1e6", "algo.lr=1e30", "algo.critic_lr=1e30",
                   "nonfinite_patience=20", f"hydra.run.dir={run}", cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr
    errors = _errors(proc.stderr)
    assert len(errors) == 1 and "training diverged" in errors[0] and "non-finite" in errors[0]
    assert "Traceback" not in proc.stderr
    rows = read_all(run)
    assert any(r.get("train/nonfinite_steps", 0) > 0 for r in rows), "skipped steps are counted"
    assert not any("eval/return_mean" in r for r in rows), "no believable final evaluation"
    for path in (run / "checkpoints").glob("*.pt"):
        rule = torch.load(path, weights_only=True)["rule"]
        for tensor in _tensors(rule):
            assert torch.isfinite(tensor).all(), f"{path.name} holds a non-finite tensor"


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj.float()
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)



def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, reference):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "marlopt.train", *SMALL, TOTAL, f"hydra.run.dir={run}"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / "checkpoints" / "step_60.pt").is_file():
        time.sleep(0.02)
    proc.kill()
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (run / "checkpoints" / "latest.pt").exists(), "killed before any stop could save"
    proc = run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert "resuming from step_" in proc.stderr
    assert read_metrics(run) == reference


def test_exit_status_tells_a_signal_stop_from_a_finished_run():
    from marlopt.train import exit_status

    assert exit_status("finished") == 0 and exit_status("max_iterations reached") == 0
    assert exit_status("stopped by SIGTERM") == 143 and exit_status("stopped by SIGINT") == 130
    assert exit_status("diverged") == 3


def test_a_diverged_sweep_job_does_not_stop_the_others_and_the_sweep_exits_3(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli("marlopt.train", "-m", "algo.lr=1e30,3e-4", *SMALL, "total_steps=120", "nonfinite_patience=5", f"hydra.sweep.dir={sweep}",
                   cwd=tmp_path, check=False)
    assert proc.returncode == 3, proc.stderr
    diverged, finished = sweep / "0_mappo_simple_spread_seed0", sweep / "1_mappo_simple_spread_seed0"
    assert "training diverged" in proc.stderr and f"(run directory: {diverged})" in proc.stderr
    assert any("eval/return_mean" in r for r in read_metrics(finished)), "job 1 trained to the end"
    assert _errors(proc.stderr)[-1] == f"marlopt: error: 1 sweep job(s) diverged: {diverged}"
