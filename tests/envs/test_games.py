"""The one-step matrix games: payoffs, termination, errors."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest

from marlopt.envs import ProcessVectorEnv
from marlopt.envs.games import MAPS, PAYOFFS, make, optimal_value

GPVD = [[8, -12, -12], [-12, 6, 0], [-12, 0, 6]]  # rows agent 1, columns agent 0
HARL = {(0, 0): 0, (0, 1): 2, (1, 0): 2, (1, 1): -1}  # r(a_0, a_1)
# PyMARL2 src/envs/matrix_game/one_step_matrix_game.py: reward = payoff_values[actions[0]][actions[1]]
PYMARL2 = [[12, -0.1, -0.1], [-0.1, 0, 0], [-0.1, 0, 0]]


@pytest.mark.parametrize("map_name, n_actions", [("gpvd_matrix", 3), ("pymarl2_matrix", 3), ("harl_example1", 2)])
def test_spec(map_name, n_actions):
    spec = make(map_name).spec
    assert (spec.n_agents, spec.n_actions, spec.episode_limit) == (2, n_actions, 1)
    assert (spec.obs_dim, spec.state_dim, spec.state_rows) == (1, 1, 1)
    assert not spec.continuous and not spec.has_won


def test_gpvd_payoffs():
    env = make("gpvd_matrix")
    assert np.array_equal(PAYOFFS["gpvd_matrix"], GPVD)
    for a0, a1 in itertools.product(range(3), range(3)):
        env.reset(seed=0)
        r = env.step(np.array([a0, a1]))
        assert r.reward == GPVD[a1][a0]
    assert optimal_value("gpvd_matrix") == 8


def test_pymarl2_payoffs():
    env = make("pymarl2_matrix")
    assert np.array_equal(PAYOFFS["pymarl2_matrix"], np.array(PYMARL2, dtype=np.float32))
    for a0, a1 in itertools.product(range(3), range(3)):
        env.reset(seed=0)
        r = env.step(np.array([a0, a1]))
        assert r.reward == np.float32(PYMARL2[a0][a1]) == np.float32(PYMARL2[a1][a0])  # symmetric
        assert r.terminated and not r.truncated
    assert optimal_value("pymarl2_matrix") == 12
    assert "pymarl2_matrix" in MAPS


def test_harl_example1_payoffs():
    env = make("harl_example1")
    for (a0, a1), expected in HARL.items():
        env.reset()
        assert env.step(np.array([a0, a1])).reward == expected
    assert optimal_value("harl_example1") == 2
    # the payoff is read as PAYOFFS[a_1, a_0]
    assert all(PAYOFFS["harl_example1"][a1, a0] == v for (a0, a1), v in HARL.items())


def test_payoff_orientation_rows_are_agent_1():
    # A non-symmetric payoff would expose a transposition: check the indexing on a patched matrix.
    env = make("gpvd_matrix")
    env.payoff = np.arange(9, dtype=np.float32).reshape(3, 3)
    env.reset()
    assert env.step(np.array([2, 0])).reward == 2.0  # row a_1=0, column a_0=2


def test_one_step_episode():
    env = make("gpvd_matrix")
    obs, state, avail = env.reset(seed=3)
    assert obs.shape == (2, 1) and state.shape == (1, 1) and avail.shape == (2, 3) and avail.all()
    r = env.step(np.array([0, 0]))
    assert r.terminated and not r.truncated and r.reward == 8
    assert r.info["active"].tolist() == [True, True]
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 0]))


def test_errors():
    with pytest.raises(ValueError, match="map harl_example1 has discrete actions only"):
        make("harl_example1", continuous=True)
    with pytest.raises(ValueError, match="gpvd_matrix"):
        make("prisoners_dilemma")
    env = make("harl_example1")
    env.reset()
    with pytest.raises(ValueError):
        env.step(np.array([0, 2]))  # out of range
    with pytest.raises(ValueError):
        env.step(np.array([0, 1, 1]))  # three agents


def test_vectorised_every_step_ends_an_episode():
    vec = ProcessVectorEnv([functools.partial(make, "gpvd_matrix")] * 3)
    vec.reset([0, 1, 2])
    out = vec.step(np.array([[0, 0], [1, 1], [0, 1]]))
    assert out.terminated.all() and not out.truncated.any()
    assert out.reward.tolist() == [8, 6, -12]
    assert out.episode_return.tolist() == [8, 6, -12] and out.episode_length.tolist() == [1, 1, 1]
    vec.close()
