"""The MAGPO maps of the ``games`` env: CoordSum (App. B) and the §3 sum-to-10 example."""

from __future__ import annotations

import functools
import itertools
import math
import pickle

import numpy as np
import pytest

from marlopt.envs import ProcessVectorEnv, make_env
from marlopt.envs.coordsum import COORDSUM_MAPS, CoordSumEnv
from marlopt.envs.games import MatrixGameEnv
from marlopt.envs.games import MAPS, make
from tests.helpers import read_metrics, run_cli

# map -> the uniform random policy's return the paper reports (EQUATIONS.md, MAGPO section).
PAPER_RANDOM = {"coordsum_3x10_30": 6.1, "coordsum_3x30_50": 2.7, "coordsum_5x20_80": 2.4, "coordsum_8x15_100": 1.9}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _reset_with_targets(env: CoordSumEnv, targets: list[int]) -> None:
    """Reset, then force the episode's first targets (hand-built reward cases)."""
    env.reset(seed=0)
    env._targets[: len(targets)] = targets


def _summing(target: int, a0: int, n: int, n_actions: int) -> np.ndarray:
    """Joint action with agent 0 playing ``a0`` and the sum ``target``."""
    rest, acts = target - a0, [a0]
    for _ in range(n - 1):
        acts.append(min(rest, n_actions - 1))
        rest -= acts[-1]
    assert rest == 0 and min(acts) >= 0, "target not reachable with this a0"
    return np.array(acts)


def _observed_target(obs: np.ndarray) -> int:
    return int(obs[0, :-1].argmax())


def _sum_pmf(n: int, n_actions: int) -> np.ndarray:
    pmf = np.array([1.0])
    for _ in range(n):
        pmf = np.convolve(pmf, np.full(n_actions, 1.0 / n_actions))
    return pmf


def _guess_pmf(n_actions: int, kmax: int) -> np.ndarray:
    """``Q[k, a]``: probability that the mode of ``k`` uniform draws on 0..A-1 (ties to the smallest)
    is ``a``; ``Q[0] = 0`` (no guess). Multinomial counting by exponential generating functions:
    mode ``a`` with count ``m`` means actions below ``a`` have counts <= m-1, above ``a`` <= m."""
    inv = np.array([1.0 / math.factorial(c) for c in range(kmax + 1)])
    deg = np.arange(kmax + 1)

    def power(f: np.ndarray, e: int) -> np.ndarray:
        out = np.zeros(kmax + 1)
        out[0] = 1.0
        for _ in range(e):
            out = np.convolve(out, f)[: kmax + 1]
        return out

    q = np.zeros((kmax + 1, n_actions))
    for m in range(1, kmax + 1):
        head = np.where(deg == m, inv, 0.0)
        below, upto = np.where(deg <= m - 1, inv, 0.0), np.where(deg <= m, inv, 0.0)
        for a in range(n_actions):
            poly = np.convolve(np.convolve(head, power(below, a))[: kmax + 1], power(upto, n_actions - 1 - a))
            q[:, a] += poly[: kmax + 1]
    return q * np.array([math.factorial(k) / float(n_actions) ** k for k in deg])[:, None]


def exact_random_return(n: int, n_actions: int, max_target: int, steps: int = 100, kmax: int = 30) -> float:
    """The exact expected return of the uniform random joint policy.

    At step ``t`` with target ``g`` (prob ``q = 1/(M+1)``), the opponent has seen ``k ~ Bin(t, q)``
    past actions of agent 0 for ``g``, i.i.d. uniform; the step's reward is
    ``2 P(S = g) - Σ_a P(a_0 = a, S = g) Q_k(a)``. (``kmax`` truncates ``k``; the tail is < 1e-20
    for these maps.)"""
    q = 1.0 / (max_target + 1)
    p_sum = _sum_pmf(n, n_actions)[: max_target + 1]
    p_rest = _sum_pmf(n - 1, n_actions)
    # joint[a] = Σ_g P(a_0 = a, S = g) over g in 0..M
    joint = np.array([p_rest[: max(0, max_target + 1 - a)].sum() / n_actions for a in range(n_actions)])
    right = _guess_pmf(n_actions, kmax) @ joint  # [k]
    total = 0.0
    for t in range(steps):
        k = np.arange(min(t, kmax) + 1)
        binom = np.array([math.comb(t, int(j)) * q**j * (1 - q) ** (t - j) for j in k])
        total += q * (2 * p_sum.sum() - binom @ right[k])
    return total


