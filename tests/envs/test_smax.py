"""The SMAX wrapper (JaxMARL): specs, masks, rewards, episode ends, seeding, exact resume, and the
batched ``SmaxVectorEnv`` against ``VectorEnv`` of single envs; one short training run via the CLI.

Each SMAX configuration compiles its JAX functions once per process (≈10 s each on a busy 2-core
machine without JAX's persistent cache, ≈2 s with it), so the tests share a few configurations.
"""

from __future__ import annotations

import importlib.util
import pickle
import subprocess
import sys

import numpy as np
import pytest

from marlopt.envs import smax as smax_mod
from marlopt.envs.registry import env_fn, make_env
from marlopt.envs.smax import MAPS, SmaxVectorEnv, make, make_vector, seed_to_key
from marlopt.envs.vector import VectorEnv
from tests.helpers import REPO, make_config, read_metrics, run_cli

HAVE_SMAX = importlib.util.find_spec("jax") is not None and importlib.util.find_spec("jaxmarl") is not None
needs_smax = pytest.mark.skipif(
    not HAVE_SMAX, reason='jax/jaxmarl not installed (pip install "marlopt[smax]")'
)

# map -> (allies, obs_dim, EP state_dim, n_actions): unit_list obs = 13 per other unit + 10 own;
# world state = 12 per unit; actions = 4 moves + stop + one attack per enemy.
SPECS = {
    "5m_vs_6m": (5, 13 * (4 + 6) + 10, 12 * 11, 5 + 6),
    "3s5z_vs_3s6z": (8, 13 * (7 + 9) + 10, 12 * 17, 5 + 9),
    "smacv2_10_units": (10, 13 * (9 + 10) + 10, 12 * 20, 5 + 10),
}
STOP = 4  # SMAX's stop action: the only action of a dead ally


def focus_fire(avail: np.ndarray) -> np.ndarray:
    """Attack the first enemy in range, else walk east (towards the enemy), else stop."""
    actions = np.full(avail.shape[0], STOP)
    for i, row in enumerate(avail):
        attacks = np.flatnonzero(row[5:])
        if attacks.size:
            actions[i] = 5 + attacks[0]
        elif row[1]:
            actions[i] = 1
    return actions


def random_actions(rng: np.random.Generator, avail: np.ndarray) -> np.ndarray:
    """A uniformly random available action per agent (any leading batch shape)."""
    return (rng.random(avail.shape) * avail).argmax(-1)


# ------------------------------------------------------------------ no simulator needed
def test_unknown_map_option_or_state_type_fail_before_importing_jax():
    with pytest.raises(ValueError, match="valid maps: .*5m_vs_6m"):
        make("MMM9")
    with pytest.raises(ValueError, match="valid options"):
        make("3m", max_step=10)  # typo
    with pytest.raises(ValueError, match="state_type"):
        make("3m", state_type="XP")
    with pytest.raises(ValueError, match="n_envs"):
        make_vector("3m", 0)


def test_missing_jax_or_jaxmarl_gives_the_install_line(monkeypatch):
    for blocked in ("jax", "jaxmarl"):
        with monkeypatch.context() as m:
            m.setitem(sys.modules, blocked, None)  # makes `import <blocked>` fail
            m.setattr(smax_mod, "_SMAX_MODULE", None)
            m.setattr(smax_mod, "_CORES", {})
            with pytest.raises(ImportError, match=r'pip install "marlopt\[smax\]"'):
                make("3m")


def test_importing_the_wrapper_imports_no_jax():
    code = "import sys, marlopt.envs.smax; print('jax' in sys.modules, 'jaxmarl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "False False", out.stdout + out.stderr


def test_seed_to_key_keeps_64_bits():
    assert seed_to_key(5).tolist() == [0, 5]
    assert seed_to_key(2**40 + 5).tolist() == [256, 5]  # jax.random.PRNGKey drops the 256 (x64 off)
    assert seed_to_key(-1).tolist() == [2**32 - 1, 2**32 - 1]


