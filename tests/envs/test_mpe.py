"""The MPE wrapper over mpe2: specs, padding, seeding, and bit-equality with mpe2's parallel_env."""

from __future__ import annotations

import importlib
import pickle
import sys

import numpy as np
import pytest

from marlopt.envs.mpe import MAPS, make

pytest.importorskip("mpe2")

# map -> (n_agents, obs_dim, state_dim, discrete n_actions, continuous action dims)
SPECS = {
    "simple_spread": (3, 18, 54, 5, 5),
    "simple_reference": (2, 21, 42, 50, 15),
    "simple_speaker_listener": (2, 11, 14, 5, 5),
}


@pytest.fixture(autouse=True)
def _quiet_pettingzoo():
    from pettingzoo.utils.env_logger import EnvLogger

    EnvLogger.suppress_output()  # parallel_env warns on every clipped action
    yield
    EnvLogger.unsuppress_output()


@pytest.mark.parametrize("map_name", sorted(SPECS))
@pytest.mark.parametrize("continuous", [False, True])
def test_spec_and_shapes(map_name, continuous):
    n, obs_dim, state_dim, n_disc, n_cont = SPECS[map_name]
    env = make(map_name, continuous=continuous)
    spec = env.spec
    n_actions = n_cont if continuous else n_disc
    dims = (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions)
    assert dims == (n, obs_dim, state_dim, n_actions)
    assert spec.episode_limit == 25 and spec.continuous == continuous
    assert not spec.state_per_agent and spec.state_rows == 1 and not spec.has_won
    assert len(spec.agent_names) == n
    if continuous:
        assert spec.action_low == (0.0,) * n_actions and spec.action_high == (1.0,) * n_actions
    else:
        assert spec.action_low == () and spec.action_high == ()
    obs, state, avail = env.reset(seed=0)
    assert obs.shape == (n, obs_dim) and obs.dtype == np.float32
    assert state.shape == (1, state_dim) and state.dtype == np.float32
    assert avail.shape == (n, n_actions) and avail.dtype == bool
    acts = np.zeros((n, n_actions), np.float32) if continuous else np.zeros(n, np.int64)
    r = env.step(acts)
    assert r.obs.shape == obs.shape and r.state.shape == state.shape and isinstance(r.reward, float)
    assert r.info["active"].tolist() == [True] * n


def test_spread_n_agents_option():
    env = make("simple_spread", n_agents=4)
    assert (env.spec.n_agents, env.spec.obs_dim, env.spec.state_dim) == (4, 24, 96)


def test_speaker_listener_padding_and_masks():
    for continuous, real in [(False, [3, 5]), (True, [3, 5])]:
        env = make("simple_speaker_listener", continuous=continuous)
        assert env.spec.agent_names == ("speaker_0", "listener_0")
        obs, _, avail = env.reset(seed=1)
        assert avail.tolist() == [[j < d for j in range(5)] for d in real]
        assert not obs[0, 3:].any() and obs[0, :3].any()  # speaker obs (goal colour) padded 3 -> 11
        rng = np.random.default_rng(0)
        for _ in range(5):
            if continuous:
                r = env.step(rng.uniform(0, 1, size=(2, 5)))
            else:
                r = env.step(np.array([rng.integers(3), rng.integers(5)]))
            assert not r.obs[0, 3:].any()
            assert r.avail.tolist() == avail.tolist()
    env = make("simple_speaker_listener")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="speaker_0"):
        env.step(np.array([3, 0]))  # a padded (unavailable) speaker action


def _random_actions(rng, env, avail, dtype=np.float32):
    n = env.spec.n_agents
    if env.spec.continuous:  # beyond the Box on purpose: both sides must clip the same way
        return rng.uniform(-0.3, 1.3, size=(n, env.spec.n_actions)).astype(dtype)
    return np.array([rng.integers(int(avail[i].sum())) for i in range(n)])


@pytest.mark.parametrize("map_name", sorted(MAPS))
@pytest.mark.parametrize("continuous", [False, True])
def test_identical_to_official_parallel_env(map_name, continuous):
    """Guards the use of mpe2 internals: same seed + same actions => identical everything."""
    env = make(map_name, continuous=continuous, max_cycles=12)
    module = importlib.import_module(MAPS[map_name][0])
    par = module.parallel_env(continuous_actions=continuous, max_cycles=12)
    names = env.spec.agent_names
    assert tuple(par.possible_agents) == names
    rng = np.random.default_rng(123)
    for episode, seed in enumerate([7, None, 8, None]):  # None: both continue their RNG
        obs, state, avail = env.reset(seed)
        p_obs, _ = par.reset(seed=seed)
        for i, name in enumerate(names):
            d = len(p_obs[name])
            assert np.array_equal(obs[i, :d], p_obs[name]) and not obs[i, d:].any()
        assert np.array_equal(state[0], par.state())
        for t in range(12):
            acts = _random_actions(rng, env, avail, np.float64 if episode % 2 else np.float32)
            if continuous:
                p_acts = {n: acts[i, : int(avail[i].sum())].copy() for i, n in enumerate(names)}
            else:
                p_acts = {n: int(acts[i]) for i, n in enumerate(names)}
            r = env.step(acts)
            p_obs, p_rew, p_term, p_trunc, _ = par.step(p_acts)
            for i, name in enumerate(names):
                d = len(p_obs[name])
                assert np.array_equal(r.obs[i, :d], p_obs[name]), (episode, t, name)
            assert np.array_equal(r.state[0], np.concatenate([p_obs[n] for n in names]))
            assert r.reward == sum(p_rew[n] for n in names)  # team reward = SUM over agents
            assert r.truncated == all(p_trunc.values()) == (t == 11)
            assert r.terminated == any(p_term.values()) is False