# ---------------------------------------------------------------------------------------------
# Specs, observations, episodes
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("map_name", list(COORDSUM_MAPS))
def test_coordsum_spec(map_name):
    n, n_actions, max_target = (int(x) for x in map_name.removeprefix("coordsum_").replace("x", "_").split("_"))
    assert COORDSUM_MAPS[map_name] == (n, n_actions, max_target)
    spec = make_env("games", map_name).spec
    assert (spec.n_agents, spec.n_actions, spec.episode_limit) == (n, n_actions, 100)
    assert (spec.obs_dim, spec.state_dim, spec.state_rows) == (max_target + 2, max_target + 2, 1)
    assert not spec.continuous and not spec.has_won and not spec.state_per_agent
    assert spec.agent_names == tuple(f"agent_{i}" for i in range(n))


def test_all_maps_are_listed():
    assert set(COORDSUM_MAPS) | {"sum_to_10", "gpvd_matrix", "harl_example1", "pymarl2_matrix", "predator_prey", "predator_prey_p2"} == set(MAPS)


def test_observation_layout_and_state():
    env = make("coordsum_5x20_80")
    obs, state, avail = env.reset(seed=4)
    assert obs.shape == (5, 82) and obs.dtype == np.float32 and state.shape == (1, 82)
    assert avail.shape == (5, 20) and avail.dtype == bool and avail.all()
    for t in range(1, 4):
        target = env.target
        assert (obs == obs[0]).all(), "every agent sees the same observation"
        assert np.array_equal(state[0], obs[0])
        expected = np.zeros(82, dtype=np.float32)
        expected[target] = 1.0
        expected[-1] = (t - 1) / 100
        assert np.array_equal(obs[0], expected)
        step = env.step(np.zeros(5, dtype=np.int64))
        obs, state = step.obs, step.state
        assert step.avail.all() and step.info["active"].tolist() == [True] * 5
        assert obs[0, -1] == pytest.approx(t / 100)


def test_truncates_at_step_100_and_never_terminates():
    env = make("coordsum_3x10_30")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(3, dtype=np.int64))
    env.reset(seed=0)
    for t in range(100):
        r = env.step(np.array([1, 2, 3]))
        assert not r.terminated
        assert r.truncated == (t == 99)
    assert r.obs[0, -1] == 1.0 and r.obs[0, :-1].sum() == 1.0  # a real final observation to bootstrap from
    with pytest.raises(RuntimeError, match="after the episode ended"):
        env.step(np.array([1, 2, 3]))
    env.reset()
    assert not env.step(np.array([1, 2, 3])).truncated


# ---------------------------------------------------------------------------------------------
# Rewards and the opponent
# ---------------------------------------------------------------------------------------------
def test_correct_sum_without_history_is_2_then_a_repeat_is_guessed():
    env = make("coordsum_3x10_30")
    _reset_with_targets(env, [12, 12, 12, 12])
    assert env.guess(12) is None
    assert env.step(np.array([4, 4, 4])).reward == 2.0  # no history: no guess, counts as wrong
    assert env.guess(12) == 4
    assert env.step(np.array([4, 0, 8])).reward == 1.0  # the opponent guesses 4: right
    assert env.step(np.array([5, 5, 2])).reward == 2.0  # guess still 4 (count 2): wrong
    assert env.step(np.array([4, 4, 4])).reward == 1.0  # 4 (count 3) beats 5 (count 1)


def test_a_tie_is_guessed_as_the_smallest_action():
    for a0, expected in [(2, 1.0), (5, 2.0)]:
        env = make("coordsum_3x10_30")
        _reset_with_targets(env, [7, 7, 7])
        env.step(np.array([5, 0, 0]))  # wrong sum; 5 seen first
        env.step(np.array([2, 0, 0]))  # wrong sum; tie 2 vs 5
        assert env.guess(7) == 2
        assert env.step(_summing(7, a0, 3, 10)).reward == expected


def test_a_wrong_sum_pays_0_and_is_still_recorded():
    env = make("coordsum_3x10_30")
    _reset_with_targets(env, [9, 9])
    assert env.step(np.array([3, 3, 4])).reward == 0.0
    assert env.counts[9].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert env.step(np.array([3, 3, 3])).reward == 1.0  # guessed from the wrong-sum step


