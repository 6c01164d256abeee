"""The command line: outputs of a run, bad-input errors, resume, signals, evaluate."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch

from marlopt.cli import choices
from marlopt.train import main
from tests.helpers import REPO, read_metrics, run_cli

# Small MPE run: 2 envs, rollout 30 (episodes of 25 cross iteration boundaries), GRU chunks of 10.
SMALL = ["env=mpe", "map=simple_spread", "n_envs=2", "rollout_length=30", "total_steps=360", "progress=false",
         "eval_episodes=2", "latest_interval=60", "save_interval=120"]


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("marlopt: error: ")
    return err[0]


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["algo=nope"], "unknown algo 'nope'; valid choices: " + ", ".join(choices("algo"))),
        (["env=nope"], "unknown env 'nope'; valid choices: " + ", ".join(choices("env"))),
        (["map=MMM9"], "unknown map 'MMM9'"),
        (["env=games", "map=simple_spread"], "map 'simple_spread' belongs to env=mpe, not env=games"),
        (["map=gpvd_matrix"], "use env=games map=gpvd_matrix"),
        (["env=games"], "valid maps for env=games: coordsum_3x10_30, coordsum_3x30_50, coordsum_5x20_80, coordsum_8x15_100, gpvd_matrix, harl_example1, predator_prey, predator_prey_p2, pymarl2_matrix, sum_to_10"),
        (["algo.lr=-0.1"], "algo.lr: must be > 0"),
        (["algo=qmix", "env.continuous=true"], "env.continuous: algo=qmix (value decomposition) needs discrete actions"),
        (["algo=gpvd", "algo.hash_bits=63"], "algo.hash_bits: must be in 1..62"),
        (["algo=qmix", "algo.batch_size=64", "algo.buffer_size=32"], "algo.batch_size: must be <= algo.buffer_size=32"),
        (["n_envs=0"], "n_envs: must be > 0"),
        # recurrent named: MAPPO on MPE (the default job) is an MLP since tuned/env_algo/mpe_mappo.yaml
        (["rollout_length=25", "model.recurrent=true"], "rollout_length: must be a multiple of model.data_chunk_length=10"),
        (["model.sharing=some"], "model.sharing: must be one of shared, separate, hybrid"),
        (["algo.lrr=1"], "Could not override 'algo.lrr'"),
        (["device=gpu"], "device: must be cpu, cuda, cuda:N or auto"),
        (["-m", "algo=mappo,nope"], "unknown algo 'nope'"),
        # checked before Hydra creates the run directory (marlopt/preflight.py, docs/reliability.md)
        (["+algo.lrr=1"], "algo.lrr: unknown key (did you mean algo.lr?"),
        (["+model.hiden_sizes=[8]"], "model.hiden_sizes: unknown key (did you mean model.hidden_sizes?"),
        (["seed=-1"], "seed: must be in 0..42938"),
        (["resume="], "resume= needs the run directory to continue"),
        (["checkpoint=step_10"], "checkpoint= goes with resume=<run_dir>"),
        (["-m", "algo.lr=1e-3,-1"], "sweep job 1 (algo.lr=-1): algo.lr: must be > 0 (got -1.0)"),
        (["-m", "seed=0,1", "n_envs=1,0"], "sweep job 1 (seed=0 n_envs=0): n_envs: must be > 0"),
        (["env=games", "map=gpvd_matrix", "env.continuous=true"],
         "env=games map=gpvd_matrix cannot be built with these options: map gpvd_matrix has discrete actions only"),
        (["env.options.n_agents=0"], "cannot be built with these options: n_agents must be >= 1, got 0"),
        (["+env.options.no_such_option=1"], "cannot be built with these options: unknown MPE option(s) ['no_such_option']"),
        (["env=games", "map=harl_example1", "env.vector=batched"],
         "env.vector=batched: env=games has no batched vector env (available for: mpe, smax)"),
        (["env.vector=batched"], "env.vector: env=mpe runs batched only on JaxMARL's MPE; add env.backend=jax"),
        (["hydra.run.dir=/proc/marlopt/run"], "cannot write the run directory /proc/marlopt/run"),
    ],
)
def test_bad_input_fails_early_with_one_line(capsys, tmp_path, monkeypatch, argv, expected):
    monkeypatch.chdir(tmp_path)
    assert expected in _error_line(capsys, argv)
    assert list(tmp_path.iterdir()) == [], "a rejected command must not create a run directory"


def test_run_directory_has_every_output(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert (run / ".hydra" / "config.yaml").is_file() and (run / ".hydra" / "overrides.yaml").is_file()
    rows = read_metrics(run, drop_time=False)
    assert [r["step"] for r in rows[:-1]] == [60 * i for i in range(1, 7)]
    assert all("time/fps" in r and "train/return_mean" in r for r in rows[1:-1])
    assert rows[-1]["step"] == 360 and "eval/return_mean" in rows[-1]
    versions = json.loads((run / "versions.json").read_text())
    assert versions["packages"]["torch"] == torch.__version__.split("+")[0] or versions["packages"]["torch"]
    assert {"python", "marlopt_commit", "packages"} <= set(versions) and "mpe2" in versions["packages"]
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.pt"))
    assert ckpts == ["latest.pt", "step_120.pt", "step_240.pt", "step_360.pt"]
    assert not list((run / "checkpoints").glob(".*tmp*")), "temporary checkpoint files left behind"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/return_mean", "eval/return_mean", "time/fps", "ratio/max"} <= tags
    assert [e.step for e in acc.Scalars("train/return_mean")] == [r["step"] for r in rows if "train/return_mean" in r]

    out = run_cli("marlopt.evaluate", f"run={run}", "episodes=4", cwd=tmp_path)
    assert "over 4 episodes" in out.stdout
    saved = json.loads((run / "eval" / "latest.json").read_text())
    assert saved["episodes"] == 4 and saved["frames"] == 360
    out2 = run_cli("marlopt.evaluate", f"run={run}", "episodes=4", "checkpoint=step_120", cwd=tmp_path)
    assert "at 120 frames" in out2.stdout


def test_resume_equals_uninterrupted(tmp_path):
    """An interrupted run (hybrid: envs in this process and in a subprocess worker) resumed from
    its checkpoint logs exactly what an uninterrupted run (in-process envs) logs: models,
    optimisers, ValueNorm, RNGs, env states mid-episode, hidden states and counters are all restored."""
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli("marlopt.train", *SMALL, "env.vector=inproc", f"hydra.run.dir={full}", cwd=tmp_path)
    run_cli("marlopt.train", *SMALL, "env.vector=hybrid", "env.n_workers=1", "max_iterations=2",
            f"hydra.run.dir={part}", cwd=tmp_path)
    assert [r["step"] for r in read_metrics(part)] == [60, 120]
    # a log line written after the last checkpoint must not survive the resume
    with open(part / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 180, "train/return_mean": 0.0}) + "\n")
    run_cli("marlopt.train", f"resume={part}", "max_iterations=1", cwd=tmp_path)
    run_cli("marlopt.train", f"resume={part}", cwd=tmp_path)
    assert read_metrics(part) == read_metrics(full)


def test_same_seed_same_metrics_and_other_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    base = [*SMALL, "total_steps=120", "env.vector=inproc"]
    run_cli("marlopt.train", *base, f"hydra.run.dir={a}", cwd=tmp_path)
    run_cli("marlopt.train", *base, f"hydra.run.dir={b}", cwd=tmp_path)
    run_cli("marlopt.train", *base, "seed=1", f"hydra.run.dir={c}", cwd=tmp_path)
    assert read_metrics(a) == read_metrics(b)
    assert read_metrics(a) != read_metrics(c)


def test_resume_rejects_config_changes_and_missing_runs(capsys, tmp_path):
    line = _error_line(capsys, [f"resume={tmp_path}"])
    assert "not a marlopt run directory" in line
    line = _error_line(capsys, [f"resume={tmp_path}", "algo.lr=1"])
    assert "only total_steps" in line


def test_sigterm_saves_a_checkpoint_then_resume_finishes(tmp_path):
    run = tmp_path / "run"
    args = [sys.executable, "-m", "marlopt.train", *SMALL, "total_steps=1e7", "latest_interval=1e7",
            "save_interval=1e7", f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), **__import__("os").environ})
    deadline = time.time() + 120
    while time.time() < deadline and not ((run / "metrics.jsonl").is_file() and (run / "metrics.jsonl").read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # not 0: a requeue script can tell it apart
    assert "stopped by SIGTERM" in err and f"resume={run}" in err
    payload = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    frames = payload["counters"]["frames"]
    assert frames > 0 and read_metrics(run)[-1]["step"] == frames
    run_cli("marlopt.train", f"resume={run}", f"total_steps={frames + 60}", cwd=tmp_path)
    assert read_metrics(run)[-1]["step"] == frames + 60


def test_corrupt_checkpoint_is_reported_and_kept(capsys, tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=120", f"hydra.run.dir={run}", cwd=tmp_path)
    latest = run / "checkpoints" / "latest.pt"
    latest.write_bytes(b"not a checkpoint")
    line = _error_line(capsys, [f"resume={run}", "checkpoint=latest"])  # asked for: no fallback
    assert "corrupt or incompatible checkpoint" in line and "step_120" in line
    assert latest.read_bytes() == b"not a checkpoint", "the bad file must be left for inspection"
    proc = run_cli("marlopt.evaluate", f"run={run}", "checkpoint=step_999", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "available: latest, step_120" in proc.stderr


def test_checkpoint_of_another_format_is_refused_not_misloaded(capsys, tmp_path):
    """Format 1 stored linear weights [in, out]: its square layers would load silently transposed."""
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=120", f"hydra.run.dir={run}", cwd=tmp_path)
    latest = run / "checkpoints" / "latest.pt"
    payload = torch.load(latest, weights_only=True)
    assert payload["format"] == 2
    del payload["format"]  # what a format-1 checkpoint looks like
    torch.save(payload, latest)
    line = _error_line(capsys, [f"resume={run}", "checkpoint=latest"])
    assert "checkpoint format 1" in line and "reads format 2" in line and "versions.json" in line
    proc = run_cli("marlopt.evaluate", f"run={run}", cwd=tmp_path, check=False)
    assert proc.returncode == 2 and "checkpoint format 1" in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_fails_before_anything_is_written_start_and_resume(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "device=cuda but CUDA is not available" in _error_line(capsys, ["device=cuda"])
    assert list(tmp_path.iterdir()) == []
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=60", f"hydra.run.dir={run}", cwd=tmp_path)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*")}
    assert "device=cuda:1 but CUDA is not available" in _error_line(capsys, [f"resume={run}", "device=cuda:1"])
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*")} == before, "a refused resume writes nothing"


def test_run_directory_of_another_run_is_refused(capsys, tmp_path, monkeypatch):
    """A fresh run pointed at an existing run's directory would interleave the two runs' metrics."""
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "total_steps=60", f"hydra.run.dir={run}", cwd=tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    line = _error_line(capsys, [*SMALL, f"hydra.run.dir={run}"])
    assert f"{run} already holds a run; continue it with resume={run}" in line
    assert (run / "metrics.jsonl").read_bytes() == before


def test_missing_gfootball_is_one_line_with_the_fix(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("gfootball", "gfootball.env"):
        monkeypatch.setitem(sys.modules, name, None)  # import gfootball -> ImportError
    line = _error_line(capsys, ["env=grf", "map=academy_3_vs_1_with_keeper"])
    assert "scripts/install_grf.sh" in line
    assert list(tmp_path.iterdir()) == []


def test_missing_simulator_is_one_line_with_the_fix(capsys, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("smac") is not None:
        pytest.skip("a smac package is importable here")
    monkeypatch.chdir(tmp_path)
    line = _error_line(capsys, ["algo=grasp", "env=smac", "map=MMM2"])
    assert "smac" in line and "scripts/install_sc2.sh" in line
    assert list(tmp_path.iterdir()) == []
