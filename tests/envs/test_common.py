"""The helpers the env wrappers and both vector envs share (``marlopt.envs.common``)."""

from __future__ import annotations

import dataclasses
import os

import pytest

from marlopt.envs.base import EnvSpec
from marlopt.envs.common import (
    STATE_TYPES,
    VECTOR_STATE_FORMAT,
    check_vector_state,
    derive_seed,
    resolve_state_type,
    usable_cpus,
)
from marlopt.envs.smax.vector import RESTORE_SEED_TAG
from marlopt.envs.vector.group import RESTART_SEED_TAG


def test_state_types():
    assert STATE_TYPES == ("EP", "FP")
    assert resolve_state_type(None, "X") == "EP"
    assert resolve_state_type("fp", "X") == "FP" and resolve_state_type("EP", "X") == "EP"
    with pytest.raises(ValueError, match=r"GRF state_type must be one of \['EP', 'FP'\], got 'XP'"):
        resolve_state_type("XP", "GRF")


def test_derived_seeds_are_those_of_earlier_versions():
    """Restarted envs (and SMAX envs reset on restore) get these exact seeds: changing them would
    change every trajectory after a crash or a resume."""
    assert [derive_seed(None, 0, 0, 1, tag=RESTART_SEED_TAG), derive_seed(12345, 3, 2, 7, tag=RESTART_SEED_TAG),
            derive_seed(2**70, 1, 0, 1, tag=RESTART_SEED_TAG)] == [1356913809, 893291716, 1672884583]
    assert [derive_seed(None, 0, 1, tag=RESTORE_SEED_TAG),
            derive_seed(99, 2, 3, tag=RESTORE_SEED_TAG)] == [4201311919, 4173929323]
    assert derive_seed(5, 0, 0, 1, tag=RESTART_SEED_TAG) != derive_seed(5, 0, 0, 2, tag=RESTART_SEED_TAG)


def test_check_vector_state():
    spec = EnvSpec(n_agents=2, obs_dim=3, state_dim=4, n_actions=5, episode_limit=6)
    state = {"format": VECTOR_STATE_FORMAT, "num_envs": 2, "spec": dataclasses.asdict(spec)}
    check_vector_state(state, 2, spec)
    with pytest.raises(ValueError, match="not a vector env state"):
        check_vector_state({**state, "format": "other/1"}, 2, spec)
    with pytest.raises(ValueError, match="state has 2 envs, this vector env has 3"):
        check_vector_state(state, 3, spec)
    with pytest.raises(ValueError, match="saved for spec"):
        check_vector_state(state, 2, dataclasses.replace(spec, n_actions=6))


def test_usable_cpus():
    assert 1 <= usable_cpus() <= (os.cpu_count() or 1)
