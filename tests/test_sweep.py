"""Sweeps (marlopt/sweep.py, docs/sweeps.md): parallel jobs share the cores; under submitit a
preempted job checkpoints, is requeued and resumes exactly; a requeued job refuses a run of another
config in one line, and one whose run had finished just says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from marlopt import sweep
from marlopt.cli import compose
from marlopt.config import ConfigError
from marlopt.envs.common import usable_cpus
from marlopt.runners.common import StopFlag
from tests.helpers import REPO, read_metrics, run_cli

#: The launcher tests need the sweep extra (the Hydra plugins); the unit tests run without it.
needs_joblib = pytest.mark.skipif(not all(map(sweep.installed, sweep.LAUNCHER_PACKAGES["joblib"])),
                                  reason='needs the sweep extra: pip install -e ".[sweep]"')
needs_submitit = pytest.mark.skipif(not all(map(sweep.installed, sweep.LAUNCHER_PACKAGES["submitit"])),
                                    reason='needs the sweep extra: pip install -e ".[sweep]"')

TINY = ["total_steps=2000", "n_envs=2", "rollout_length=100", "progress=false", "eval_episodes=2"]
JOBLIB = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
SUBMITIT_LOCAL = {"_target_": "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"}


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr("marlopt.envs.common.usable_cpus", lambda: n)


# ------------------------------------------------------------------------------------------------
# Cores shared by parallel jobs


@pytest.mark.parametrize(("n_jobs", "jobs"), [(-1, 16), (-2, 15), (4, 4), (None, 1), (1, 1)])
def test_parallel_jobs_reads_joblibs_n_jobs_as_joblib_does(n_jobs, jobs):
    assert sweep.parallel_jobs(OmegaConf.create({**JOBLIB, "n_jobs": n_jobs}), cpus=16) == jobs
    assert sweep.parallel_jobs(OmegaConf.create({"_target_": "BasicLauncher", "n_jobs": 4}), cpus=16) == 1


def test_thread_share_is_cores_over_jobs_and_at_least_one():
    assert [sweep.thread_share(16, j) for j in (1, 3, 4, 16, 40)] == [16, 5, 4, 1, 1]


def test_share_cores_caps_all_core_settings_and_leaves_explicit_ones(monkeypatch):
    _cores(monkeypatch, 16)
    four = OmegaConf.create({**JOBLIB, "n_jobs": 4})
    cfg, note = sweep.share_cores(_typed("env.vector=subproc"), four)
    assert (cfg.torch_threads, cfg.env.vector, cfg.env.n_workers) == (4, "subproc", 4)
    assert note == "note: 4 parallel jobs share 16 cores: torch_threads=4, env.n_workers=4 (set them to override)"
    cfg, _ = sweep.share_cores(_typed("env.vector=hybrid"), four)  # this process is one of the four
    assert (cfg.env.vector, cfg.env.n_workers) == ("hybrid", 3)
    cfg, _ = sweep.share_cores(_typed("torch_threads=8", "env.n_workers=6"), four)  # explicit values win
    assert (cfg.torch_threads, cfg.env.n_workers) == (8, 6)
    cfg, _ = sweep.share_cores(_typed("env.vector=hybrid"), OmegaConf.create({**JOBLIB, "n_jobs": -1}))
    assert (cfg.torch_threads, cfg.env.vector, cfg.env.n_workers) == (1, "inproc", 0)  # one core each: in-process
    cfg, note = sweep.share_cores(_typed(), OmegaConf.create({"_target_": "BasicLauncher"}))  # one job at a time
    assert (cfg.torch_threads, cfg.env.n_workers, note) == (0, 0, None)
    cfg, _ = sweep.share_cores(_typed(), OmegaConf.create({**SUBMITIT_LOCAL, "cpus_per_task": 2}))
    assert (cfg.torch_threads, cfg.env.vector, cfg.env.n_workers) == (2, "hybrid", 1)  # MPE: this process + 1


def _typed(*overrides: str):
    from marlopt.config import to_objects

    return to_objects(compose(["progress=false", *overrides]))


@needs_joblib
@pytest.mark.slow
def test_a_joblib_sweep_runs_two_jobs_at_once_with_a_share_of_the_cores_each(tmp_path):
    proc = run_cli("marlopt.train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "seed=0,1",
                   "env.vector=subproc", *TINY, f"hydra.sweep.dir={tmp_path}", cwd=tmp_path, timeout=300)
    cpus = usable_cpus()
    share = max(1, cpus // 2)
    notes = [line for line in proc.stderr.splitlines() if "parallel jobs share" in line]
    if share < cpus:  # env.vector=subproc: its workers, spawned from joblib's loky workers, are capped too
        assert notes == [f"marlopt: note: 2 parallel jobs share {cpus} cores: torch_threads={share}, "
                         f"env.n_workers={share} (set them to override)"] * 2
    for seed in (0, 1):
        rows = read_metrics(tmp_path / f"{seed}_mappo_simple_spread_seed{seed}")
        assert rows[-1]["step"] == 2000 and "eval/return_mean" in rows[-1]


# ------------------------------------------------------------------------------------------------
# Submitit: preemption, requeue, resume


def test_stop_flag_catches_submitits_preemption_signal_only_in_a_submitit_job(monkeypatch):
    monkeypatch.delenv("SUBMITIT_EXECUTOR", raising=False)
    assert sweep.preemption_signals() == ()
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SUBMITIT_PREEMPT_SIGNAL", "USR1")
    assert sweep.preemption_signals() == (signal.SIGUSR1,)
    monkeypatch.delenv("SUBMITIT_PREEMPT_SIGNAL")
    before = signal.getsignal(signal.SIGUSR2)
    with StopFlag() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGTERM)  # a later SIGTERM does not rename the stop: the requeue holds
        assert (stop.requested, stop.signal_name) == (True, "SIGUSR2")
    assert signal.getsignal(signal.SIGUSR2) is before


def test_hand_over_calls_submitits_handler_and_exits_128_plus_n(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    calls = []

    def requeued(signum, frame):  # submitit on SLURM: scontrol requeue, then sys.exit(-1)
        calls.append(signum)
        raise SystemExit(-1)

    previous = signal.signal(signal.SIGUSR2, requeued)
    try:
        assert sweep.hand_over("stopped by SIGUSR2", tmp_path) == 128 + signal.SIGUSR2
        assert calls == [signal.SIGUSR2]
        assert sweep.hand_over("stopped by SIGTERM", tmp_path) == 143 and calls == [signal.SIGUSR2]
        monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
        signal.signal(signal.SIGUSR2, lambda s, f: sys.exit(sweep.LOCAL_REQUEUE_STATUS))
        with pytest.raises(SystemExit) as exc:  # the local controller restarts a job that exits 144
            sweep.hand_over("stopped by SIGUSR2", tmp_path)
        assert exc.value.code == sweep.LOCAL_REQUEUE_STATUS

        def not_requeued(signum, frame):
            raise RuntimeError("Job not requeued because: timed-out too many times.")

        signal.signal(signal.SIGUSR2, not_requeued)
        assert sweep.hand_over("stopped by SIGUSR2", tmp_path) == 140
        assert capsys.readouterr().err.strip() == (
            "marlopt: not requeued (Job not requeued because: timed-out too many times.); continue by hand with: "
            f"python -m marlopt.train resume={tmp_path}")
    finally:
        signal.signal(signal.SIGUSR2, previous)


def _fake_run(run_dir: Path, config: list[str]) -> None:
    """A run directory as a submitit job's first start leaves it (``.hydra/`` and its copy, a lock)."""
    (run_dir / ".hydra").mkdir(parents=True)
    OmegaConf.save(compose(config), run_dir / ".hydra" / "config.yaml")
    (run_dir / ".hydra" / "overrides.yaml").write_text("- seed=0\n")
    assert sweep.requeued_run(run_dir, compose(config)) == "new"  # the first start keeps its copy
    (run_dir / ".lock").write_text("")