# ------------------------------------------------------------------ specs and shapes
@needs_smax
@pytest.mark.parametrize("map_name", sorted(SPECS))
def test_spec_and_shapes(map_name):
    n, obs_dim, state_dim, n_actions = SPECS[map_name]
    env = make_env("smax", map_name, {"continuous": False})
    spec = env.spec
    assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions) == (n, obs_dim, state_dim, n_actions)
    assert spec.n_agents == MAPS[map_name][0]
    assert spec.episode_limit == 100 and spec.has_won and not spec.continuous
    assert not spec.state_per_agent and spec.state_rows == 1
    assert spec.agent_names == tuple(f"ally_{i}" for i in range(n))
    obs, state, avail = env.reset(seed=0)
    assert obs.shape == (n, obs_dim) and obs.dtype == np.float32
    assert state.shape == (1, state_dim) and state.dtype == np.float32
    assert avail.shape == (n, n_actions) and avail.dtype == bool
    assert avail[:, :5].all()  # alive: every move and stop
    if not map_name.startswith("smacv2"):  # SMAC starts: the armies out of range (SMACv2-style
        assert not avail[:, 5:].any()  # surrounded starts may have an enemy in range)
    r = env.step(np.full(n, STOP))
    assert r.obs.shape == obs.shape and r.state.shape == state.shape and r.avail.shape == avail.shape
    assert isinstance(r.reward, float) and r.info["active"].shape == (n,) and r.info["active"].dtype == bool
    assert r.info["won"] is False and not r.terminated and not r.truncated


@needs_smax
def test_fp_state_is_the_world_state_with_the_agent_id():
    n, _, ep_dim, _ = SPECS["5m_vs_6m"]
    ep, fp = make("5m_vs_6m"), make("5m_vs_6m", state_type="FP")
    assert fp.spec.state_per_agent and fp.spec.state_rows == n and fp.spec.state_dim == ep_dim + n
    _, s_ep, _ = ep.reset(seed=3)
    _, s_fp, _ = fp.reset(seed=3)
    assert s_fp.shape == (n, ep_dim + n)
    np.testing.assert_array_equal(s_fp[:, :ep_dim], np.repeat(s_ep, n, axis=0))
    np.testing.assert_array_equal(s_fp[:, ep_dim:], np.eye(n, dtype=np.float32))


@needs_smax
def test_continuous_actions():
    env = make("3m", continuous=True)
    spec = env.spec
    assert spec.continuous and spec.n_actions == 4
    assert spec.action_low == (0.0,) * 4 and spec.action_high == (1.0,) * 4
    _, _, avail = env.reset(seed=0)
    assert avail.shape == (3, 4) and avail.all()
    rng = np.random.default_rng(0)
    for _ in range(5):
        r = env.step(rng.uniform(0, 1, size=(3, 4)))
        assert r.obs.shape == (3, spec.obs_dim) and r.avail.all()
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros(3))


# ------------------------------------------------------------------ semantics
@needs_smax
def test_rewards_are_identical_for_every_ally_in_jaxmarl():
    import jax

    env = make("5m_vs_6m")
    raw = env._core.env  # JaxMARL's HeuristicEnemySMAX
    step = jax.jit(raw.step_env)
    obs, state = raw.reset(jax.random.PRNGKey(0))
    key = jax.random.PRNGKey(1)
    rng = np.random.default_rng(0)
    for _ in range(30):
        avail = raw.get_avail_actions(state)
        acts = {a: int(random_actions(rng, np.asarray(avail[a])[None])[0]) for a in raw.agents}
        key, sub = jax.random.split(key)
        obs, state, rewards, dones, _ = step(sub, state, acts)
        values = {float(v) for v in rewards.values()}
        assert len(values) == 1, rewards
        if bool(dones["__all__"]):
            break


@needs_smax
def test_dead_allies_can_only_stop_and_episode_ends_are_labelled():
    env = make("3m")
    outcomes = set()
    for seed in range(8):
        _, _, avail = env.reset(seed=seed)
        total, t = 0.0, 0
        while True:
            r = env.step(focus_fire(avail))
            t += 1
            total += r.reward
            avail, active = r.avail, r.info["active"]
            stop_only = np.eye(avail.shape[1], dtype=bool)[STOP]
            assert (avail[~active] == stop_only).all()  # dead: the forced no-op
            assert avail[active, STOP].all()
            if r.terminated or r.truncated:
                break
            assert r.info["won"] is False
        alive = np.asarray(env._state.state.unit_alive)
        allies_alive, enemies_alive = alive[:3].any(), alive[3:].any()
        np.testing.assert_array_equal(active, alive[:3])
        assert r.terminated and not r.truncated and t < 100
        assert not (allies_alive and enemies_alive)
        assert r.info["won"] == (allies_alive and not enemies_alive)
        if r.info["won"]:
            assert r.reward >= 1.0 and total == pytest.approx(2.0, abs=1e-5)  # all health + bonus
        outcomes.add(r.info["won"])
        with pytest.raises(RuntimeError, match="after the episode ended"):
            env.step(np.full(3, STOP))
    assert outcomes == {True, False}, "focus fire should both win and lose some of 8 seeds"


