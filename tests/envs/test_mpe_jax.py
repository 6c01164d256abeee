"""``env=mpe env.backend=jax`` (``marlopt.envs.mpe_jax``): JaxMARL's MPE equals the mpe2 wrapper,
and its batched vector env keeps the ``VectorEnv`` contract.

Equality: the two libraries draw different random worlds, so (as JaxMARL's own
``tests/mpe/test_mpe.py``) the JAX state is set from the mpe2 world after each reset (positions,
velocities, communication, goals); then both step whole episodes with the same random actions
(continuous ones partly out of bounds, to test the clipping) and must agree to 1e-4 in observations,
state, team reward and terminated/truncated, at every step, without re-synchronising.
"""

from __future__ import annotations

import importlib.util
import pickle

import numpy as np
import pytest

from marlopt.config import ConfigError
from marlopt.envs.mpe import MPEEnv
from marlopt.envs.mpe_jax import MPEJaxEnv, MpeJaxVectorEnv, make, make_vector
from marlopt.envs.registry import make_env, make_vector_env
from tests.helpers import make_config, read_metrics, run_cli

# (find_spec, not importorskip: importing jaxmarl's package runs all its envs' imports and prints)
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax") is None or importlib.util.find_spec("jaxmarl") is None,
    reason="needs the smax extra (jax, jaxmarl)",
)

MAPS = ("simple_spread", "simple_reference", "simple_speaker_listener")
EPISODES = 150  # x 25 steps, per map and action type
ATOL = 1e-4


def jax_state_from_mpe2(env: MPEJaxEnv, mpe: MPEEnv, template):
    """The JAX state of ``mpe``'s current world (JaxMARL's ``np_state_to_jax``, for our three maps)."""
    import jax.numpy as jnp

    world, n = mpe._raw.world, mpe.spec.n_agents
    ents = list(world.agents) + list(world.landmarks)
    p_pos = np.array([e.state.p_pos for e in ents], dtype=np.float32)
    p_vel = np.array([e.state.p_vel if e.movable else np.zeros(2) for e in ents], dtype=np.float32)
    c = np.array([a.state.c for a in world.agents], dtype=np.float32).reshape(n, -1)
    fields = {"p_pos": jnp.asarray(p_pos), "p_vel": jnp.asarray(p_vel), "c": jnp.asarray(c),
              "step": jnp.asarray(0, dtype=jnp.int32), "done": jnp.asarray(False)}  # fmt: skip
    name = env.config.map_name
    if name == "simple_speaker_listener":
        fields["goal"] = jnp.asarray(int(world.agents[0].goal_b.name[-1]), dtype=template.goal.dtype)
    elif name == "simple_reference":  # goal[j]: the landmark agent j must reach (set by the other)
        goals = [int(world.agents[1 - j].goal_b.name[-1]) for j in range(2)]
        fields["goal"] = jnp.asarray(goals, dtype=template.goal.dtype)
    return template.replace(**fields)


def random_actions(rng: np.random.Generator, env: MPEEnv) -> np.ndarray:
    sizes = env._act_sizes
    if env.spec.continuous:  # beyond the bounds on purpose: both backends must clip alike
        return rng.uniform(-0.3, 1.3, size=(env.spec.n_agents, env.spec.n_actions)).astype(np.float32)
    return np.array([rng.integers(0, d) for d in sizes], dtype=np.int64)


@pytest.mark.slow
@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
@pytest.mark.parametrize("map_name", MAPS)
def test_jax_backend_equals_mpe2(map_name: str, continuous: bool) -> None:
    import jax

    mpe = MPEEnv(map_name, continuous=continuous)
    env = MPEJaxEnv(map_name, continuous=continuous)
    core = env._core
    assert env.spec == mpe.spec
    env.reset(0)
    template, key = env._state, env._key
    get_obs = jax.jit(core.env.get_obs)
    rng = np.random.default_rng(7)
    worst = 0.0
    for ep in range(EPISODES):
        obs_m, state_m, avail_m = mpe.reset(seed=1000 + ep)
        st = jax_state_from_mpe2(env, mpe, template)
        first = get_obs(st)
        for i, a in enumerate(mpe.spec.agent_names):
            np.testing.assert_allclose(np.asarray(first[a]), obs_m[i, : mpe._obs_dims[i]], atol=ATOL)
        np.testing.assert_array_equal(core.avail, avail_m)
        for t in range(mpe.spec.episode_limit):
            acts = random_actions(rng, mpe)
            m = mpe.step(acts)
            key, st, obs, state, reward, terminated, truncated = core.step(key, st, core.check_actions(acts, core.action_shape))
            where = f"{map_name} continuous={continuous} episode {ep} step {t}"
            np.testing.assert_allclose(np.asarray(obs), m.obs, atol=ATOL, err_msg=where)
            np.testing.assert_allclose(np.asarray(state), m.state, atol=ATOL, err_msg=where)
            assert abs(float(reward) - m.reward) <= ATOL, where
            assert (bool(terminated), bool(truncated)) == (m.terminated, m.truncated), where
            worst = max(worst, float(np.abs(np.asarray(obs) - m.obs).max()))
        assert m.truncated
    mpe.close()
    print(f"{map_name} continuous={continuous}: max |obs diff| {worst:.2e}")


