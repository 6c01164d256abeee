"""``SmaxVectorEnv``: E SMAX battles stepped by one jitted ``jax.vmap`` call; it implements the
``VectorEnv`` protocol (``marlopt.envs.base``) and is built by ``make_vector``."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, VecObs, VecStep
from marlopt.envs.common import VECTOR_STATE_FORMAT, check_vector_state, derive_seed
from marlopt.envs.smax.config import resolve_config
from marlopt.envs.smax.core import core_for, fresh_key, seed_to_key
from marlopt.envs.smax.env import EnvBlob, SMAXEnv, pickled_state

#: Tells the seeds of envs reset by ``set_state`` apart from other derived seeds (b"smax").
RESTORE_SEED_TAG = 0x736D6178


class SmaxVectorEnv:
    """E SMAX envs stepped together by one jitted ``jax.vmap`` call (the ``VectorEnv`` protocol).

    Same outputs as ``ProcessVectorEnv`` of ``SMAXEnv``s (``VecObs``/``VecStep``), same auto-reset
    (env ``i`` continues its own key after an episode ends), and the same checkpoint format:
    ``get_state()`` holds one pickled ``SMAXEnv`` per env, so a checkpoint of either class restores
    into the other. Differences: nothing can crash and restart (``dropped`` is always
    False, ``restarts`` 0), and the large outputs (obs, state, avail, active and the final_*
    fields) are read-only numpy views of JAX's buffers, valid until you drop them (JAX arrays are
    immutable: later steps never overwrite them).
    """

    mode = "jax"
    n_workers = 0

    def __init__(self, map_name: str, n_envs: int, **options: Any) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"SmaxVectorEnv needs n_envs >= 1, got {n_envs}")
        self.config = resolve_config(map_name, options)
        self._core = core_for(self.config)
        self.spec: EnvSpec = self._core.spec
        self.num_envs = int(n_envs)
        self.last_restore_reset = np.zeros(self.num_envs, dtype=bool)
        self.last_error = ""
        self._seeds: list[int | None] = [None] * self.num_envs
        self._serial = 0
        self._keys: Any = None  # [E, 2] uint32 (JAX)
        self._states: Any = None  # batched HeuristicEnemySMAX state (JAX)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._last: VecObs | None = None
        self._closed = False
        self._act_shape = (self.num_envs, *self._core.action_shape)

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
            raise RuntimeError("SmaxVectorEnv is closed")

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
        self._keys, self._states, obs, state, avail, active = core.vreset(core.put(keys))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._last = VecObs(np.asarray(obs), np.asarray(state), np.asarray(avail), np.asarray(active))
        return self._last

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env (int ``[E, N]`` or float ``[E, N, A]``); ended envs are auto-reset."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("SmaxVectorEnv.step called before reset(seeds)")
        core = self._core
        acts = core.check_actions(actions, self._act_shape)
        out = core.vstep(self._keys, self._states, acts)
        (self._keys, self._states, obs, state, avail, active, reward, terminated, truncated,
         final_state, final_active, final_obs, final_avail, won) = out  # fmt: skip
        obs, state, avail, active = (np.asarray(x) for x in (obs, state, avail, active))
        reward = np.array(reward)  # [E] fields: small writable copies
        terminated, truncated, won = np.array(terminated), np.array(truncated), np.array(won)
        ended = terminated | truncated
        ret = self._ep_return + reward  # float64 sums, exactly as ProcessVectorEnv accumulates
        length = self._ep_length + 1
        episode_return = np.where(ended, ret, 0.0).astype(np.float32)
        episode_length = np.where(ended, length, 0)
        self._ep_return = np.where(ended, 0.0, ret)
        self._ep_length = np.where(ended, 0, length)
        self._last = VecObs(obs, state, avail, active)
        return VecStep(
            obs=obs, state=state, avail=avail, active=active, reward=reward, terminated=terminated,
            truncated=truncated, dropped=np.zeros(self.num_envs, dtype=bool),
            final_state=np.asarray(final_state), final_active=np.asarray(final_active),
            final_obs=np.asarray(final_obs), final_avail=np.asarray(final_avail),
            won=won & ended, episode_return=episode_return, episode_length=episode_length, restarts=0,
        )

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot in the vector env format (one pickled ``SMAXEnv`` per env)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("SmaxVectorEnv.get_state called before reset(seeds)")
        core = self._core
        keys = np.asarray(self._keys)
        leaves = core.leaves(self._states)
        blobs = [
            pickle.dumps(EnvBlob(pickled_state(self.config, keys[i], [x[i] for x in leaves], False)))
            for i in range(self.num_envs)
        ]
        return {
            "format": VECTOR_STATE_FORMAT,
            "num_envs": self.num_envs,
            "spec": dataclasses.asdict(self.spec),
            "envs": blobs,
            "episode_return": [float(x) for x in self._ep_return],
            "episode_length": [int(x) for x in self._ep_length],
            "seeds": list(self._seeds),
            "restarts": 0,
            "last": tuple(np.array(x) for x in self._last),  # the VecObs, as a plain tuple
        }

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot (of this class or of a ``ProcessVectorEnv`` of SMAX envs).

        Envs that cannot be restored (no blob, or one that does not unpickle, or whose episode had
        ended) are reset with a derived seed; ``last_restore_reset[E]`` marks them.
        """
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
            if (not isinstance(env, SMAXEnv) or env.config != self.config or env._state is None
                    or env._needs_reset):  # fmt: skip
                per_env.append(None)
                continue
            keys[i] = np.asarray(env._key)
            per_env.append(core.leaves(env._state))
        mask = np.array([p is None for p in per_env], dtype=bool)
        if mask.any():  # reset those with derived seeds, then take their fresh state
            self._serial += 1
            fresh = [seed_to_key(derive_seed(seeds[i], i, self._serial, tag=RESTORE_SEED_TAG))
                     for i in range(self.num_envs)]
            k_r, st_r, o_r, s_r, a_r, _ = core.vreset(core.put(np.stack(fresh)))
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
        last = VecObs._make(np.array(x) for x in state["last"])
        if mask.any():
            last.obs[mask], last.state[mask] = np.asarray(o_r)[mask], np.asarray(s_r)[mask]
            last.avail[mask], last.active[mask] = np.asarray(a_r)[mask], True
        self.last_restore_reset = mask
        self._last = last
        return self._last

    def close(self) -> None:
        """Release the JAX buffers (idempotent). The compiled functions stay cached."""
        self._closed = True
        self._keys = self._states = None

    def __enter__(self) -> SmaxVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_vector(map_name: str, n_envs: int, **options: Any) -> SmaxVectorEnv:
    """The batched path: ``n_envs`` SMAX envs in one vmapped, jitted call (``VectorEnv``'s API)."""
    resolve_config(map_name, options)
    return SmaxVectorEnv(map_name, n_envs, **options)
