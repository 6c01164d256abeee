"""``env=smacv2``: the SMACv2 wrapper over ``smacv2.env.StarCraftCapabilityEnvWrapper``.

Where the real ``smacv2`` package is not installed these tests run against the stand-in in
``tests/standins/smacv2`` — it stands in for StarCraft II, which cannot run here (same wrapper and
distributions API, SMACv2's observation/state sizes, a small battle simulator). With the real
package and StarCraft II installed the same tests run against them (marked ``sc2``).
"""

from __future__ import annotations

import numpy as np
import pytest

from marlopt.envs import make_env
from marlopt.envs.sc2 import SC2UnavailableError, fp_state_dim
from marlopt.envs.smacv2 import MAPS, capability_config
from tests.standins.backend import activate, backend, forget_modules, random_actions

BACKEND = backend("smacv2")
pytestmark = [pytest.mark.sc2] if BACKEND == "real" else []
standin_only = pytest.mark.skipif(BACKEND == "real", reason="drives the StarCraft II stand-in's knobs")


@pytest.fixture
def sc2(monkeypatch, tmp_path):
    which = activate("smacv2", monkeypatch, tmp_path)
    yield which
    forget_modules()


# map: (n_agents, obs, EP state, n_actions), 10gen maps: episode limit 200
SHAPES = {
    "protoss_10_vs_10": (10, 182, 310, 16),
    "protoss_5_vs_5": (5, 92, 130, 11),
    "terran_10_vs_11": (10, 170, 306, 17),
    "zerg_20_vs_23": (20, 346, 858, 29),
}


def test_maps_are_the_official_scenarios():
    assert len(MAPS) == 15
    for race in ("protoss", "terran", "zerg"):
        for size in ("5_vs_5", "10_vs_10", "20_vs_20", "10_vs_11", "20_vs_23"):
            assert f"{race}_{size}" in MAPS
    cap = capability_config("terran_10_vs_11")
    assert (cap["n_units"], cap["n_enemies"]) == (10, 11)
    assert cap["team_gen"] == {"dist_type": "weighted_teams", "unit_types": ["marine", "marauder", "medivac"],
                               "weights": [0.45, 0.45, 0.1], "exception_unit_types": ["medivac"], "observe": True}
    assert cap["start_positions"] == {"dist_type": "surrounded_and_reflect", "p": 0.5, "map_x": 32, "map_y": 32}
    assert capability_config("zerg_5_vs_5")["team_gen"]["exception_unit_types"] == ["baneling"]
    assert capability_config("zerg_5_vs_5")["team_gen"]["weights"] == [0.45, 0.1, 0.45]
    assert "exception_unit_types" not in capability_config("protoss_20_vs_20")["team_gen"]


@pytest.mark.parametrize("map_name", list(SHAPES))
@pytest.mark.parametrize("state_type", ["EP", "FP"])
def test_spec_and_shapes(sc2, map_name, state_type):
    n, obs_dim, ep_dim, n_actions = SHAPES[map_name]
    env = make_env("smacv2", map_name, {"continuous": False, "state_type": state_type})
    try:
        spec = env.spec
        assert (spec.n_agents, spec.obs_dim, spec.n_actions, spec.episode_limit) == (n, obs_dim, n_actions, 200)
        assert spec.has_won and spec.state_per_agent == (state_type == "FP")
        assert spec.state_dim == (ep_dim if state_type == "EP" else fp_state_dim(env._sc))
        obs, state, avail = env.reset(seed=0)
        assert obs.shape == (n, obs_dim) and state.shape == (spec.state_rows, spec.state_dim)
        assert avail.shape == (n, n_actions) and avail[:, 1].all() and not avail[:, 0].any()
        sc = env._sc
        assert sc.map_name == f"10gen_{map_name.split('_')[0]}" and sc.continuing_episode
        assert sc.use_unit_ranges and sc.obs_own_pos and sc.min_attack_range == 2
        info = env._raw.get_env_info()  # smacv2's MultiAgentEnv adds the capability size
        assert info["cap_shape"] == sc.get_cap_size() and "agent_features" in info
    finally:
        env.close()


def test_episodes_dead_agents_and_truncation(sc2):
    env = make_env("smacv2", "zerg_5_vs_5", {"state_type": "FP"})
    rng = np.random.default_rng(0)
    try:
        _, _, avail = env.reset(seed=1)
        episodes, t = 0, 0
        while episodes < 2:
            step = env.step(random_actions(avail, rng))
            t += 1
            avail, alive = step.avail, step.info["active"]
            dead = ~alive
            assert avail[dead, 0].all() and not avail[dead, 1:].any()
            n = len(alive)  # FP: a dead agent's row is zero but its one-hot id (the last N columns)
            assert not step.state[dead][:, :-n].any()
            assert np.array_equal(step.state[dead][:, -n:], np.eye(n, dtype=np.float32)[dead])
            assert not (step.terminated and step.truncated)
            if step.terminated or step.truncated:
                assert isinstance(step.info["won"], bool) and t <= 200
                if step.truncated:
                    assert t == 200 and not step.info["won"]
                episodes, t = episodes + 1, 0
                _, _, avail = env.reset()
    finally:
        env.close()


def test_same_seed_same_scenario(sc2):
    envs = [make_env("smacv2", "protoss_10_vs_10") for _ in range(3)]
    try:
        teams = []
        for env, seed in zip(envs, (7, 7, 8)):
            draws = []
            for episode in range(3):
                env.reset(seed=seed if episode == 0 else None)
                draws.append(tuple(env._sc.get_unit_types()))
            teams.append(draws)
        assert teams[0] == teams[1], "the same seed draws the same sequence of teams"
        assert teams[0] != teams[2]
    finally:
        for env in envs:
            env.close()


def test_capability_config_override_is_merged(sc2):
    env = make_env("smacv2", "protoss_5_vs_5", {"capability_config": {"start_positions": {"p": 1.0}}})
    try:
        dist = env._raw.distribution_config
        assert dist["start_positions"]["p"] == 1.0 and dist["start_positions"]["map_x"] == 32
        assert dist["team_gen"]["unit_types"] == ["stalker", "zealot", "colossus"]
    finally:
        env.close()
    with pytest.raises(ValueError, match="valid maps"):
        make_env("smacv2", "protoss_6_vs_6")


def test_missing_smacv2_is_one_clear_line(sc2, monkeypatch, tmp_path):
    import sys

    with monkeypatch.context() as mp:
        for name in ("smacv2", "smacv2.env", "smacv2.env.starcraft2", "smacv2.env.starcraft2.wrapper"):
            mp.setitem(sys.modules, name, None)
        with pytest.raises(SC2UnavailableError) as err:
            make_env("smacv2", "protoss_5_vs_5")
    line = str(err.value)
    assert "\n" not in line
    assert 'pip install "smacv2 @ git+https://github.com/oxwhirl/smacv2.git"' in line
    assert "bash scripts/install_sc2.sh" in line
    monkeypatch.setenv("SC2PATH", str(tmp_path / "absent"))
    with pytest.raises(SC2UnavailableError, match="StarCraft II not found"):
        make_env("smacv2", "protoss_5_vs_5")