def test_team_reward_mean_on_jax_equals_mpe2() -> None:
    """``team_reward="mean"`` means the same on both backends: from one world state, the JAX step's
    reward is mpe2's mean reward."""
    mpe = MPEEnv("simple_spread", team_reward="mean")
    env = MPEJaxEnv("simple_spread", team_reward="mean")
    core = env._core
    env.reset(0)
    mpe.reset(seed=11)
    key, st = env._key, jax_state_from_mpe2(env, mpe, env._state)
    rng = np.random.default_rng(1)
    for t in range(10):
        acts = random_actions(rng, mpe)
        m = mpe.step(acts)
        key, st, obs, _, reward, _, _ = core.step(key, st, core.check_actions(acts, core.action_shape))
        np.testing.assert_allclose(np.asarray(obs), m.obs, atol=ATOL)
        assert abs(float(reward) - m.reward) <= ATOL and m.reward < 0
    mpe.close()
    with pytest.raises(ValueError, match="team_reward"):
        MPEJaxEnv("simple_spread", team_reward="max")


# ------------------------------------------------------------------ the batched vector env
def _actions(rng: np.random.Generator, env: MPEJaxEnv, n_envs: int) -> np.ndarray:
    sizes = np.asarray(env._core.sizes)
    if env.spec.continuous:
        return rng.uniform(0, 1, size=(n_envs, env.spec.n_agents, env.spec.n_actions)).astype(np.float32)
    return (rng.random((n_envs, env.spec.n_agents)) * sizes).astype(np.int64)


@pytest.mark.parametrize("continuous", [False, True], ids=["discrete", "continuous"])
def test_vector_env_equals_single_envs_and_auto_resets(continuous: bool) -> None:
    """Env i of the batched env = ``MPEJaxEnv`` i with the same seed and actions (to float32 rounding:
    XLA fuses the vmapped step differently), auto-reset continuing the key, ``final_state``/``final_obs``
    before the reset, and episode return = the sum of the vector env's rewards (exactly)."""
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)  # noqa: E731
    E, seeds = 3, [5, 6, 7]
    vec = make_vector("simple_speaker_listener", E, backend="jax", continuous=continuous)
    singles = [MPEJaxEnv("simple_speaker_listener", continuous=continuous) for _ in range(E)]
    first = vec.reset(seeds)
    for i, env in enumerate(singles):
        o, s, a = env.reset(seeds[i])
        np.testing.assert_array_equal(first.obs[i], o)
        np.testing.assert_array_equal(first.state[i], s)
        np.testing.assert_array_equal(first.avail[i], a)
    assert first.active.all() and first.avail[:, 0].sum(-1).tolist() == [3] * E  # speaker: 3 of 5
    rng = np.random.default_rng(0)
    sums = np.zeros(E)
    ends = 0
    for t in range(60):  # 2 episodes and a bit
        acts = _actions(rng, singles[0], E)
        step = vec.step(acts)
        for i, env in enumerate(singles):
            r = env.step(acts[i])
            sums[i] += float(step.reward[i])
            close(step.reward[i], r.reward)
            assert (step.terminated[i], step.truncated[i]) == (r.terminated, r.truncated)
            if r.truncated:
                close(step.final_state[i], r.state)
                close(step.final_obs[i], r.obs)
                assert step.episode_return[i] == np.float32(sums[i]) and step.episode_length[i] == 25
                o, s, _ = env.reset(None)  # continues its key, as the vector env's auto-reset
                sums[i], ends = 0.0, ends + 1
                assert not np.array_equal(o, r.obs)
            else:
                assert step.episode_return[i] == 0 and step.episode_length[i] == 0
                o, s = r.obs, r.state
            close(step.obs[i], o)
            close(step.state[i], s)
        assert step.truncated.tolist() == [(t + 1) % 25 == 0] * E and not step.terminated.any()
        assert not step.dropped.any() and not step.won.any() and step.restarts == 0
    assert ends == 2 * E
    vec.close()


