"""The env registry: lazy makers, clear errors, picklable env factories."""

from __future__ import annotations

import functools
import pickle
import subprocess
import sys

import pytest

from marlopt.envs import MultiAgentEnv, env_fn, make_env
from marlopt.envs.registry import ENV_MAKERS


def test_registry_lists_the_lazy_makers():
    assert ENV_MAKERS == {
        "mpe": "marlopt.envs.mpe_jax:make",  # picks env.backend (mpe2: marlopt.envs.mpe)
        "games": "marlopt.envs.games:make",
        "smac": "marlopt.envs.smac:make",
        "smacv2": "marlopt.envs.smacv2:make",
        "grf": "marlopt.envs.grf:make",
        "smax": "marlopt.envs.smax:make",
    }


def test_make_env_builds_envs_with_options():
    env = make_env("games", "gpvd_matrix")
    assert isinstance(env, MultiAgentEnv) and env.spec.n_actions == 3
    env = make_env("mpe", "simple_spread", {"n_agents": 4, "max_cycles": 7})
    assert env.spec.n_agents == 4 and env.spec.episode_limit == 7


def test_unknown_env_lists_valid_names():
    with pytest.raises(ValueError) as err:
        make_env("starcraft", "3m")
    for name in ENV_MAKERS:
        assert repr(name) in str(err.value)
    with pytest.raises(ValueError, match="valid envs"):
        env_fn("nope", "x")  # fails at once, not in a worker


@pytest.mark.parametrize(
    "env_name, maps",
    [
        ("mpe", ["simple_reference", "simple_speaker_listener", "simple_spread"]),
        ("games", ["gpvd_matrix", "harl_example1", "sum_to_10", "coordsum_3x10_30", "coordsum_3x30_50",
                   "coordsum_5x20_80", "coordsum_8x15_100"]),
    ],
)
def test_unknown_map_lists_the_env_maps(env_name, maps):
    with pytest.raises(ValueError) as err:
        make_env(env_name, "no_such_map")
    for m in maps:
        assert m in str(err.value)


def test_unknown_option_is_an_error():
    with pytest.raises(ValueError, match="valid options"):
        make_env("mpe", "simple_spread", {"n_agent": 3})  # typo
    with pytest.raises(ValueError, match="valid options"):
        make_env("games", "gpvd_matrix", {"steps": 3})


def test_env_fn_is_a_picklable_partial():
    fn = env_fn("mpe", "simple_spread", {"n_agents": 2})
    assert isinstance(fn, functools.partial)
    clone = pickle.loads(pickle.dumps(fn))
    assert clone().spec == fn().spec
    assert clone().spec.n_agents == 2


def test_registered_but_missing_wrapper_has_a_clear_error(monkeypatch):
    from marlopt.envs import registry

    monkeypatch.setitem(registry.ENV_MAKERS, "ghost", "marlopt.envs.ghost:make")
    with pytest.raises(ImportError, match="marlopt.envs.ghost"):
        make_env("ghost", "3m")


def test_importing_marlopt_envs_imports_no_simulator_or_torch():
    code = (
        "import sys, marlopt.envs, marlopt.envs.vector, marlopt.envs.registry, marlopt.envs.common,"
        " marlopt.envs.sc2, marlopt.envs.smax, marlopt.envs.smac, marlopt.envs.smacv2;"
        "print(sorted(m for m in ('torch', 'mpe2', 'pygame', 'pettingzoo', 'gymnasium', 'jax', 'jaxmarl',"
        " 'smac.env', 'smacv2.env', 'gfootball')"
        " if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]),
    )
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