def test_team_reward_is_the_sum_of_agent_rewards():
    env = make("simple_spread", local_ratio=0.3)
    env.reset(seed=5)
    r = env.step(np.array([1, 2, 3]))
    rewards = [env._raw.rewards[n] for n in env.spec.agent_names]
    assert r.reward == sum(rewards) and r.reward != np.mean(rewards)


def test_team_reward_mean_is_the_sum_over_n_agents_with_the_same_episode():
    """``team_reward="mean"`` divides the reward by the number of agents and changes nothing else
    (same seed, same actions: the same observations)."""
    envs = {mode: make("simple_spread", n_agents=4, team_reward=mode) for mode in ("sum", "mean")}
    for env in envs.values():
        env.reset(seed=3)
    for t in range(5):
        acts = np.array([t % 5, 1, 2, 3])
        r_sum, r_mean = (envs[m].step(acts) for m in ("sum", "mean"))
        assert r_mean.reward == pytest.approx(r_sum.reward / 4, rel=1e-12) and r_sum.reward != 0
        assert np.array_equal(r_mean.obs, r_sum.obs)
    with pytest.raises(ValueError, match="team_reward"):
        make("simple_spread", team_reward="max")


def test_seeded_determinism_and_rng_continuation():
    def rollout(seed, episodes=2):
        env = make("simple_spread")
        rng = np.random.default_rng(0)
        out = []
        for ep in range(episodes):
            obs, _, _ = env.reset(seed if ep == 0 else None)
            out.append(obs)
            for _ in range(25):
                r = env.step(rng.integers(5, size=3))
                out.append(r.obs)
        return np.stack(out)

    a, b, c = rollout(3), rollout(3), rollout(4)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[26])  # reset(None) continues the RNG: a new layout


def test_truncation_at_max_cycles_and_no_step_after_end():
    env = make("simple_reference", max_cycles=4)
    assert env.spec.episode_limit == 4
    env.reset(seed=0)
    flags = [env.step(np.array([0, 0])) for _ in range(4)]
    assert [f.truncated for f in flags] == [False, False, False, True]
    assert not any(f.terminated for f in flags)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0, 0]))


def test_continuous_actions_are_clipped_to_the_box():
    a, b = make("simple_spread", continuous=True), make("simple_spread", continuous=True)
    a.reset(seed=2)
    b.reset(seed=2)
    rng = np.random.default_rng(1)
    for _ in range(5):
        acts = rng.uniform(-2, 3, size=(3, 5))
        ra, rb = a.step(acts), b.step(np.clip(acts, 0, 1))
        assert np.array_equal(ra.obs, rb.obs) and ra.reward == rb.reward


def test_option_errors():
    with pytest.raises(ValueError, match="simple_spread"):
        make("simple_reference", n_agents=3)
    with pytest.raises(ValueError, match="local_ratio"):
        make("simple_speaker_listener", local_ratio=0.5)
    with pytest.raises(ValueError, match="valid options"):
        make("simple_spread", N=3)
    with pytest.raises(ValueError, match="simple_speaker_listener"):
        make("simple_tag")


def test_missing_mpe2_says_pip_install(monkeypatch):
    for name in [m for m in sys.modules if m == "mpe2" or m.startswith("mpe2.")] + ["mpe2"]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import mpe2...` fail
    with pytest.raises(ImportError, match="pip install mpe2"):
        make("simple_spread")


@pytest.mark.parametrize("continuous", [False, True])
def test_pickled_mid_episode_resumes_exactly(continuous):
    env = make("simple_speaker_listener", continuous=continuous, max_cycles=6)
    env.reset(seed=11)
    rng = np.random.default_rng(0)
    acts = [_random_actions(rng, env, env._avail) for _ in range(20)]
    for k in range(3):
        env.step(acts[k])
    blob = env.get_state()
    assert blob is not None
    clone = pickle.loads(blob)

    def future(e):
        out = []
        for k in range(3, 20):
            r = e.step(acts[k])
            out.append((r.obs, r.reward, r.truncated))
            if r.truncated:
                out.append((e.reset()[0], 0.0, False))  # RNG continues in both
        return out

    for (o1, r1, t1), (o2, r2, t2) in zip(future(env), future(clone), strict=True):
        assert np.array_equal(o1, o2) and r1 == r2 and t1 == t2