def test_history_is_per_target_and_cleared_by_reset():
    env = make("coordsum_3x10_30")
    _reset_with_targets(env, [12, 13, 12])
    assert env.step(np.array([4, 4, 4])).reward == 2.0
    assert env.step(np.array([0, 4, 9])).reward == 2.0  # target 13 has no history (no guess, not 0)
    assert env.step(np.array([4, 4, 4])).reward == 1.0  # target 12 remembers agent 0's 4
    _reset_with_targets(env, [12])
    assert not env.counts.any()
    assert env.step(np.array([4, 4, 4])).reward == 2.0  # a new episode forgets


def test_only_agent_0_is_guessed():
    env = make("coordsum_8x15_100")
    _reset_with_targets(env, [20, 20])
    assert env.step(np.array([1, 2, 3, 4, 5, 5, 0, 0])).reward == 2.0
    assert env.step(np.array([6, 2, 3, 4, 5, 0, 0, 0])).reward == 2.0  # others repeat, agent 0 does not
    assert env.counts[20, 1] == 1 and env.counts[20, 6] == 1 and env.counts.sum() == 2


# ---------------------------------------------------------------------------------------------
# Randomness
# ---------------------------------------------------------------------------------------------
def _episode_targets(env: CoordSumEnv, seed: int | None) -> list[int]:
    obs, _, _ = env.reset(seed=seed)
    targets = [_observed_target(obs)]
    n = env.spec.n_agents
    for _ in range(env.spec.episode_limit):
        targets.append(_observed_target(env.step(np.zeros(n, dtype=np.int64)).obs))
    return targets


def test_targets_are_seeded():
    env, other = make("coordsum_3x10_30"), make("coordsum_3x10_30")
    first = _episode_targets(env, 7)
    assert first == _episode_targets(other, 7)
    assert first != _episode_targets(other, 8)
    # reset(None) continues the seeded stream: a new episode, the same for two equally seeded envs
    again = _episode_targets(env, None)
    assert again != first
    _episode_targets(other, 7)
    assert _episode_targets(other, None) == again


def test_targets_are_uniform():
    env = make("coordsum_3x10_30")
    targets = np.concatenate([_episode_targets(env, 3 if i == 0 else None) for i in range(150)])
    counts = np.bincount(targets, minlength=31)
    assert len(counts) == 31 and counts.min() > 0, "targets must cover 0..30 and nothing else"
    expected = len(targets) / 31
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 70, f"chi2 {chi2:.1f} with 30 degrees of freedom: targets are not uniform"


def test_pickled_env_continues_identically():
    env = make("coordsum_3x30_50")
    env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(40):
        env.step(rng.integers(0, 30, size=3))
    clone = pickle.loads(env.get_state())
    for _ in range(60):
        a = rng.integers(0, 30, size=3)
        r1, r2 = env.step(a), clone.step(a)
        assert r1.reward == r2.reward and np.array_equal(r1.obs, r2.obs) and r1.truncated == r2.truncated


# ---------------------------------------------------------------------------------------------
# The uniform random policy: exact expectation, the env's mean and the paper's value
# ---------------------------------------------------------------------------------------------
def test_the_guess_distribution_matches_brute_force():
    q = _guess_pmf(4, 6)
    assert q[0].sum() == 0
    for k in range(1, 7):
        brute = np.zeros(4)
        for seq in itertools.product(range(4), repeat=k):
            brute[np.bincount(seq, minlength=4).argmax()] += 4.0**-k
        np.testing.assert_allclose(q[k], brute, atol=1e-12)


@pytest.mark.parametrize("map_name", list(COORDSUM_MAPS))
def test_random_policy_return_matches_the_exact_value_and_the_paper(map_name):
    n, n_actions, max_target = COORDSUM_MAPS[map_name]
    exact = exact_random_return(n, n_actions, max_target)
    assert exact == pytest.approx(PAPER_RANDOM[map_name], rel=0.05)
    env = make(map_name)
    rng = np.random.default_rng(11)
    returns = []
    for episode in range(400):
        env.reset(seed=100 if episode == 0 else None)
        actions = rng.integers(0, n_actions, size=(100, n))
        returns.append(sum(env.step(a).reward for a in actions))
    mean, stderr = float(np.mean(returns)), float(np.std(returns)) / math.sqrt(len(returns))
    assert abs(mean - exact) < 4 * stderr, f"{map_name}: mean {mean:.3f} ± {stderr:.3f}, exact {exact:.3f}"
    assert mean == pytest.approx(PAPER_RANDOM[map_name], rel=0.15)


