"""What the SMAX tests share: the skip mark, the specs of three maps, simple policies."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

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

