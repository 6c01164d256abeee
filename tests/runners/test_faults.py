"""The runner with agents that die, envs that crash, workers that are killed, envs that cannot be
pickled — on ``tests.envs.faulty_env.ToyEnv`` (FP states, deaths, wins, injected failures)."""

from __future__ import annotations

import functools
import os
import signal

import numpy as np
import pytest
import torch

import marlopt.runners.common as runner_common
from marlopt.runners.on_policy import OnPolicyRunner
from tests.envs.faulty_env import make
from tests.helpers import make_config


@pytest.fixture
def toy_runner(monkeypatch, tmp_path):
    def build(vector="inproc", n_envs=4, **toy):
        monkeypatch.setattr(runner_common, "env_fn", lambda name, map_name, options: functools.partial(make, "toy", **toy))
        cfg = make_config("env=games", "map=gpvd_matrix", f"n_envs={n_envs}", "rollout_length=20",
                          "model.recurrent=true", "model.data_chunk_length=10", "total_steps=160", "eval_episodes=4")
        cfg.env.vector = vector
        cfg.env.n_workers = 2
        return OnPolicyRunner(cfg, tmp_path)

    return build


def test_dead_agents_are_masked_and_states_are_per_agent(toy_runner):
    runner = toy_runner()
    assert runner.spec.state_per_agent and runner.rule.critic.rows == runner.spec.n_agents
    stats = runner.collect()
    batch = runner.buffer.batch
    assert not batch.active.all(), "ToyEnv kills agents: some samples must be inactive"
    dead = ~batch.active
    assert torch.all(batch.avail[dead][:, 1:] == 0) and torch.all(batch.avail[dead][:, 0])  # no-op only
    assert torch.all(batch.actions[dead] == 0), "dead agents may only take no-op"
    assert "train/win_rate" in stats
    metrics = runner.rule.update(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    runner.close()


def test_crashed_env_loses_its_episode_without_a_fabricated_terminal(toy_runner, tmp_path):
    runner = toy_runner(fail="raise", fail_at=9, once_path=str(tmp_path / "once"))
    drops = []
    original = runner.buffer.drop_episode
    runner.buffer.drop_episode = lambda e, start, t: (drops.append((e, start, t)), original(e, start, t))
    stats = runner.collect()
    assert stats["env/restarts"] == 1 and len(drops) == 1
    e, start, t = drops[0]
    b = runner.buffer.batch
    assert not b.terminated[t, e].any(), "a crash must not be stored as a terminal transition"
    assert b.truncated[t, e].all(), "GAE's recursion is cut at the crash"
    assert not b.active[start : t + 1, e].any(), "the lost episode's samples are excluded"
    assert b.starts[t + 1, e] == 1.0 and torch.all(b.h_actor[t + 1, e] == 0), "a fresh episode follows"
    assert all(np.isfinite(v) for v in runner.rule.update(b).values())
    runner.close()


@pytest.mark.parametrize("vector", ["subproc", "hybrid"])
def test_killed_worker_and_raising_env_during_training(toy_runner, tmp_path, vector):
    # hybrid: env 0 (the raising one) runs in this process, the others in the 2 workers
    runner = toy_runner(vector=vector, fail="raise", fail_at=30, once_path=str(tmp_path / "once"))
    runner.collect()
    runner.rule.update(runner.buffer.batch)
    os.kill(runner.envs.worker_pids[0], signal.SIGKILL)
    for _ in range(2):
        stats = runner.collect()
        assert all(np.isfinite(v) for v in runner.rule.update(runner.buffer.batch).values())
    assert stats["env/restarts"] >= 2  # the raising env and the killed worker
    runner.close()


def test_resume_starts_new_episodes_where_envs_cannot_be_pickled(toy_runner, tmp_path):
    runner = toy_runner(picklable=False)
    runner.collect()
    runner.rule.update(runner.buffer.batch)
    runner.save(tmp_path / "ck.pt")
    runner.close()
    from marlopt.checkpoint import load_checkpoint

    payload = load_checkpoint(tmp_path / "ck.pt")
    resumed = toy_runner(picklable=False)
    resumed._load(payload)
    assert resumed.envs.last_restore_reset.all()
    assert torch.all(resumed.carry["starts"] == 1) and torch.all(resumed.carry["h_actor"] == 0)
    resumed.collect()  # the first step after resume is a valid episode start
    assert torch.all(resumed.buffer.batch.starts[0] == 1)
    resumed.close()
