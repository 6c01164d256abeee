"""``JaxVectorEnv``: E episodes of a JAX env stepped by one jitted ``jax.vmap`` call, behind the
``VectorEnv`` protocol (``marlopt.envs.base``). What SMAX (``marlopt.envs.smax.SmaxVectorEnv``) and
JaxMARL's MPE (``marlopt.envs.mpe_jax.MpeJaxVectorEnv``) share: keys and seeds, auto-reset
bookkeeping (episode returns summed in float64, exactly as ``ProcessVectorEnv`` sums them), and the
vector checkpoint format of ``marlopt.envs.common`` — ``get_state()`` holds one pickled single env
per env, so a checkpoint of either class restores into a ``ProcessVectorEnv`` of the single envs and
back (each blob: the single env's ``EnvBlob`` of ``marlopt.envs.jax_core.pickled_state``). A
subclass names its single env class and restore-seed tag, builds its jitted core, and maps the
core's reset and step outputs to ``VecObs`` and the ``VecStep`` fields (:meth:`_vreset`,
:meth:`_vstep`).

The core (a ``marlopt.envs.jax_core.JaxCore``) provides ``spec``, ``action_shape``, ``put`` (numpy →
device), ``check_actions``, ``vreset(keys)``, ``vstep(keys, states, actions)``, ``leaves(states)``
(numpy leaves, env axis first) and ``unflatten(leaves)``. Nothing can crash and restart
(``dropped`` is always False, ``restarts`` 0); the large outputs are read-only numpy views of JAX's
buffers, valid until dropped (JAX arrays are immutable: later steps never overwrite them).
"""

from __future__ import annotations

import dataclasses
import pickle
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, VecObs, VecStep
from marlopt.envs.common import VECTOR_STATE_FORMAT, check_vector_state, derive_seed
from marlopt.envs.jax_core import fresh_key, pickled_state, seed_to_key


