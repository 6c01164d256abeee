"""``env=smac``: the SMAC wrapper over ``smac.env.StarCraft2Env``.

Where the real ``smac`` package is not installed these tests run against the stand-in in
``tests/standins/smac`` — it stands in for StarCraft II, which cannot run here (same constructor,
methods, observation/state/action layouts; a small battle simulator; fault injection). Where the
real package and StarCraft II are installed the same tests run against them (marked ``sc2``); the
tests that drive the stand-in's knobs (outcomes, injected crashes) are then skipped.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf
import pytest

from marlopt.cli import choices, compose, map_envs
from marlopt.config import to_objects
from marlopt.envs import ProcessVectorEnv, env_fn, make_env
from marlopt.envs import smac as smac_module
from marlopt.envs import smacv2 as smacv2_module
from marlopt.envs.sc2 import SC2CrashError, SC2UnavailableError, fp_state_dim, sc2_popen
from tests.standins.backend import (
    activate,
    backend,
    forget_modules,
    greedy_actions,
    pid_alive,
    random_actions,
)

BACKEND = backend("smac")
# Backend tests are marked sc2 where they run against StarCraft II (see the end of this module);
# the config tests never need the game.
standin_only = pytest.mark.skipif(BACKEND == "real", reason="drives the StarCraft II stand-in's knobs")


@pytest.fixture
def sc2(monkeypatch, tmp_path):
    which = activate("smac", monkeypatch, tmp_path)
    yield which
    forget_modules()


def _close(*envs):
    for env in envs:
        env.close()


# ---------------------------------------------------------------------------------------------
# spec and shapes
# ---------------------------------------------------------------------------------------------
# map: (n_agents, obs, EP state, n_actions, limit, FP state)
# FP = (N-1)*(5+1+shield+types+2+A) + M*(5+1+shield_e+types+2) + 4 + (4+1+shield+types+2+A) + N
SHAPES = {
    "MMM2": (10, 176, 322, 18, 180, 9 * 29 + 12 * 11 + 4 + 28 + 10),
    "5m_vs_6m": (5, 55, 98, 12, 70, 4 * 20 + 6 * 8 + 4 + 19 + 5),
    "3s5z": (8, 128, 216, 14, 150, 7 * 25 + 8 * 11 + 4 + 24 + 8),
}


@pytest.mark.parametrize("map_name", list(SHAPES))
@pytest.mark.parametrize("state_type", ["EP", "FP"])
def test_spec_and_shapes_per_map_and_state_type(sc2, map_name, state_type):
    n, obs_dim, ep_dim, n_actions, limit, fp_dim = SHAPES[map_name]
    env = make_env("smac", map_name, {"continuous": False, "state_type": state_type})
    try:
        spec = env.spec
        assert (spec.n_agents, spec.obs_dim, spec.n_actions, spec.episode_limit) == (n, obs_dim, n_actions, limit)
        assert spec.has_won and not spec.continuous
        if state_type == "EP":
            assert not spec.state_per_agent and spec.state_rows == 1 and spec.state_dim == ep_dim
        else:
            assert spec.state_per_agent and spec.state_rows == n and spec.state_dim == fp_dim
            assert fp_state_dim(env._sc) == fp_dim
        obs, state, avail = env.reset(seed=1)
        assert obs.shape == (n, obs_dim) and obs.dtype == np.float32
        assert state.shape == (spec.state_rows, spec.state_dim) and state.dtype == np.float32
        assert avail.shape == (n, n_actions) and avail.dtype == bool
        assert not avail[:, 0].any() and avail[:, 1].all(), "alive agents: no no-op, stop always"
        if state_type == "FP":
            ids = state[:, -n:]
            np.testing.assert_array_equal(ids, np.eye(n, dtype=np.float32))  # one-hot agent id
            assert not np.allclose(state[0], state[1]), "FP rows are agent-specific"
        assert env.get_state() is None, "SC2 cannot be pickled: resume resets these envs"
    finally:
        env.close()


def test_options_and_errors(sc2):
    with pytest.raises(ValueError, match="valid maps"):
        make_env("smac", "4m")
    with pytest.raises(ValueError, match="discrete actions only"):
        make_env("smac", "3m", {"continuous": True})
    with pytest.raises(ValueError, match="state_type"):
        make_env("smac", "3m", {"state_type": "XP"})
    with pytest.raises(ValueError, match="invalid smac option"):
        make_env("smac", "3m", {"difficulti": "7"})
    with pytest.raises(ValueError, match="set by marlopt"):
        make_env("smac", "3m", {"continuing_episode": False})
    env = make_env("smac", "3m", {"difficulty": "3", "stacked_frames": 3, "state_type": "EP"})
    try:
        assert env._sc.difficulty == "3" and env._sc.continuing_episode is True
        assert env.spec.obs_dim == 3 * 30 and env.spec.state_dim == 3 * 48
        obs, state, _ = env.reset(0)
        assert not obs[:, :60].any() and obs[:, 60:].any(), "older frames start as zeros"
        step = env.step(greedy_actions(env._avail))
        np.testing.assert_array_equal(step.obs[:, 30:60], obs[:, 60:])  # the frames shift
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# step semantics: won, truncation, death
# ---------------------------------------------------------------------------------------------
def test_episode_invariants_random_policy(sc2):
    env = make_env("smac", "3m", {"state_type": "FP"})
    rng = np.random.default_rng(0)
    try:
        _, _, avail = env.reset(seed=3)
        episodes = 0
        t = 0
        while episodes < 3:
            step = env.step(random_actions(avail, rng))
            t += 1
            avail = step.avail
            alive = step.info["active"]
            assert alive.dtype == bool and alive.shape == (3,)
            assert not (step.terminated and step.truncated)
            if step.terminated or step.truncated:
                assert isinstance(step.info["won"], bool)
                assert not (step.truncated and step.info["won"])
                assert t <= env.spec.episode_limit
                if step.truncated:
                    assert t == env.spec.episode_limit
                episodes += 1
                t = 0
                _, _, avail = env.reset()
            else:
                assert "won" not in step.info
    finally:
        env.close()


@standin_only
def test_time_limit_is_truncation_not_termination(sc2):
    env = make_env("smac", "3m")
    try:
        env.reset(seed=0)
        for t in range(1, 61):
            step = env.step(np.ones(3, dtype=np.int64))  # everyone stops: nobody fights
            if t < 60:
                assert not step.terminated and not step.truncated
        assert step.truncated and not step.terminated and step.info["won"] is False
        assert env._sc.timeouts == 1
        with pytest.raises(RuntimeError, match="before reset"):
            env.step(np.ones(3, dtype=np.int64))
    finally:
        env.close()


@standin_only
def test_win_is_terminated_with_won(sc2):
    env = make_env("smac", "3m", {"difficulty": "1"})
    try:
        env.reset(seed=0)
        for _ in range(60):
            step = env.step(greedy_actions(env._avail))
            if step.terminated or step.truncated:
                break
        assert step.terminated and not step.truncated and step.info["won"] is True
        assert step.reward > 0
    finally:
        env.close()


@standin_only
def test_dead_agents_only_no_op_zero_fp_rows_inactive(sc2):
    env = make_env("smac", "5m_vs_6m", {"state_type": "FP"})
    try:
        _, state, avail = env.reset(seed=0)
        saw_dead = False
        for _ in range(70):
            raw_avail = np.array(env._sc.get_avail_actions(), dtype=bool)
            step = env.step(greedy_actions(avail))
            avail, state, alive = step.avail, step.state, step.info["active"]
            dead = ~alive
            if dead.any() and not (step.terminated or step.truncated):
                saw_dead = True
                raw_avail = np.array(env._sc.get_avail_actions(), dtype=bool)
                assert raw_avail[dead, 0].all() and not raw_avail[dead, 1:].any(), "SMAC: dead -> no-op only"
                assert avail[dead, 0].all() and not avail[dead, 1:].any()
                assert not avail[alive, 0].any()
                n = len(alive)  # FP rows of dead agents are zero but their one-hot id (the last N columns)
                assert not state[dead][:, :-n].any(), "FP rows of dead agents are zero but the id"
                assert np.array_equal(state[dead][:, -n:], np.eye(n, dtype=np.float32)[dead])
                assert state[alive].any(axis=1).all()
                assert not step.obs[dead].any(), "SMAC observations of dead agents are zero"
            if step.terminated or step.truncated:
                break
        assert saw_dead
        assert step.terminated and step.info["won"] is False and not step.info["active"].all()
    finally:
        env.close()


@standin_only
def test_dead_agent_avail_is_enforced_if_the_env_does_not(sc2, monkeypatch):
    env = make_env("smac", "5m_vs_6m")
    try:
        env.reset(seed=0)
        sc = env._sc
        sc.agents[2].health = 0  # agent 2 dies
        sc.death_tracker_ally[2] = 1
        monkeypatch.setattr(sc, "get_avail_agent_actions", lambda i: [1] * sc.n_actions)  # a buggy env
        obs, state, avail, alive = env._observe()
        assert not alive[2] and alive[[0, 1, 3, 4]].all()
        assert avail[2, 0] and not avail[2, 1:].any()
    finally:
        env.close()


def test_unavailable_action_is_refused_with_smacs_message(sc2):
    env = make_env("smac", "3m")
    try:
        _, _, avail = env.reset(seed=0)
        actions = greedy_actions(avail)
        actions[1] = 0  # no-op while alive
        with pytest.raises(ValueError, match="Agent 1 cannot perform action 0"):
            env.step(actions)
        with pytest.raises(AssertionError, match="Agent 0 cannot perform action 0"):
            env._raw.step([0, 1, 1])  # SMAC's own assertion (what the wrapper pre-empts)
    finally:
        env.close()


# ---------------------------------------------------------------------------------------------
# install errors
# ---------------------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text, text
    return text


def test_missing_smac_package_is_one_clear_line(sc2, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "smac", None)  # hide smac (real or stand-in)
    monkeypatch.setitem(__import__("sys").modules, "smac.env", None)
    with pytest.raises(SC2UnavailableError) as err:
        make_env("smac", "3m")
    line = _one_line(err.value)
    assert 'pip install "smac @ git+https://github.com/oxwhirl/smac.git"' in line
    assert "SMAC3" in line and "bash scripts/install_sc2.sh" in line
    assert isinstance(err.value, ImportError)


def test_missing_starcraft_is_one_clear_line(sc2, monkeypatch, tmp_path):
    monkeypatch.setenv("SC2PATH", str(tmp_path / "nowhere"))
    with pytest.raises(SC2UnavailableError) as err:
        make_env("smac", "3m")
    line = _one_line(err.value)
    assert "StarCraft II not found" in line and "nowhere" in line
    assert "bash scripts/install_sc2.sh" in line and "SC2PATH" in line
    (tmp_path / "sc2" / "Versions" / "Base1").mkdir(parents=True)
    (tmp_path / "sc2" / "Versions" / "Base1" / "SC2_x64").write_text("")
    monkeypatch.setenv("SC2PATH", str(tmp_path / "sc2"))
    with pytest.raises(SC2UnavailableError, match=r"3m\.SC2Map is missing"):
        make_env("smac", "3m")


# ---------------------------------------------------------------------------------------------
# crashes, processes, replays
# ---------------------------------------------------------------------------------------------
@standin_only
@pytest.mark.parametrize("kind", ["raise", "swallow"])
def test_game_crash_propagates_out_of_step(sc2, monkeypatch, kind):
    monkeypatch.setenv("MARLOPT_STANDIN_CRASH_AT_STEP", "3")
    monkeypatch.setenv("MARLOPT_STANDIN_CRASH_KIND", kind)
    env = make_env("smac", "3m")
    try:
        env.reset(seed=0)
        env.step(np.ones(3, dtype=np.int64))
        env.step(np.ones(3, dtype=np.int64))
        expected = SC2CrashError if kind == "swallow" else Exception
        with pytest.raises(expected) as err:
            env.step(np.ones(3, dtype=np.int64))  # SMAC's (0, True, {}) must not become an episode end
        if kind == "raise":
            assert type(err.value).__name__ == "RequestError"
        assert env._broken
    finally:
        env.close()


@standin_only
def test_vector_env_drops_the_crashed_episode_and_fabricates_no_terminal(sc2, monkeypatch, tmp_path):
    monkeypatch.setenv("MARLOPT_STANDIN_CRASH_AT_STEP", "4")
    monkeypatch.setenv("MARLOPT_STANDIN_CRASH_KIND", "swallow")
    monkeypatch.setenv("MARLOPT_STANDIN_FAULT_ONCE", str(tmp_path))
    vec = ProcessVectorEnv([env_fn("smac", "3m", {"state_type": "FP"})] * 2, mode="inproc")
    try:
        vec.reset([1, 2])
        stop = np.ones((2, 3), dtype=np.int64)
        for t in range(1, 7):
            out = vec.step(stop)
            if t < 4:
                assert not out.dropped.any()
            if t == 4:  # env 0 reaches its 4th step first and crashes (once)
                assert out.dropped.tolist() == [True, False]
                assert not out.terminated[0] and not out.truncated[0] and out.reward[0] == 0
                assert out.active[0].all() and out.state[0].any()
                assert out.restarts == 1
        assert vec.restarts == 1 and not out.dropped.any()
    finally:
        vec.close()


@standin_only
def test_close_kills_the_game_and_workers_killed_leave_no_game(sc2, monkeypatch, tmp_path):
    env = make_env("smac", "3m")
    env.reset(seed=0)
    pid = sc2_popen(env._sc).pid
    assert pid_alive(pid)
    env._broken = True  # as after a hang: close must not wait for the game's answer
    env.close()
    assert not pid_alive(pid)
    env.close()  # idempotent

    pids = tmp_path / "pids"
    pids.mkdir()
    once = tmp_path / "once"
    once.mkdir()
    monkeypatch.setenv("MARLOPT_STANDIN_PID_DIR", str(pids))
    monkeypatch.setenv("MARLOPT_STANDIN_FAULT_ONCE", str(once))
    monkeypatch.setenv("MARLOPT_STANDIN_EXIT_AT_STEP", "3")  # one worker dies (SIGKILL-like exit)
    monkeypatch.setenv("MARLOPT_STANDIN_HANG_AT_STEP", "6")  # later one hangs: killed at the timeout
    vec = ProcessVectorEnv([env_fn("smac", "3m")] * 2, mode="subproc", n_workers=2, step_timeout=3.0)
    try:
        vec.reset([1, 2])
        stop = np.ones((2, 3), dtype=np.int64)
        dropped = []
        for _ in range(8):
            out = vec.step(stop)
            dropped.append(out.dropped.copy())
            assert not (out.terminated | out.truncated).any()
        assert vec.restarts == 2
        assert sum(d.sum() for d in dropped) == 2
    finally:
        vec.close()
    deadline = time.monotonic() + 10
    launched = [int(p.name) for p in pids.iterdir()]
    assert len(launched) == 4  # 2 games, then 1 relaunch after each lost worker
    while any(pid_alive(p) for p in launched) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pid_alive(p) for p in launched), "a game outlived its env worker"


def test_reset_before_an_episode_ends_keeps_one_game(sc2):
    """SMAC relaunches StarCraft II on every reset until an episode has ended (leaking the old game
    and counting the enemies' health into the reward scale again); the wrapper prevents both."""
    env = make_env("smac", "3m")
    try:
        env.reset(seed=0)
        pid = sc2_popen(env._sc).pid
        max_reward = env._sc.max_reward
        env.step(np.ones(3, dtype=np.int64))
        obs, _, _ = env.reset()
        env.reset()
        assert sc2_popen(env._sc).pid == pid and pid_alive(pid)
        assert env._sc.max_reward == max_reward
        assert obs.shape == (3, 30)
    finally:
        env.close()
    assert not pid_alive(pid)


def test_save_replay_option(sc2, tmp_path):
    replays = tmp_path / "replays"
    env = make_env("smac", "3m", {"save_replay": True, "replay_dir": str(replays), "replay_prefix": "eval"})
    rng = np.random.default_rng(1)
    try:
        _, _, avail = env.reset(seed=0)
        while True:
            step = env.step(random_actions(avail, rng))
            avail = step.avail
            if step.terminated or step.truncated:
                break
        files = list(replays.glob("eval*.SC2Replay"))
        assert len(files) == 1
        assert env.save_replay() is not None
    finally:
        env.close()


@standin_only
def test_same_seed_same_episode(sc2):
    a, b, c = (make_env("smac", "MMM2", {"state_type": "FP"}) for _ in range(3))
    try:
        oa, sa, _ = a.reset(seed=5)
        ob, sb, _ = b.reset(seed=5)
        oc, _, _ = c.reset(seed=6)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(sa, sb)
        assert not np.array_equal(oa, oc)
    finally:
        _close(a, b, c)


# ---------------------------------------------------------------------------------------------
# configs (no game needed)
# ---------------------------------------------------------------------------------------------
CONFIGS = Path(__file__).resolve().parents[2] / "marlopt" / "configs"
TUNED_KEYS = {
    "n_envs", "rollout_length", "model.recurrent", "model.hidden_sizes", "model.rnn_hidden", "model.head_gain",
    "algo.lr", "algo.critic_lr", "algo.entropy_coef", "algo.ppo_epochs", "algo.critic_epochs", "algo.clip",
    "algo.value_clip", "algo.num_minibatches", "algo.gamma", "algo.kl_threshold", "algo.backtrack_coeff",
    "algo.huber_delta", "env.state_type", "env.options.stacked_frames", "eval_envs",
    "total_steps",  # the papers' training lengths (HARL Table 1, the MAPPO reference scripts)
    "algo.objective.clip",  # the ratio rules' clip, an argument of their objective (algo.objective)
}


def _flat(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flat(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_config_maps_and_tuned_files_are_consistent():
    smac_maps = {m for m in choices("map") if "smac" in map_envs(m)}
    smacv2_maps = {m for m in choices("map") if "smacv2" in map_envs(m)}
    assert smac_maps == set(smac_module.MAPS) and smacv2_maps == set(smacv2_module.MAPS)
    for m in smac_maps | smacv2_maps:  # a flow list, so other envs can be appended
        assert "map_envs: [" in (CONFIGS / "map" / f"{m}.yaml").read_text()
    algos = set(choices("algo"))
    tuned = sorted((CONFIGS / "tuned").glob("*/smac*.yaml"))
    assert len(tuned) >= 45
    for path in tuned:
        assert path.read_text().startswith("# @package _global_\n"), path
        keys = set(_flat(OmegaConf.to_container(OmegaConf.load(path))))
        assert keys <= TUNED_KEYS, (path.name, keys - TUNED_KEYS)
        if path.parent.name == "env":  # env-level runner settings (tuned/env/<env>.yaml)
            assert path.stem in ("smac", "smacv2"), path.name
            continue
        env, _, rest = path.stem.partition("_")
        if path.parent.name == "map_algo":
            map_name, _, algo = rest.rpartition("_")
            assert map_name in (smac_maps if env == "smac" else smacv2_maps), path.name
        else:
            algo = rest
        assert algo in algos and env in ("smac", "smacv2"), path.name


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["algo=grasp", "env=smac", "map=MMM2"], {"n_envs": 8, "rollout_length": 200, "state_type": "EP",
                                                   "ppo_epochs": 5, "recurrent": True}),
        (["algo=happo", "env=smac", "map=6h_vs_8z"], {"n_envs": 8, "rollout_length": 400, "state_type": "FP",
                                                       "ppo_epochs": 10, "recurrent": False, "clip": 0.05,
                                                       "num_minibatches": 2, "gamma": 0.95,
                                                       "hidden_sizes": [64, 64, 64]}),
        (["algo=hatrpo", "env=smac", "map=27m_vs_30m"], {"kl_threshold": 1e-3, "backtrack_coeff": 0.8,
                                                          "recurrent": True, "state_type": "FP"}),
        (["algo=mappo", "env=smac", "map=3s_vs_5z"], {"ppo_epochs": 15, "clip": 0.05, "recurrent": False,
                                                       "state_type": "FP", "stacked_frames": 4}),
        (["algo=mappo", "env=smac", "map=MMM2"], {"ppo_epochs": 5, "num_minibatches": 2, "head_gain": 1.0,
                                                   "hidden_sizes": [64, 64]}),
        (["algo=happo", "env=smacv2", "map=terran_5_vs_5"], {"num_minibatches": 2, "clip": 0.05,
                                                              "hidden_sizes": [64], "state_type": "EP"}),
        (["algo=maspo", "env=smacv2", "map=zerg_20_vs_23"], {"state_type": "EP"}),
    ],
)
def test_configs_compose_with_the_papers_values(overrides, expected):
    cfg = to_objects(compose(overrides))
    assert cfg.env.vector == "subproc" and cfg.env.step_timeout == 120
    got = {"n_envs": cfg.n_envs, "rollout_length": cfg.rollout_length, "state_type": cfg.env.state_type,
           "recurrent": cfg.model.recurrent, "hidden_sizes": cfg.model.hidden_sizes, "head_gain": cfg.model.head_gain,
           "stacked_frames": cfg.env.options.get("stacked_frames")}
    for key in ("ppo_epochs", "clip", "num_minibatches", "gamma", "kl_threshold", "backtrack_coeff"):
        got[key] = getattr(cfg.algo, key, None)
    objective = getattr(cfg.algo, "objective", None)
    if got["clip"] is None and isinstance(objective, dict):  # ratio rules: the objective's clip
        got["clip"] = objective.get("clip")
    assert {k: got[k] for k in expected} == expected
    assert cfg.env.maker_options()["state_type"] == cfg.env.state_type


# Mark the backend tests sc2 where they run against the real smac and StarCraft II.
if BACKEND == "real":
    for _name, _test in list(globals().items()):
        if _name.startswith("test_") and not _name.startswith("test_config"):
            globals()[_name] = pytest.mark.sc2(_test)
