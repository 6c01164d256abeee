"""The shared on-policy runner: every algorithm/env/model mode runs; learning tests."""

from __future__ import annotations

import numpy as np
import pytest

from marlopt.cli import choices
from marlopt.envs import ProcessVectorEnv, env_fn
from marlopt.envs.games import PAYOFFS
from marlopt.train import run_training
from tests.helpers import make_config, read_metrics

TWO_ITERATIONS_ON_GAMES = ["env=games", "map=gpvd_matrix", "n_envs=4", "rollout_length=10", "total_steps=80",
                           "eval_episodes=2"]


ON_POLICY = [a for a in choices("algo") if make_config(f"algo={a}").algo.family == "on_policy"]


@pytest.mark.parametrize("algo", ON_POLICY)
def test_every_algorithm_config_composes_and_runs_two_iterations(tmp_path, algo):
    cfg = make_config(f"algo={algo}", *TWO_ITERATIONS_ON_GAMES)
    assert run_training(cfg, tmp_path) == "finished"
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [40, 80, 80]
    assert all(np.isfinite(v) for r in rows for v in r.values())


@pytest.mark.parametrize(
    "overrides",
    [
        ["map=simple_reference"],
        ["map=simple_speaker_listener"],
        ["map=simple_spread", "env.continuous=true"],
        ["map=simple_speaker_listener", "env.continuous=true", "model.sharing=separate"],
        ["map=simple_spread", "model.sharing=separate"],
        ["map=simple_spread", "model.sharing=hybrid", "model.recurrent=false"],
        ["map=simple_spread", "env.options.n_agents=5"],
    ],
    ids=lambda o: " ".join(o),
)
def test_mpe_maps_and_model_modes_train(tmp_path, overrides):
    cfg = make_config("env=mpe", *overrides, "n_envs=2", "rollout_length=30", "total_steps=120",
                      "env.vector=inproc", "eval_episodes=2")
    assert run_training(cfg, tmp_path) == "finished"
    rows = read_metrics(tmp_path)
    assert rows[-1]["eval/length_mean"] == 25
    assert all(np.isfinite(v) for r in rows for v in r.values())


@pytest.mark.parametrize("critic_agent_id", [False, True], ids=["one state row", "per-agent rows"])
def test_batched_critic_pass_equals_a_step_by_step_critic(tmp_path, critic_agent_id):
    """The rule evaluates the critic once per rollout (``estimate_values``); it must store exactly
    what a per-step critic computes: V(s_t), the hidden state before each step (zeroed at episode starts), and
    bootstraps from V(s_{t+1}) or, at a truncation, from V(final state) with the state reached."""
    import torch

    from marlopt.runners.on_policy import OnPolicyRunner

    cfg = make_config("env=mpe", "map=simple_spread", "env.options.max_cycles=7", "n_envs=3", "rollout_length=20",
                      "env.vector=inproc", "model.recurrent=true", f"model.critic_agent_id={critic_agent_id}")
    runner = OnPolicyRunner(cfg, tmp_path)
    steps = []
    original_step = runner.envs.step
    runner.envs.step = lambda a: steps.append(original_step(a)) or steps[-1]
    for _ in range(2):  # the second rollout starts from a carried, non-zero critic state
        steps.clear()
        h = runner.carry["h_critic"].clone()
        runner.collect()
        b = runner.buffer.batch
        critic = runner.rule.critic
        assert b.truncated.any()  # bootstraps from final states are exercised
        for t in range(b.obs.shape[0]):
            h = h * (1.0 - b.starts[t]).unsqueeze(-1)
            torch.testing.assert_close(b.h_critic[t], h, atol=1e-5, rtol=1e-4)
            v, h_next = critic.value(b.state[t], h)
            torch.testing.assert_close(b.values[t], v, atol=1e-5, rtol=1e-4)
            for e in range(b.obs.shape[1]):
                if b.truncated[t, e]:
                    final = torch.from_numpy(steps[t].final_state[e : e + 1])
                    expected = critic.value(final, h_next[e : e + 1])[0][0]
                elif t + 1 < b.obs.shape[0]:
                    expected = critic.value(b.state[t + 1, e : e + 1], h_next[e : e + 1] * (1 - b.starts[t + 1, e]))[0][0]
                else:
                    expected = critic.value(runner.carry["state"][e : e + 1], runner.carry["h_critic"][e : e + 1])[0][0]
                torch.testing.assert_close(b.bootstrap_values[t, e], expected, atol=1e-5, rtol=1e-4)
            h = h_next
        torch.testing.assert_close(runner.carry["h_critic"], h * (1.0 - runner.carry["starts"]).unsqueeze(-1))
        runner.rule.update(b)
    runner.close()