@needs_smax
def test_time_limit_is_truncation_not_termination():
    env = make("3m", max_steps=5)
    assert env.spec.episode_limit == 5
    env.reset(seed=0)
    for t in range(1, 6):
        r = env.step(np.full(3, STOP))  # the enemies are ~16 units away: nobody dies in 5 steps
        assert not r.terminated
        assert r.truncated == (t == 5)
    assert r.info["won"] is False and r.info["active"].all()


@needs_smax
def test_invalid_action_ids_are_rejected():
    env = make("3m")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action ids"):
        env.step(np.array([0, 1, 8]))  # 3m has actions 0..7
    with pytest.raises(ValueError, match="shape"):
        env.step(np.array([0, 1]))
    with pytest.raises(ValueError, match="integers"):
        env.step(np.array([0.5, 1.0, 2.0]))


# ------------------------------------------------------------------ seeding and resume
def _rollout(env, avail: np.ndarray, steps: int, seed: int = 0) -> tuple[list[tuple], np.ndarray]:
    """``steps`` random steps from ``avail`` (resetting with ``None`` at episode ends): the records
    and the last avail mask."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        r = env.step(random_actions(rng, avail))
        out.append((r.obs.copy(), r.state.copy(), r.avail.copy(), r.reward, r.terminated, r.truncated,
                    r.info["won"], r.info["active"].copy()))
        avail = r.avail
        if r.terminated or r.truncated:
            obs, state, avail = env.reset()
            out.append((obs.copy(), state.copy(), avail.copy()))
    return out, avail


def _same(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        len(x) == len(y) and all(np.array_equal(u, v) for u, v in zip(x, y)) for x, y in zip(a, b)
    )


@needs_smax
def test_seeded_determinism():
    envs = [make("3m") for _ in range(3)]
    starts = [env.reset(seed=s) for env, s in zip(envs, (7, 7, 8))]
    assert all(np.array_equal(x, y) for x, y in zip(starts[0], starts[1]))
    assert not np.array_equal(starts[0][0], starts[2][0])
    # 60 steps cross episode ends: reset(None) continues each env's key
    runs = [_rollout(env, start[2], 60)[0] for env, start in zip(envs, starts)]
    assert _same(runs[0], runs[1]) and not _same(runs[0], runs[2])
    env = make("3m")
    first = env.reset(seed=7)[0]
    assert not np.array_equal(env.reset()[0], first)  # continued key: a new start
    assert np.array_equal(env.reset(seed=7)[0], first)
    assert not np.array_equal(env.reset(seed=2**32 + 7)[0], first)  # all 64 bits of the seed count


@needs_smax
def test_get_state_round_trip_restores_the_same_future():
    env = make("3m")
    _, avail = _rollout(env, env.reset(seed=11)[2], 23)  # mid-episode (maybe past an episode end)
    blob = env.get_state()
    assert isinstance(blob, bytes)
    clone = pickle.loads(blob)
    assert clone.spec == env.spec and clone.config == env.config
    assert _same(_rollout(env, avail, 50, seed=5)[0], _rollout(clone, avail, 50, seed=5)[0])
    fresh = make("3m")  # an env that was never reset pickles too
    assert pickle.loads(fresh.get_state()).spec == fresh.spec


# ------------------------------------------------------------------ the batched vector env
FIELDS_EXACT = ("obs", "state", "avail", "active", "reward", "terminated", "truncated", "dropped",
                "final_state", "final_active", "won", "episode_return", "episode_length")  # fmt: skip


def _assert_same_step(a, b) -> None:
    for name in FIELDS_EXACT:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.restarts == b.restarts == 0


@needs_smax
def test_batched_vector_env_equals_vector_env_of_single_envs():
    e, seeds = 3, [5, 2**33 + 1, 99]
    ref = VectorEnv([env_fn("smax", "3m", {}) for _ in range(e)], mode="inproc")
    vec = make_vector("3m", e)
    assert isinstance(vec, SmaxVectorEnv) and vec.spec == ref.spec and vec.num_envs == e
    a, b = ref.reset(seeds), vec.reset(seeds)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):
        actions = random_actions(rng, a.avail)
        a, b = ref.step(actions), vec.step(actions)
        _assert_same_step(a, b)
        ended += int((a.terminated | a.truncated).sum())
    assert ended >= 6, "the comparison should cross several auto-resets"
    # Checkpoints are interchangeable: VectorEnv -> SmaxVectorEnv and back, same future.
    state_ref, state_vec = ref.get_state(), vec.get_state()
    other_vec, other_ref = make_vector("3m", e), VectorEnv([env_fn("smax", "3m", {}) for _ in range(e)])
    for x, y, z in zip(other_vec.set_state(state_ref), other_ref.set_state(state_vec), a[:4]):
        np.testing.assert_array_equal(x, z)
        np.testing.assert_array_equal(y, z)
    assert not other_vec.last_restore_reset.any() and not other_ref.last_restore_reset.any()
    for _ in range(40):
        actions = random_actions(rng, a.avail)
        a = ref.step(actions)
        for other in (vec, other_vec, other_ref):
            _assert_same_step(a, other.step(actions))
    for env in (ref, vec, other_vec, other_ref):
        env.close()
    with pytest.raises(RuntimeError, match="closed"):
        vec.step(actions)


@needs_smax
def test_batched_vector_env_outputs_are_zero_copy_views():
    vec = make_vector("3m", 2)
    vec.reset([0, 1])
    step = vec.step(np.full((2, 3), STOP))
    for name in ("obs", "state", "avail", "active", "final_state", "final_active"):
        assert not getattr(step, name).flags.writeable, name  # views of JAX's buffers, no copy
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.full((3, 3), STOP))
    with pytest.raises(ValueError, match="action ids"):
        vec.step(np.full((2, 3), 8))


@needs_smax
def test_batched_truncation_and_final_state():
    vec = make_vector("3m", 2, max_steps=5)
    first = vec.reset([0, 1])
    for t in range(1, 6):
        step = vec.step(np.full((2, 3), STOP))
        assert not step.terminated.any()
        assert step.truncated.tolist() == [t == 5] * 2
    assert step.episode_length.tolist() == [5, 5] and not step.won.any()
    assert not np.array_equal(step.final_state, step.state)  # final: before the auto-reset
    assert not np.array_equal(step.obs, first.obs)  # a new episode, a new draw of the start


@needs_smax
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # runner's from_numpy
def test_the_runner_trains_and_resumes_on_the_batched_vector_env(tmp_path, monkeypatch):
    """``env.vector=batched`` (SMAX's default) makes the runner train and resume on SmaxVectorEnv."""
    from marlopt.runners import on_policy
    from marlopt.train import run_training

    overrides = ["algo=mappo", "env=smax", "map=smacv2_5_units", "env.state_type=EP", "n_envs=3",
                 "rollout_length=20", "eval_episodes=2", "model.hidden_sizes=[32]", "model.rnn_hidden=32"]
    cfg = make_config(*overrides, "total_steps=120", "max_iterations=1")
    cfg.env.map_name = "3m"  # the configuration the tests above compiled already (same process)
    built = []

    assert cfg.env.vector == "batched"

    def batched(env_name, map_name, options, n_envs):
        built.append(make_vector(map_name, n_envs, **dict(options)))
        return built[-1]

    monkeypatch.setattr(on_policy, "make_vector_env", batched)
    run = tmp_path / "run"
    assert run_training(cfg, run) == "max_iterations reached"
    cfg.max_iterations = None
    assert run_training(cfg, run, resume=True) == "finished"  # checkpoint -> SmaxVectorEnv.set_state
    assert len(built) == 2 and all(isinstance(v, SmaxVectorEnv) for v in built)
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "train/return_mean" in r or "actor/entropy" in r][-1] == 120
    assert any("eval/win_rate" in r for r in rows)


# ------------------------------------------------------------------ training through the CLI
@needs_smax
@pytest.mark.slow
def test_short_training_run_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", "algo=mappo", "env=smax", "map=smacv2_10_units", "n_envs=2", "rollout_length=20",
            "total_steps=80", f"hydra.run.dir={run}", "progress=false", "eval_episodes=2", cwd=tmp_path)
    rows = read_metrics(run)
    final = [r for r in rows if "eval/win_rate" in r]
    assert final and final[-1]["step"] == 80
    assert 0.0 <= final[-1]["eval/win_rate"] <= 1.0 and final[-1]["eval/episodes"] == 2
    assert any("train/return_mean" in r for r in rows)
