"""The SMAC FP (feature-pruned agent-specific) state of ``marlopt/envs/sc2/fp_state.py``: a dead
agent's row keeps its one-hot agent id, as the MAPPO reference's ``get_state_agent``
(marlbenchmark/on-policy ``onpolicy/envs/starcraft2/StarCraft2_Env.py``; HARL's
``harl/envs/smac/StarCraft2_Env.py`` is the same): the features are zeroed under
``if use_mustalive and unit.health > 0``, the id is appended after that branch.

Runs against the SMAC stand-in (``tests/standins``) where the real package is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from marlopt.envs import make_env
from marlopt.envs.sc2 import fp_state, fp_state_dim
from tests.standins.backend import activate, backend, forget_modules, greedy_actions

standin_only = pytest.mark.skipif(backend("smac") == "real", reason="drives the StarCraft II stand-in")


@pytest.fixture
def sc2(monkeypatch, tmp_path):
    which = activate("smac", monkeypatch, tmp_path)
    yield which
    forget_modules()


def _reference_dead_row(n_agents: int, dim: int, agent: int) -> np.ndarray:
    """The reference's row of a dead agent: zero features, then ``agent_id_feats[agent] = 1``."""
    row = np.zeros(dim, dtype=np.float32)
    row[dim - n_agents + agent] = 1.0
    return row


def test_a_dead_agents_fp_row_keeps_its_agent_id(sc2):
    """``fp_state`` with an agent marked dead: its row is zero but its id; the others keep theirs."""
    env = make_env("smac", "3m", {"state_type": "FP"})
    try:
        _, state, avail = env.reset(seed=0)
        sc = env._sc
        n, dim = sc.n_agents, fp_state_dim(sc)
        alive = np.ones(n, dtype=bool)
        full = fp_state(sc, alive, avail)
        assert np.array_equal(full, state)
        assert np.array_equal(full[:, -n:], np.eye(n, dtype=np.float32)), "every row ends in its id"
        for dead in range(n):
            mask = alive.copy()
            mask[dead] = False
            got = fp_state(sc, mask, avail)
            assert np.array_equal(got[dead], _reference_dead_row(n, dim, dead))
            others = np.arange(n) != dead
            assert np.array_equal(got[others][:, -n:], np.eye(n, dtype=np.float32)[others])
            assert got[others, :-n].any(axis=1).all()
    finally:
        env.close()


@standin_only
def test_agents_killed_in_battle_keep_their_id_in_the_fp_state(sc2):
    """Through the SMAC wrapper (``state_type=FP``): every step, the rows of dead agents are the
    reference's (zeros and the one-hot id); living agents' rows have features besides the id."""
    env = make_env("smac", "5m_vs_6m", {"state_type": "FP"})
    try:
        _, state, avail = env.reset(seed=0)
        n, dim = env.spec.n_agents, env.spec.state_dim
        saw_dead = False
        for _ in range(120):
            step = env.step(greedy_actions(avail))
            avail, state, alive = step.avail, step.state, step.info["active"]
            for i in np.flatnonzero(~alive):
                saw_dead = True
                assert np.array_equal(state[i], _reference_dead_row(n, dim, i)), f"agent {i}"
            assert np.array_equal(state[:, -n:], np.eye(n, dtype=np.float32)), "every row keeps its id"
            assert state[alive, :-n].any(axis=1).all()
            if step.terminated or step.truncated:
                break
        assert saw_dead
    finally:
        env.close()
