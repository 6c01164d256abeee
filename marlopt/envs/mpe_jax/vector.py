"""``MpeJaxVectorEnv``: E MPE episodes stepped by one jitted ``jax.vmap`` call; it implements the
``VectorEnv`` protocol (``marlopt.envs.base``) and is built by ``make_vector`` (``env.vector=batched``)."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, VecObs, VecStep
from marlopt.envs.common import VECTOR_STATE_FORMAT, check_vector_state, derive_seed
from marlopt.envs.mpe_jax.core import check_jax_available, core_for
from marlopt.envs.mpe_jax.env import EnvBlob, MPEJaxEnv, pickled_state, resolve_config, split_backend
from marlopt.envs.smax.core import fresh_key, seed_to_key

#: Tells the seeds of envs reset by ``set_state`` apart from other derived seeds (b"mpej").
RESTORE_SEED_TAG = 0x6D70656A


class MpeJaxVectorEnv:
    """E JaxMARL MPE envs stepped together by one jitted ``jax.vmap`` call (the ``VectorEnv`` protocol).

    Env ``i`` follows the same key stream, and so the same trajectory, as ``MPEJaxEnv`` ``i`` of a
    ``ProcessVectorEnv`` reset with the same seeds and given the same actions; ``get_state()`` holds
    one pickled ``MPEJaxEnv`` per env, so checkpoints of either load into the other. Nothing can crash
    (``dropped`` always False, ``restarts`` 0). ``obs``/``state``/``final_*`` are read-only numpy views
    of JAX's buffers; ``avail``/``active`` are constant (MPE's masks never change, nobody dies).
    """

    mode = "jax"
    n_workers = 0

    def __init__(self, map_name: str, n_envs: int, **options: Any) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"MpeJaxVectorEnv needs n_envs >= 1, got {n_envs}")
        self.config = resolve_config(map_name, options)
        self._core = core_for(self.config)
        self.spec: EnvSpec = self._core.spec
        self.num_envs = E = int(n_envs)
        self.last_restore_reset = np.zeros(E, dtype=bool)
        self.last_error = ""
        self._seeds: list[int | None] = [None] * E
        self._serial = 0
        self._keys: Any = None  # [E, 2] uint32 (JAX)
        self._states: Any = None  # batched JaxMARL MPE state (JAX)
        self._ep_return = np.zeros(E, dtype=np.float64)
        self._ep_length = np.zeros(E, dtype=np.int64)
        self._last: VecObs | None = None
        self._closed = False
        self._act_shape = (E, *self._core.action_shape)
        avail = np.broadcast_to(self._core.avail, (E, *self._core.avail.shape))
        active = np.broadcast_to(self._core.active, (E, self.spec.n_agents))
        self._avail, self._active = avail, active  # read-only broadcast views
        self._no = np.zeros(E, dtype=bool)
        self._no.setflags(write=False)

    @property
    def restarts(self) -> int:
        return 0

    @property
    def worker_pids(self) -> list[int]:
        return []

    def workers_have_module(self, name: str) -> list[bool]:
        return [name in sys.modules]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("MpeJaxVectorEnv is closed")

    def reset(self, seeds: Sequence[int | None]) -> VecObs:
        """Reset env ``i`` with ``seeds[i]`` (``None``: continue its key)."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        old = None if self._keys is None else np.asarray(self._keys)
        keys = np.empty((self.num_envs, 2), dtype=np.uint32)
        for i, seed in enumerate(seeds):
            if seed is not None:
                keys[i] = seed_to_key(seed)
            else:
                keys[i] = old[i] if old is not None else fresh_key()
        self._seeds = [None if s is None else int(s) for s in seeds]
        core = self._core
        self._keys, self._states, obs, state = core.vreset(core.put(keys))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._last = VecObs(np.asarray(obs), np.asarray(state), self._avail, self._active)
        return self._last

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env (int ``[E, N]`` or float ``[E, N, A]``); ended envs are auto-reset."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("MpeJaxVectorEnv.step called before reset(seeds)")
        core = self._core
        acts = core.check_actions(actions, self._act_shape)
        out = core.vstep(self._keys, self._states, acts)
        self._keys, self._states, obs, state, reward, terminated, truncated, final_state, final_obs = out
        obs, state = np.asarray(obs), np.asarray(state)
        reward = np.array(reward)  # [E] fields: small writable copies
        terminated, truncated = np.array(terminated), np.array(truncated)
        ended = terminated | truncated
        ret = self._ep_return + reward  # float64 sums, exactly as ProcessVectorEnv accumulates
        length = self._ep_length + 1
        episode_return = np.where(ended, ret, 0.0).astype(np.float32)
        episode_length = np.where(ended, length, 0)
        self._ep_return = np.where(ended, 0.0, ret)
        self._ep_length = np.where(ended, 0, length)
        self._last = VecObs(obs, state, self._avail, self._active)
        return VecStep(
            obs=obs, state=state, avail=self._avail, active=self._active, reward=reward,
            terminated=terminated, truncated=truncated, dropped=np.zeros(self.num_envs, dtype=bool),
            final_state=np.asarray(final_state), final_active=self._active,
            final_obs=np.asarray(final_obs), final_avail=self._avail,
            won=np.zeros(self.num_envs, dtype=bool), episode_return=episode_return,
            episode_length=episode_length, restarts=0,
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot in the vector env format (one pickled ``MPEJaxEnv`` per env)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("MpeJaxVectorEnv.get_state called before reset(seeds)")
        keys = np.asarray(self._keys)
        leaves = self._core.leaves(self._states)
        blobs = [pickle.dumps(EnvBlob(pickled_state(self.config, keys[i], [x[i] for x in leaves], False)))
                 for i in range(self.num_envs)]  # fmt: skip
        return {
            "format": VECTOR_STATE_FORMAT, "num_envs": self.num_envs,
            "spec": dataclasses.asdict(self.spec), "envs": blobs,
            "episode_return": [float(x) for x in self._ep_return],
            "episode_length": [int(x) for x in self._ep_length],
            "seeds": list(self._seeds), "restarts": 0,
            "last": tuple(np.array(x) for x in self._last),  # the VecObs, as a plain tuple
        }  # fmt: skip

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot (of this class or of a ``ProcessVectorEnv`` of
        ``MPEJaxEnv``s). Envs that cannot be restored (no blob, not an ``MPEJaxEnv`` of this
        configuration, or an ended episode) are reset with a derived seed (``last_restore_reset``)."""
        self._check_open()
        check_vector_state(state, self.num_envs, self.spec)
        core = self._core
        seeds = list(state["seeds"])
        keys = np.empty((self.num_envs, 2), dtype=np.uint32)
        per_env: list[list[np.ndarray] | None] = []
        for i, blob in enumerate(state["envs"]):
            env = None
            if blob is not None:
                try:
                    env = pickle.loads(blob)
                except Exception:  # noqa: BLE001 - reset it instead
                    env = None
            if (not isinstance(env, MPEJaxEnv) or env.config != self.config or env._state is None
                    or env._needs_reset):  # fmt: skip
                per_env.append(None)
                continue
            keys[i] = np.asarray(env._key)
            per_env.append(core.leaves(env._state))
        mask = np.array([p is None for p in per_env], dtype=bool)
        if mask.any():  # reset those with derived seeds, then take their fresh state
            self._serial += 1
            fresh = [seed_to_key(derive_seed(seeds[i], i, self._serial, tag=RESTORE_SEED_TAG))
                     for i in range(self.num_envs)]  # fmt: skip
            k_r, st_r, o_r, s_r = core.vreset(core.put(np.stack(fresh)))
            fresh_leaves, fresh_keys = core.leaves(st_r), np.asarray(k_r)
            for i in np.flatnonzero(mask):
                keys[i] = fresh_keys[i]
                per_env[i] = [x[i] for x in fresh_leaves]
        leaves = [np.stack([p[k] for p in per_env]) for k in range(len(per_env[0]))]  # type: ignore[index]
        self._keys = core.put(keys)
        self._states = core.unflatten([core.put(x) for x in leaves])
        self._seeds = seeds
        self._ep_return = np.where(mask, 0.0, np.asarray(state["episode_return"], dtype=np.float64))
        self._ep_length = np.where(mask, 0, np.asarray(state["episode_length"], dtype=np.int64))
        obs, st = np.array(state["last"][0]), np.array(state["last"][1])
        if mask.any():
            obs[mask], st[mask] = np.asarray(o_r)[mask], np.asarray(s_r)[mask]
        self.last_restore_reset = mask
        self._last = VecObs(obs, st, self._avail, self._active)
        return self._last

    def close(self) -> None:
        """Release the JAX buffers (idempotent). The compiled functions stay cached."""
        self._closed = True
        self._keys = self._states = None

    def __enter__(self) -> MpeJaxVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