def test_a_requeued_job_refuses_a_run_of_another_config_in_one_line_and_restores_it(tmp_path):
    run_dir = tmp_path / "0_mappo_simple_spread_seed0"
    _fake_run(run_dir, ["seed=0", "algo.lr=0.0005"])
    original = (run_dir / ".hydra" / "config.yaml").read_text()
    job = compose(["seed=0", "algo.lr=0.001"])
    OmegaConf.save(job, run_dir / ".hydra" / "config.yaml")  # what the requeued job's Hydra wrote over it
    with pytest.raises(ConfigError) as exc:
        sweep.requeued_run(run_dir, job)
    assert str(exc.value) == (
        f"requeued job: {run_dir} holds a run of another config (algo.lr: 0.0005 -> 0.001); resume that run "
        f"with: python -m marlopt.train resume={run_dir}, or give this job another hydra.sweep.dir")
    assert (run_dir / ".hydra" / "config.yaml").read_text() == original


def test_a_requeued_job_without_a_checkpoint_starts_over_and_with_one_resumes(tmp_path):
    run_dir = tmp_path / "run"
    _fake_run(run_dir, ["seed=0"])
    (run_dir / "metrics.jsonl").write_text('{"step": 200}\n')
    (run_dir / "tb").mkdir()
    assert sweep.requeued_run(run_dir, compose(["seed=0"])) == "new"
    assert not (run_dir / "metrics.jsonl").exists() and not (run_dir / "tb").exists()
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "latest.pt").write_bytes(b"")
    assert sweep.requeued_run(run_dir, compose(["seed=0"])) == "resume"


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"the sweep ended before {path} appeared:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > end:
            raise AssertionError(f"{path} did not appear in {timeout:.0f} s")
        time.sleep(0.1)


