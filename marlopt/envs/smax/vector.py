"""``SmaxVectorEnv``: E SMAX battles stepped by one jitted ``jax.vmap`` call; it implements the
``VectorEnv`` protocol (``marlopt.envs.base``) through ``marlopt.envs.jax_vector.JaxVectorEnv`` and is
built by ``make_vector``."""

from __future__ import annotations

from typing import Any

import numpy as np

from marlopt.envs.base import VecObs
from marlopt.envs.jax_vector import JaxVectorEnv
from marlopt.envs.smax.config import resolve_config
from marlopt.envs.smax.core import core_for
from marlopt.envs.smax.env import EnvBlob, SMAXEnv

#: Tells the seeds of envs reset by ``set_state`` apart from other derived seeds (b"smax").
RESTORE_SEED_TAG = 0x736D6178


class SmaxVectorEnv(JaxVectorEnv):
    """E SMAX envs stepped together by one jitted ``jax.vmap`` call (the ``VectorEnv`` protocol).

    Same outputs as ``ProcessVectorEnv`` of ``SMAXEnv``s (``VecObs``/``VecStep``), same auto-reset
    (env ``i`` continues its own key after an episode ends), and the same checkpoint format:
    ``get_state()`` holds one pickled ``SMAXEnv`` per env, so a checkpoint of either class restores
    into the other. Differences: nothing can crash and restart (``dropped`` is always
    False, ``restarts`` 0), and the large outputs (obs, state, avail, active and the final_*
    fields) are read-only numpy views of JAX's buffers, valid until you drop them (JAX arrays are
    immutable: later steps never overwrite them).
    """

    env_class = SMAXEnv
    restore_seed_tag = RESTORE_SEED_TAG

    def __init__(self, map_name: str, n_envs: int, **options: Any) -> None:
        config = resolve_config(map_name, options)
        super().__init__(config, core_for(config), n_envs, EnvBlob)

    def _vreset(self, keys: Any) -> tuple[Any, Any, VecObs]:
        keys, states, obs, state, avail, active = self._core.vreset(keys)
        return keys, states, VecObs(np.asarray(obs), np.asarray(state), np.asarray(avail), np.asarray(active))

    def _vstep(self, actions: Any) -> tuple[Any, Any, dict[str, np.ndarray]]:
        (keys, states, obs, state, avail, active, reward, terminated, truncated,
         final_state, final_active, final_obs, final_avail, won) = self._core.vstep(self._keys, self._states, actions)  # fmt: skip
        return keys, states, {
            "obs": np.asarray(obs), "state": np.asarray(state), "avail": np.asarray(avail),
            "active": np.asarray(active), "reward": np.array(reward),  # [E] fields: small writable copies
            "terminated": np.array(terminated), "truncated": np.array(truncated), "won": np.array(won),
            "final_state": np.asarray(final_state), "final_active": np.asarray(final_active),
            "final_obs": np.asarray(final_obs), "final_avail": np.asarray(final_avail),
        }  # fmt: skip


def make_vector(map_name: str, n_envs: int, **options: Any) -> SmaxVectorEnv:
    """The batched path: ``n_envs`` SMAX envs in one vmapped, jitted call (``VectorEnv``'s API)."""
    resolve_config(map_name, options)
    return SmaxVectorEnv(map_name, n_envs, **options)