@pytest.mark.parametrize("map_name", ["simple_spread", "simple_speaker_listener"])
def test_rollout_stores_what_the_envs_returned_and_the_actor_chose(tmp_path, map_name):
    """Step by step against the env outputs and the actor's calls: obs/avail/active/state at t,
    the chosen actions and log-probabilities, rewards and episode ends, the episode-start flags
    and the recurrent state zeroed after an episode ends; the env state is passed to the acting
    network (``env_state``). The actor gets ``avail=None`` exactly
    when every action is available (spread), the real mask otherwise (the speaker's padding)."""
    import torch

    from marlopt.runners.on_policy import OnPolicyRunner

    cfg = make_config("env=mpe", f"map={map_name}", "env.options.max_cycles=6", "n_envs=3", "rollout_length=14", "model.data_chunk_length=7",
                      "env.vector=inproc", "model.recurrent=true")
    runner = OnPolicyRunner(cfg, tmp_path)
    steps, calls = [], []
    original_step, original_act = runner.envs.step, runner.actor.act
    runner.envs.step = lambda a: steps.append(original_step(a)) or steps[-1]

    def act(obs, avail, h, env_state):
        out = original_act(obs, avail, h, env_state=env_state)
        calls.append((obs.clone(), None if avail is None else avail.clone(), h.clone(), env_state.clone(), *out))
        return out

    runner.actor.act = act
    for _ in range(2):  # the second rollout starts from the carried inputs
        first = {k: runner.carry[k].clone() for k in ("obs", "state", "avail", "active", "starts", "h_actor")}
        steps.clear(), calls.clear()
        runner.collect()
        b = runner.buffer.batch
        for t, (step, (obs, avail, h, env_state, actions, logp, h_out)) in enumerate(zip(steps, calls)):
            prev = first if t == 0 else {"obs": torch.from_numpy(steps[t - 1].obs),
                                         "state": torch.from_numpy(steps[t - 1].state),
                                         "avail": torch.from_numpy(steps[t - 1].avail),
                                         "active": torch.from_numpy(steps[t - 1].active)}
            for key in ("obs", "state", "avail", "active"):
                assert torch.equal(getattr(b, key)[t], prev[key]), (key, t)
            assert torch.equal(obs, b.obs[t]) and torch.equal(h, b.h_actor[t])
            assert torch.equal(env_state, b.state[t])  # a centralised rollout actor (MAGPO's guider) reads it
            if bool(b.avail[t].all()):
                assert avail is None
            else:
                assert torch.equal(avail, b.avail[t])
            assert torch.equal(b.actions[t], actions) and torch.equal(b.logp[t], logp)
            assert torch.equal(b.rewards[t, :, 0], torch.from_numpy(step.reward))
            assert torch.equal(b.terminated[t, :, 0], torch.from_numpy(step.terminated))
            assert torch.equal(b.truncated[t, :, 0], torch.from_numpy(step.truncated))
            done = torch.from_numpy(step.terminated | step.truncated | step.dropped)
            nxt_starts = runner.carry["starts"] if t + 1 == len(steps) else b.starts[t + 1]
            nxt_h = runner.carry["h_actor"] if t + 1 == len(steps) else b.h_actor[t + 1]
            assert torch.equal(nxt_starts[:, 0], done.float())
            assert torch.equal(nxt_h, h_out * (~done).float().view(-1, 1, 1))
        assert torch.equal(b.starts[0], first["starts"])
        assert b.truncated.sum() == 2 * 3  # episodes of 6 steps end at t = 5 and 11 in every env
        assert (calls[0][1] is None) == (map_name == "simple_spread")
        runner.rule.update(b)
    runner.close()


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mappo_settles_on_an_equilibrium_of_the_gpvd_matrix_game(tmp_path, seed):
    """The greedy joint action of MAPPO ends on a pure equilibrium: payoff 8 (optimal) or 6.

    Payoffs (rows agent 1, columns agent 0): [[8,-12,-12],[-12,6,0],[-12,0,6]]. A uniform policy
    scores -4/9·... ≈ -2.9 on average; settling on 6 or 8 needs both agents to coordinate.
    """
    cfg = make_config("env=games", "map=gpvd_matrix", "total_steps=4000", f"seed={seed}")
    run_training(cfg, tmp_path)
    final = read_metrics(tmp_path)[-1]["eval/return_mean"]
    equilibria = {float(PAYOFFS["gpvd_matrix"][b][a]) for a, b in [(0, 0), (1, 1), (2, 2)]}
    assert equilibria == {8.0, 6.0}
    assert final in equilibria, f"greedy joint action pays {final}, not an equilibrium"


def random_policy_return(episodes: int = 64) -> float:
    envs = ProcessVectorEnv([env_fn("mpe", "simple_spread", {"n_agents": 3, "max_cycles": 25})] * 8)
    rng = np.random.default_rng(123)
    envs.reset(list(range(8)))
    returns: list[float] = []
    while len(returns) < episodes:
        step = envs.step(rng.integers(0, 5, size=(8, 3)))
        returns += [float(r) for r in step.episode_return[step.truncated]]
    envs.close()
    return float(np.mean(returns[:episodes]))


@pytest.mark.slow
def test_mappo_clearly_improves_on_simple_spread(tmp_path):
    """48k frames of default MAPPO beat a uniformly random policy by at least 10 team-return units.

    A random policy scores about -80 (sum of the 3 agents' rewards over 25 steps); its mean over 64
    episodes has a standard error near 1.5, so +10 is far outside noise, and it takes agents that
    actually move towards the landmarks (the untrained policy is close to uniform).
    """
    baseline = random_policy_return()
    cfg = make_config("total_steps=48000", "seed=0")
    run_training(cfg, tmp_path)
    rows = read_metrics(tmp_path)
    final = rows[-1]["eval/return_mean"]
    assert final >= baseline + 10, f"greedy return {final:.1f} vs random {baseline:.1f}"
    first_train, last_train = rows[0]["train/return_mean"], rows[-2]["train/return_mean"]
    assert last_train >= first_train + 8, f"training return {first_train:.1f} -> {last_train:.1f}"


def test_env_outputs_become_tensors_without_a_copy_unless_read_only():
    import warnings

    import torch

    from marlopt.runners.common import fresh_tensor

    fresh = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert fresh_tensor(fresh).data_ptr() == fresh.ctypes.data  # vector envs return new arrays
    frozen = np.arange(6, dtype=np.float32).reshape(2, 3)
    frozen.setflags(write=False)  # e.g. a view of a JAX array (SMAX)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        t = fresh_tensor(frozen)
    assert t.data_ptr() != frozen.ctypes.data and torch.equal(t, torch.arange(6.0).view(2, 3))
