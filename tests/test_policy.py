"""``marlopt.load_policy``: a trained policy in a researcher's own loop, and the Policy protocol
that evaluation sees."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlopt.policy import ActorPolicy, Policy, reset_finished
from tests.helpers import make_config, run_cli


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("policy") / "run"
    # a recurrent actor (MAPPO on MPE is an MLP by default, HARL Table 6): the state round trip is tested
    run_cli("marlopt.train", "env=mpe", "map=simple_spread", "model.recurrent=true", "n_envs=2", "rollout_length=20",
            "total_steps=80",
            "eval_episodes=2", "env.vector=inproc", "progress=false", f"hydra.run.dir={run}", cwd=run.parent)
    return run


def test_load_policy_in_three_lines_acts_like_the_trained_actor(trained_run):
    from marlopt import load_policy  # the documented three lines (docs/objectives.md)

    policy = load_policy(trained_run)
    state = policy.initial_state(4)
    obs = np.random.default_rng(0).normal(size=(4, 3, 18)).astype(np.float32)
    actions, state = policy.act(obs, None, state)

    assert isinstance(policy, Policy)
    assert actions.shape == (4, 3) and actions.dtype == np.int64 and ((0 <= actions) & (actions < 5)).all()
    # the same numbers as the checkpoint's actor, greedy: the mode of each agent's distribution
    from marlopt.algos.registry import build_rule
    from marlopt.checkpoint import load_checkpoint

    cfg = make_config("env=mpe", "map=simple_spread", "model.recurrent=true")
    rule = build_rule(_spec(), cfg.algo, cfg.model, torch.device("cpu"))
    rule.load_state_dict(load_checkpoint(trained_run / "checkpoints" / "latest.pt")["rule"])
    expected, _, h = rule.actor.act(torch.from_numpy(obs), None, rule.actor.initial_hidden(4), deterministic=True)
    assert np.array_equal(actions, expected.numpy())
    assert torch.equal(state, h)
    # a stochastic step draws from the distribution (differs from greedy somewhere over many draws)
    draws = [policy.act(obs, None, policy.initial_state(4), greedy=False)[0] for _ in range(20)]
    assert any(not np.array_equal(d, actions) for d in draws)


def _spec():
    from marlopt.envs import make_env

    env = make_env("mpe", "simple_spread", {"continuous": False})
    try:
        return env.spec
    finally:
        env.close()


def test_available_actions_are_respected(trained_run):
    from marlopt import load_policy

    policy = load_policy(trained_run, checkpoint="latest")
    obs = np.zeros((2, 3, 18), dtype=np.float32)
    avail = np.zeros((2, 3, 5), dtype=bool)
    avail[..., 3] = True  # only action 3 is allowed
    for greedy in (True, False):
        actions, _ = policy.act(obs, avail, policy.initial_state(2), greedy=greedy)
        assert (actions == 3).all()


def test_reset_finished_restores_the_initial_state_of_finished_envs_only():
    class Memory:
        def initial_state(self, n):
            return torch.full((n, 2), -1.0)

        def act(self, obs, avail, state, greedy=True):
            return np.zeros(obs.shape[:2], dtype=np.int64), state + 1

    policy = Memory()
    state = torch.arange(6.0).reshape(3, 2)
    out = reset_finished(policy, state, np.array([False, True, False]))
    assert torch.equal(out, torch.tensor([[0.0, 1.0], [-1.0, -1.0], [4.0, 5.0]]))
    assert reset_finished(policy, None, np.array([True])) is None


def test_evaluate_uses_only_the_policy(trained_run, monkeypatch):
    """``marlopt.evaluate`` goes through ``load_policy`` and the Policy protocol: a stand-in policy
    that always takes action 0 is what gets evaluated."""
    from marlopt import evaluate, policy as policy_module

    calls = []

    class StandStill:
        def initial_state(self, n):
            return None

        def act(self, obs, avail, state, greedy=True):
            calls.append(obs.shape)
            return np.zeros(obs.shape[:2], dtype=np.int64), state

    real = policy_module.load_run

    def fake(run_dir, checkpoint="latest", device="cpu"):
        loaded = real(run_dir, checkpoint, device)
        return loaded._replace(policy=StandStill())

    monkeypatch.setattr(policy_module, "load_run", fake)
    result = evaluate.evaluate_run(trained_run, episodes=2)
    assert result["episodes"] == 2 and calls and all(shape[1:] == (3, 18) for shape in calls)
    assert isinstance(ActorPolicy(torch.nn.Linear(1, 1)), Policy)
