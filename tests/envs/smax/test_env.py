"""The SMAX wrapper (JaxMARL), one env: specs, masks, rewards, episode ends, seeding, exact resume.

Each SMAX configuration compiles its JAX functions once per process (≈10 s each on a busy 2-core
machine without JAX's persistent cache, ≈2 s with it), so the tests share a few configurations.
"""

from __future__ import annotations

import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest

from marlopt.envs.registry import make_env
from marlopt.envs.smax import MAPS, make, make_vector, seed_to_key
from marlopt.envs.smax import core as smax_core
from marlopt.envs.smax import loading as smax_loading
from tests.envs.smax.helpers import SPECS, STOP, focus_fire, needs_smax, random_actions
from tests.helpers import REPO


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
            m.setattr(smax_loading, "_SMAX_MODULE", None)
            m.setattr(smax_core, "_CORES", {})
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
    starts = [env.reset(seed=s) for env, s in zip(envs, (7, 7, 8))]  # (obs, state, avail) each
    assert all(np.array_equal(x, y) for x, y in zip(starts[0], starts[1]))
    (obs_7, _, _), _, (obs_8, _, _) = starts
    assert not np.array_equal(obs_7, obs_8)
    # 60 steps cross episode ends: reset(None) continues each env's key
    runs = [_rollout(env, avail, 60)[0] for env, (_, _, avail) in zip(envs, starts)]
    assert _same(runs[0], runs[1]) and not _same(runs[0], runs[2])
    env = make("3m")

    def reset_obs(seed=None):
        obs, _, _ = env.reset(seed=seed)
        return obs

    first = reset_obs(seed=7)
    assert not np.array_equal(reset_obs(), first)  # continued key: a new start
    assert np.array_equal(reset_obs(seed=7), first)
    assert not np.array_equal(reset_obs(seed=2**32 + 7), first)  # all 64 bits of the seed count


@needs_smax
def test_get_state_round_trip_restores_the_same_future():
    env = make("3m")
    _, _, avail = env.reset(seed=11)
    _, avail = _rollout(env, avail, 23)  # mid-episode (maybe past an episode end)
    blob = env.get_state()
    assert isinstance(blob, bytes)
    clone = pickle.loads(blob)
    assert clone.spec == env.spec and clone.config == env.config
    assert _same(_rollout(env, avail, 50, seed=5)[0], _rollout(clone, avail, 50, seed=5)[0])
    fresh = make("3m")  # an env that was never reset pickles too
    assert pickle.loads(fresh.get_state()).spec == fresh.spec



def _pickled_globals(blob: bytes) -> set[str]:
    """The ``module.name`` of every class or function a pickle refers to."""
    strings, found = [], set()
    for op, arg, _ in pickletools.genops(blob):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "STACK_GLOBAL":
            found.add(".".join(strings[-2:]))
        elif op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
    return found


@needs_smax
def test_pickles_name_the_package_so_old_checkpoints_load():
    """Checkpoints hold pickled SMAX envs: they name ``marlopt.envs.smax.SMAXEnv`` (and the batched
    env's blobs ``marlopt.envs.smax._unpickle_env``), the path of the single-module wrapper that
    wrote the first checkpoints, never a module inside the package."""
    env = make("3m")
    env.reset(seed=1)
    vec = make_vector("3m", 2)
    vec.reset([1, 2])
    single, batched = env.get_state(), vec.get_state()["envs"][0]
    assert "marlopt.envs.smax.SMAXEnv" in _pickled_globals(single)
    assert "marlopt.envs.smax._unpickle_env" in _pickled_globals(batched)
    for blob in (single, batched):
        assert not [g for g in _pickled_globals(blob) if g.startswith("marlopt.envs.smax.")
                    and g.count(".") > 3], _pickled_globals(blob)
        assert pickle.loads(blob).config == env.config
    vec.close()