class JaxVectorEnv:
    """The shared batched JAX vector env (module docstring); subclasses set the class attributes
    and implement :meth:`_vreset` and :meth:`_vstep`."""

    mode = "jax"
    n_workers = 0
    #: The single env class whose pickles ``get_state`` writes and ``set_state`` reads.
    env_class: type = object
    #: Tells the seeds of envs reset by ``set_state`` apart from other derived seeds.
    restore_seed_tag = 0

    def __init__(self, config: Any, core: Any, n_envs: int, blob_class: type) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"{type(self).__name__} needs n_envs >= 1, got {n_envs}")
        self.config = config
        self._core = core
        self._blob_class = blob_class
        self.spec: EnvSpec = core.spec
        self.num_envs = int(n_envs)
        self.last_restore_reset = np.zeros(self.num_envs, dtype=bool)
        self.last_error = ""
        self._seeds: list[int | None] = [None] * self.num_envs
        self._serial = 0
        self._keys: Any = None  # [E, 2] uint32 (JAX)
        self._states: Any = None  # the batched env state (JAX)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._last: VecObs | None = None
        self._closed = False
        self._act_shape = (self.num_envs, *core.action_shape)

    # ------------------------------------------------------------------ the subclass's part
    def _vreset(self, keys: Any) -> tuple[Any, Any, VecObs]:
        """``core.vreset(keys)`` as ``(keys, states, VecObs)``."""
        raise NotImplementedError

    def _vstep(self, actions: Any) -> tuple[Any, Any, dict[str, np.ndarray]]:
        """``core.vstep`` of the current keys and states as ``(keys, states, fields)``: ``obs``,
        ``state``, ``avail``, ``active``, ``reward``, ``terminated``, ``truncated``, ``won`` (all
        ``[E, ...]``, the ``[E]`` ones writable numpy) and the ``final_*`` fields of ``VecStep``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ VectorEnv
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
            raise RuntimeError(f"{type(self).__name__} is closed")

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
        self._keys, self._states, self._last = self._vreset(self._core.put(keys))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return self._last

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env (int ``[E, N]`` or float ``[E, N, A]``); ended envs are auto-reset."""
        self._check_open()
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__}.step called before reset(seeds)")
        acts = self._core.check_actions(actions, self._act_shape)
        self._keys, self._states, out = self._vstep(acts)
        ended = out["terminated"] | out["truncated"]
        ret = self._ep_return + out["reward"]  # float64 sums, exactly as ProcessVectorEnv accumulates
        length = self._ep_length + 1
        episode_return = np.where(ended, ret, 0.0).astype(np.float32)
        episode_length = np.where(ended, length, 0)
        self._ep_return = np.where(ended, 0.0, ret)
        self._ep_length = np.where(ended, 0, length)
        self._last = VecObs(out["obs"], out["state"], out["avail"], out["active"])
        return VecStep(**{**out, "won": out["won"] & ended}, dropped=np.zeros(self.num_envs, dtype=bool),
                       episode_return=episode_return, episode_length=episode_length, restarts=0)

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot in the vector env format (one pickled single env per env)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError(f"{type(self).__name__}.get_state called before reset(seeds)")
        keys = np.asarray(self._keys)
        leaves = self._core.leaves(self._states)
        blobs = [pickle.dumps(self._blob_class(pickled_state(self.config, keys[i], [x[i] for x in leaves], False)))
                 for i in range(self.num_envs)]  # fmt: skip
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
        """Restore a ``get_state()`` snapshot (of this class or of a ``ProcessVectorEnv`` of the
        single envs). Envs that cannot be restored (no blob, one that does not unpickle, another
        configuration's, or one whose episode had ended) are reset with a derived seed;
        ``last_restore_reset[E]`` marks them."""
        self._check_open()
        check_vector_state(state, self.num_envs, self.spec)
        core = self._core
        seeds = list(state["seeds"])
        keys = np.empty((self.num_envs, 2), dtype=np.uint32)
        per_env: list[list[np.ndarray] | None] = []
        for blob in state["envs"]:
            env = None
            if blob is not None:
                try:
                    env = pickle.loads(blob)
                except Exception:  # noqa: BLE001 - reset it instead
                    env = None
            if (not isinstance(env, self.env_class) or env.config != self.config or env._state is None
                    or env._needs_reset):  # fmt: skip
                per_env.append(None)
                continue
            keys[len(per_env)] = np.asarray(env._key)
            per_env.append(core.leaves(env._state))
        mask = np.array([p is None for p in per_env], dtype=bool)
        last = VecObs._make(np.array(x) for x in state["last"])
        if mask.any():  # reset those with derived seeds, then take their fresh state
            self._serial += 1
            fresh = [seed_to_key(derive_seed(seeds[i], i, self._serial, tag=self.restore_seed_tag))
                     for i in range(self.num_envs)]  # fmt: skip
            fresh_keys, fresh_states, fresh_obs = self._vreset(core.put(np.stack(fresh)))
            fresh_leaves, fresh_keys = core.leaves(fresh_states), np.asarray(fresh_keys)
            for i in np.flatnonzero(mask):
                keys[i] = fresh_keys[i]
                per_env[i] = [x[i] for x in fresh_leaves]
            for field, fresh_field in zip(last, fresh_obs):
                field[mask] = np.asarray(fresh_field)[mask]
        leaves = [np.stack([p[k] for p in per_env]) for k in range(len(per_env[0]))]  # type: ignore[index]
        self._keys = core.put(keys)
        self._states = core.unflatten([core.put(x) for x in leaves])
        self._seeds = seeds
        self._ep_return = np.where(mask, 0.0, np.asarray(state["episode_return"], dtype=np.float64))
        self._ep_length = np.where(mask, 0, np.asarray(state["episode_length"], dtype=np.int64))
        self.last_restore_reset = mask
        self._last = last
        return self._last

    def close(self) -> None:
        """Release the JAX buffers (idempotent). The compiled functions stay cached."""
        self._closed = True
        self._keys = self._states = None

    def __enter__(self) -> JaxVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
