"""Training on SMAC end to end, through the real CLI (``python -m marlopt.train``), in a subprocess.

Where the real ``smac`` package is not installed the runs use the stand-in (``tests/standins``,
put on ``PYTHONPATH``): it stands in for StarCraft II, which cannot run here, and injects faults
through environment variables. With the real package and StarCraft II these tests are marked
``sc2`` and run without injected faults.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.standins.backend import STANDINS, backend, fake_sc2_install

REPO = Path(__file__).resolve().parents[2]
BACKEND = backend("smac")
pytestmark = [pytest.mark.slow] + ([pytest.mark.sc2] if BACKEND == "real" else [])


def _train(tmp_path: Path, *args: str, extra_env: dict[str, str] | None = None, timeout: float = 240):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MARLOPT_STANDIN_")}
    paths = [str(REPO)] + ([str(STANDINS)] if BACKEND == "standin" else [])
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [os.environ.get("PYTHONPATH", "")] if p])
    if BACKEND == "standin":
        env["SC2PATH"] = str(fake_sc2_install(tmp_path / "StarCraftII"))
    elif not env.get("SC2PATH") and not Path("~/StarCraftII").expanduser().is_dir():
        pytest.skip("real smac installed but StarCraft II is not (set SC2PATH)")
    env.update(extra_env or {})
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "marlopt.train", *args, f"hydra.run.dir={run}"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"training failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    return rows, proc


def test_cli_mappo_3m_completes_through_crashes_and_a_killed_worker(tmp_path):
    """The short MAPPO run on 3m through the CLI; on the stand-in with faults injected: a connection
    loss that SMAC swallows (it would fabricate an episode end), random crashes raised by the game,
    and an env worker process that dies. The run completes, restarts are counted and logged, and
    no terminal transition is fabricated (the unit-level proof, step by step, is
    ``test_smac.py::test_vector_env_drops_the_crashed_episode_and_fabricates_no_terminal``)."""
    once = tmp_path / "once"
    once.mkdir()
    faults = {
        "MARLOPT_STANDIN_CRASH_AT_STEP": "5",  # the game drops its connection; SMAC swallows it
        "MARLOPT_STANDIN_CRASH_KIND": "swallow",  # and would report a fake episode end (0, True, {})
        "MARLOPT_STANDIN_EXIT_AT_STEP": "12",  # an env worker process dies
        "MARLOPT_STANDIN_FAULT_ONCE": str(once),
        "MARLOPT_STANDIN_CRASH_PROB": "0.01",  # and random crashes (raised by the game)
        "MARLOPT_STANDIN_CRASH_SEED": "3",
    } if BACKEND == "standin" else {}
    args = ["algo=mappo", "env=smac", "map=3m", "n_envs=2", "rollout_length=20", "total_steps=160",
            "progress=false", "eval_episodes=2", "latest_interval=1000", "save_interval=1000"]
    rows, proc = _train(tmp_path, *args, extra_env=faults)
    assert [r["step"] for r in rows[:4]] == [40, 80, 120, 160]
    final = rows[-1]
    assert "eval/win_rate" in final and 0.0 <= final["eval/win_rate"] <= 1.0 and final["eval/episodes"] == 2
    if BACKEND == "real":
        return
    assert sorted(p.name for p in once.iterdir()) == ["crash", "exit"], "both faults fired"
    restarts = [r["env/restarts"] for r in rows if "env/restarts" in r]
    assert restarts == sorted(restarts) and restarts[-1] >= 2
    assert "env restarts" in proc.stdout + proc.stderr
    # No fabricated terminal: the swallowed crash at step 5 would have ended a 5-step "episode";
    # a real 3m episode needs the armies to meet first (more than 10 steps in the stand-in).
    lengths = [r["train/episode_length"] for r in rows if "train/episode_length" in r]
    assert all(length > 10 for length in lengths), lengths


def test_grasp_on_mmm2_runs_two_iterations(tmp_path):
    """The headline command ``algo=grasp env=smac map=MMM2`` (with the FP state), two iterations."""
    rows, _ = _train(tmp_path, "algo=grasp", "env=smac", "map=MMM2", "env.state_type=FP", "n_envs=2",
                     "rollout_length=20", "total_steps=80", "progress=false", "eval_episodes=1",
                     "latest_interval=1000", "save_interval=1000")
    assert [r["step"] for r in rows[:2]] == [40, 80]
    assert all("critic/value_loss" in r and "actor/policy_loss" in r for r in rows[:2]), "two updates ran"
    assert "eval/win_rate" in rows[-1] and rows[-1]["eval/episodes"] == 1