def test_get_state_set_state_continue_exactly() -> None:
    vec = make_vector("simple_speaker_listener", 4, backend="jax")
    vec.reset([1, 2, 3, 4])
    rng = np.random.default_rng(3)
    acts = [_actions(rng, MPEJaxEnv("simple_speaker_listener"), 4) for _ in range(40)]
    for a in acts[:10]:
        vec.step(a)
    snap = pickle.loads(pickle.dumps(vec.get_state()))  # a checkpoint round trip
    after = [vec.step(a) for a in acts[10:]]
    other = make_vector("simple_speaker_listener", 4, backend="jax")
    restored = other.set_state(snap)
    assert not other.last_restore_reset.any()
    np.testing.assert_array_equal(restored.obs, snap["last"][0])
    for a, want in zip(acts[10:], after):
        got = other.step(a)
        for field in ("obs", "state", "reward", "truncated", "final_state", "episode_return", "episode_length"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    # A blob that cannot be restored: that env starts afresh (marked), the others continue.
    snap["envs"][2] = None
    again = other.set_state(snap)
    assert other.last_restore_reset.tolist() == [False, False, True, False]
    step = other.step(acts[10])
    np.testing.assert_array_equal(step.obs[[0, 1, 3]], after[0].obs[[0, 1, 3]])
    assert not np.array_equal(again.obs[2], snap["last"][0][2])
    # The blobs are MPEJaxEnv pickles: a single env resumes mid-episode from one.
    env = pickle.loads(vec.get_state()["envs"][0])
    assert isinstance(env, MPEJaxEnv) and not env._needs_reset


# ------------------------------------------------------------------ wiring and errors
def test_backend_option_picks_the_simulator() -> None:
    assert type(make_env("mpe", "simple_spread", {"backend": "mpe2"})) is MPEEnv
    assert type(make_env("mpe", "simple_spread", {})) is MPEEnv  # configs saved before env.backend
    assert type(make_env("mpe", "simple_spread", {"backend": "jax"})) is MPEJaxEnv
    vec = make_vector_env("mpe", "simple_spread", {"backend": "jax", "continuous": False}, 2)
    assert isinstance(vec, MpeJaxVectorEnv) and vec.spec == MPEEnv("simple_spread").spec
    with pytest.raises(ValueError, match="env.backend=jax"):
        make_vector("simple_spread", 2, backend="mpe2")
    with pytest.raises(ValueError, match="valid"):
        make("simple_spread", backend="torch")
    with pytest.raises(ValueError, match="valid options"):
        make("simple_spread", backend="jax", N=3)  # the mpe2 wrapper's checks and messages


def test_config_backend_jax_means_batched() -> None:
    base = ("algo=mappo", "env=mpe", "map=simple_spread")
    assert make_config(*base).env.backend == "mpe2" and make_config(*base).env.vector == "hybrid"
    cfg = make_config(*base, "env.backend=jax")  # mpe.yaml's vector=hybrid becomes batched
    assert cfg.env.vector == "batched" and cfg.env.maker_options()["backend"] == "jax"
    with pytest.raises(ConfigError, match="env.backend=jax steps all envs in one batched call"):
        make_config(*base, "env.backend=jax", "env.vector=subproc")
    with pytest.raises(ConfigError, match="add env.backend=jax"):
        make_config(*base, "env.vector=batched")
    with pytest.raises(ConfigError, match="env.backend"):
        make_config(*base, "env.backend=gpu")
    with pytest.raises(ConfigError, match="only env=mpe"):
        make_config("algo=mappo", "env=smax", "map=3m", "env.backend=jax")


def test_missing_jaxmarl_says_pip_install(monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jaxmarl" else real(name, *a))
    with pytest.raises(ImportError, match=r'pip install -e "\.\[smax\]"'):
        make("simple_spread", backend="jax")


def test_importing_the_backend_imports_no_jax_torch_or_mpe2() -> None:
    import subprocess
    import sys

    code = ("import sys, marlopt.envs.mpe_jax, marlopt.envs.registry; print(sorted(m for m in "
            "('jax', 'jaxmarl', 'torch', 'mpe2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")
def test_the_runner_trains_and_resumes_on_the_batched_env(tmp_path) -> None:
    """``env=mpe env.backend=jax``: the runner trains on ``MpeJaxVectorEnv`` and resumes from its
    checkpoint (``set_state``) to the same end as an uninterrupted run."""
    from marlopt.train import run_training

    overrides = ["algo=mappo", "env=mpe", "map=simple_spread", "env.backend=jax", "n_envs=2", "rollout_length=25",
                 "eval_episodes=2", "model.hidden_sizes=[16]", "model.rnn_hidden=16", "total_steps=150"]
    whole = tmp_path / "whole"
    assert run_training(make_config(*overrides), whole) == "finished"
    split = tmp_path / "split"
    assert run_training(make_config(*overrides, "max_iterations=1"), split) == "max_iterations reached"
    assert run_training(make_config(*overrides), split, resume=True) == "finished"
    key = lambda r: {k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))}  # noqa: E731
    a = [key(r) for r in read_metrics(whole) if "train/return_mean" in r]
    b = [key(r) for r in read_metrics(split) if "train/return_mean" in r]
    assert a and a[-1] == b[-1]


@pytest.mark.slow
def test_short_training_run_through_the_cli(tmp_path) -> None:
    run = tmp_path / "run"
    proc = run_cli("marlopt.train", "algo=mappo", "env=mpe", "map=simple_spread", "env.backend=jax", "n_envs=4",
                   "rollout_length=25", "total_steps=200", "eval_episodes=2", "progress=false",
                   f"hydra.run.dir={run}", cwd=tmp_path)
    assert "finished at 200 frames" in proc.stdout + proc.stderr
    rows = read_metrics(run)
    assert any("train/return_mean" in r for r in rows)
    final = [r for r in rows if "eval/return_mean" in r]
    assert final and final[-1]["step"] == 200 and final[-1]["eval/return_mean"] < 0
