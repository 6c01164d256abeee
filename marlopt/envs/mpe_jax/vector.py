"""``MpeJaxVectorEnv``: E MPE episodes stepped by one jitted ``jax.vmap`` call; it implements the
``VectorEnv`` protocol (``marlopt.envs.base``) through ``marlopt.envs.jax_vector.JaxVectorEnv`` and is
built by ``make_vector`` (``env.vector=batched``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from marlopt.envs.base import VecObs
from marlopt.envs.jax_vector import JaxVectorEnv
from marlopt.envs.mpe_jax.core import check_jax_available, core_for
from marlopt.envs.mpe_jax.env import EnvBlob, MPEJaxEnv, resolve_config, split_backend

#: Tells the seeds of envs reset by ``set_state`` apart from other derived seeds (b"mpej").
RESTORE_SEED_TAG = 0x6D70656A


class MpeJaxVectorEnv(JaxVectorEnv):
    """E JaxMARL MPE envs stepped together by one jitted ``jax.vmap`` call (the ``VectorEnv`` protocol).

    Env ``i`` follows the same key stream, and so the same trajectory, as ``MPEJaxEnv`` ``i`` of a
    ``ProcessVectorEnv`` reset with the same seeds and given the same actions; ``get_state()`` holds
    one pickled ``MPEJaxEnv`` per env, so checkpoints of either load into the other. Nothing can crash
    (``dropped`` always False, ``restarts`` 0). ``obs``/``state``/``final_*`` are read-only numpy views
    of JAX's buffers; ``avail``/``active`` are constant (MPE's masks never change, nobody dies).
    """

    env_class = MPEJaxEnv
    restore_seed_tag = RESTORE_SEED_TAG

    def __init__(self, map_name: str, n_envs: int, **options: Any) -> None:
        config = resolve_config(map_name, options)
        super().__init__(config, core_for(config), n_envs, EnvBlob)
        E = self.num_envs
        self._avail = np.broadcast_to(self._core.avail, (E, *self._core.avail.shape))  # read-only views
        self._active = np.broadcast_to(self._core.active, (E, self.spec.n_agents))
        self._no_win = np.zeros(E, dtype=bool)

    def _vreset(self, keys: Any) -> tuple[Any, Any, VecObs]:
        keys, states, obs, state = self._core.vreset(keys)
        return keys, states, VecObs(np.asarray(obs), np.asarray(state), self._avail, self._active)

    def _vstep(self, actions: Any) -> tuple[Any, Any, dict[str, np.ndarray]]:
        keys, states, obs, state, reward, terminated, truncated, final_state, final_obs = self._core.vstep(
            self._keys, self._states, actions)
        return keys, states, {
            "obs": np.asarray(obs), "state": np.asarray(state), "avail": self._avail, "active": self._active,
            "reward": np.array(reward),  # [E] fields: small writable copies
            "terminated": np.array(terminated), "truncated": np.array(truncated), "won": self._no_win,
            "final_state": np.asarray(final_state), "final_active": self._active,
            "final_obs": np.asarray(final_obs), "final_avail": self._avail,
        }  # fmt: skip


def make_vector(map_name: str, n_envs: int, **options: Any) -> MpeJaxVectorEnv:
    """``env=mpe env.vector=batched``: ``n_envs`` JaxMARL MPE envs in one vmapped, jitted call.
    Needs ``backend="jax"`` (the mpe2 simulator steps one env per call: use inproc/subproc/hybrid)."""
    backend, rest = split_backend(options)
    if backend != "jax":
        raise ValueError("env=mpe env.vector=batched steps JaxMARL's MPE: add env.backend=jax "
                         "(or use env.vector=hybrid with the mpe2 backend)")
    resolve_config(map_name, rest)
    check_jax_available()
    return MpeJaxVectorEnv(map_name, n_envs, **rest)