@needs_submitit
@pytest.mark.slow
def test_submitit_local_sweep_finishes_and_a_preempted_job_is_requeued_and_resumes_exactly(tmp_path, monkeypatch, capsys):
    """Two submitit jobs with the same seed (they differ in ``save_interval`` only, which changes no
    metric): job 0 gets SIGUSR2 after its first checkpoint, as SLURM's ``--signal`` would send it; it
    writes ``latest.pt``, submitit requeues it and it resumes. Both finish, job 0's metrics equal job
    1's (uninterrupted), with no duplicate rows; requeueing the finished job then only says so."""
    total, per_iteration = 4000, 200
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "marlopt.train", "-m", "hydra/launcher=submitit_local",
         "hydra.launcher.cpus_per_task=1", "seed=0", "save_interval=1e6,2e6", f"total_steps={total}",
         "n_envs=2", "rollout_length=100", "progress=false", "eval_episodes=2", f"latest_interval={per_iteration}",
         f"hydra.sweep.dir={tmp_path}"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    preempted, plain = tmp_path / "0_mappo_simple_spread_seed0", tmp_path / "1_mappo_simple_spread_seed0"
    try:
        _wait_for(preempted / "checkpoints" / "latest.pt", proc)
        pid = int((preempted / ".lock").read_text().split()[1])  # the job's training process
        os.kill(pid, signal.SIGUSR2)
        _, err = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    logs = {p.name: p.read_text() for p in tmp_path.glob(".submitit/*/*_0_log.*")}
    job_err = next(text for name, text in logs.items() if name.endswith(".err") and "SIGUSR2" in text)
    job_out = next(text for name, text in logs.items() if name.endswith(".out") and "Requeued job" in text)
    assert "Caught signal SIGUSR2" in job_err and "(3 remaining timeouts)" in job_out
    stopped = [line for line in job_err.splitlines() if line.startswith("marlopt: stopped by SIGUSR2 at ")]
    assert len(stopped) == 1
    frames = int(stopped[0].split(" at ")[1].split()[0].replace(",", ""))
    assert 0 < frames < total and f"marlopt: resuming from latest.pt at {frames:,} frames" in job_err
    rows, expected = read_metrics(preempted), read_metrics(plain)
    steps = [r["step"] for r in rows if "train/return_mean" in r]
    assert steps == list(range(per_iteration, total + 1, per_iteration))  # every iteration once, in order
    assert "eval/return_mean" in rows[-1] and "eval/return_mean" in expected[-1]
    assert rows == expected  # the resume is exact

    # the same job requeued once more (its run finished): it resumes nothing and writes nothing
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "local")
    before = (preempted / "metrics.jsonl").read_text()
    _requeue_in_process(preempted)
    assert "marlopt: this run already finished at 4,000 frames" in capsys.readouterr().err
    assert (preempted / "metrics.jsonl").read_text() == before


def _requeue_in_process(run_dir: Path) -> None:
    """Run ``_hydra_task`` as the requeued job's Hydra would: the run's config, its Hydra config."""
    from hydra.core.hydra_config import HydraConfig

    from marlopt.train import _hydra_task

    job = compose([str(o) for o in OmegaConf.load(run_dir / ".hydra" / "overrides.yaml")])
    hydra_cfg = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml")
    HydraConfig.instance().cfg = hydra_cfg  # (HydraConfig.get() reads its "hydra" node)
    try:
        _hydra_task(job)
    finally:
        HydraConfig.instance().cfg = None


def test_a_launcher_whose_plugin_is_missing_is_refused_in_one_line_before_anything_runs(monkeypatch, capsys, tmp_path):
    from marlopt.train import main

    sweep.check_launcher(["hydra/launcher=basic"])  # Hydra's own: nothing to install
    if all(map(sweep.installed, [*sweep.LAUNCHER_PACKAGES["joblib"], *sweep.LAUNCHER_PACKAGES["submitit"]])):
        sweep.check_launcher(["hydra/launcher=parallel", "hydra/launcher=submitit_local"])  # installed: accepted
    monkeypatch.setitem(sweep.LAUNCHER_PACKAGES, "submitit", ("hydra_plugins.not_installed_launcher", "submitit"))
    with pytest.raises(SystemExit) as exc:
        main(["-m", "hydra/launcher=slurm", "seed=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        "marlopt: error: hydra/launcher=slurm needs the submitit launcher (hydra_plugins.not_installed_launcher "
        'is not installed); install it with: pip install -e ".[sweep]"')
    assert not (tmp_path / "sweep").exists()


@needs_joblib
@pytest.mark.slow
def test_a_job_diverging_in_a_joblib_worker_makes_the_sweep_exit_3_naming_it(tmp_path):
    """The job runs in another process, so the sweep learns of it through the sweep's report file."""
    proc = run_cli("marlopt.train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "algo.lr=1e30,3e-4",
                   *TINY, "total_steps=400", "nonfinite_patience=5", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                   cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 3, proc.stderr
    diverged = tmp_path / "sweep" / "0_mappo_simple_spread_seed0"
    assert proc.stderr.strip().splitlines()[-1] == f"marlopt: error: 1 sweep job(s) diverged: {diverged}"
    assert any("eval/return_mean" in r for r in read_metrics(tmp_path / "sweep" / "1_mappo_simple_spread_seed0"))