# ---------------------------------------------------------------------------------------------
# sum_to_10
# ---------------------------------------------------------------------------------------------
def test_sum_to_10():
    env = make_env("games", "sum_to_10")
    assert isinstance(env, MatrixGameEnv)
    spec = env.spec
    assert (spec.n_agents, spec.n_actions, spec.episode_limit, spec.obs_dim, spec.state_rows) == (3, 11, 1, 1, 1)
    wins = 0
    for acts in itertools.product(range(11), repeat=3):
        obs, state, avail = env.reset(seed=0)
        assert obs.tolist() == [[1.0]] * 3 and state.tolist() == [[1.0]] and avail.shape == (3, 11) and avail.all()
        r = env.step(np.array(acts))
        assert r.reward == (1.0 if sum(acts) == 10 else 0.0)
        assert r.terminated and not r.truncated and r.info["active"].tolist() == [True] * 3
        wins += int(r.reward)
    assert wins == math.comb(12, 2)  # 66 ways to write 10 as an ordered sum of three numbers in 0..10
    env.reset()
    assert env.step(np.array([4, 3, 3])).reward == 1.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([4, 3, 3]))


# ---------------------------------------------------------------------------------------------
# Errors, vector env, the CLI
# ---------------------------------------------------------------------------------------------
def test_errors():
    with pytest.raises(ValueError) as err:
        make("coordsum_3x10_31")
    assert all(m in str(err.value) for m in MAPS)
    with pytest.raises(ValueError, match="map coordsum_3x10_30 has discrete actions only"):
        make("coordsum_3x10_30", continuous=True)
    with pytest.raises(ValueError, match="map sum_to_10 has discrete actions only"):
        make("sum_to_10", continuous=True)
    with pytest.raises(ValueError, match=r"unknown games option\(s\) \['episode_limit'\]; valid options"):
        make("coordsum_3x10_30", episode_limit=5)
    env = make("coordsum_3x10_30")
    env.reset(seed=0)
    for bad in ([0, 0, 10], [0, -1, 0], [0, 0], [0, 0, 0, 0], [0.5, 0, 0]):
        with pytest.raises(ValueError, match=r"coordsum_3x10_30 needs 3 integer actions in 0\.\.9"):
            env.step(np.array(bad))
    assert env.step(np.array([1.0, 2.0, 3.0])).reward in (0.0, 1.0, 2.0)  # integral floats are fine
    env = make("sum_to_10")
    env.reset()
    with pytest.raises(ValueError, match="sum_to_10 needs 3"):
        env.step(np.array([11, 0, 0]))


def test_vectorised_episodes_truncate_and_auto_reset():
    vec = ProcessVectorEnv([functools.partial(make, "coordsum_3x10_30")] * 2)
    first = vec.reset([0, 1])
    assert first.obs.shape == (2, 3, 32) and first.state.shape == (2, 1, 32)
    total = np.zeros(2)
    for t in range(100):
        targets = first.obs[:, 0, :-1].argmax(-1)
        actions = np.stack([_summing(int(g), 0, 3, 10) if g <= 18 else np.zeros(3, int) for g in targets])
        first = out = vec.step(actions)
        total += out.reward
        assert not out.terminated.any() and out.truncated.all() == (t == 99)
    assert out.episode_length.tolist() == [100, 100] and np.allclose(out.episode_return, total)
    assert (out.obs[:, 0, -1] == 0).all() and (out.final_state[:, 0, -1] == 1).all()
    vec.close()


@pytest.mark.slow
def test_cli_trains_on_coordsum(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", "algo=mappo", "env=games", "map=coordsum_3x10_30", "total_steps=800", "n_envs=2",
            "rollout_length=200", "model.data_chunk_length=10", "progress=false", f"hydra.run.dir={run}",
            cwd=tmp_path)
    rows = read_metrics(run)
    assert rows[-1]["step"] == 800 and "eval/return_mean" in rows[-1]
    assert all(r["train/episode_length"] == 100 for r in rows if "train/episode_length" in r)
