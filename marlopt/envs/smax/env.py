"""``SMAXEnv``: one SMAX battle behind the ``MultiAgentEnv`` protocol, and its maker.

``SMAXEnv`` pickles as its configuration, JAX key and SMAX state leaves (numpy), mid-episode
included (``pickled_state``); ``EnvBlob`` writes the same pickle from a slice of a batched state,
so ``SmaxVectorEnv`` checkpoints hold ``SMAXEnv`` pickles too.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import numpy as np

from marlopt.envs.base import MultiAgentEnv, StepResult
from marlopt.envs.smax.config import SmaxConfig, resolve_config
from marlopt.envs.smax.core import core_for, fresh_key, seed_to_key
from marlopt.envs.smax.loading import missing

#: Pickles name SMAX envs by the package's path (``marlopt.envs.smax.SMAXEnv`` and
#: ``marlopt.envs.smax._unpickle_env``, both exported there): checkpoints written before the
#: package was split into modules hold that path, and it stays valid whatever moves inside.
PICKLE_MODULE = "marlopt.envs.smax"


class SMAXEnv(MultiAgentEnv):
    """One SMAX battle behind the ``MultiAgentEnv`` protocol (see ``marlopt.envs.smax``)."""

    def __init__(self, map_name: str = "3m", **options: Any) -> None:
        self.config = resolve_config(map_name, options)
        self._core = core_for(self.config)
        self.spec = self._core.spec
        self._key: Any = None  # JAX uint32[2] key (numpy while restored and never stepped)
        self._state: Any = None  # JaxMARL HeuristicEnemySMAX state pytree
        self._needs_reset = True

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        core = self._core
        if seed is not None:
            self._key = core.put(seed_to_key(seed))
        elif self._key is None:
            self._key = core.put(fresh_key())
        self._key, self._state, obs, state, avail, _ = core.reset(self._key)
        self._needs_reset = False
        return np.asarray(obs), np.asarray(state), np.asarray(avail)

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("SMAXEnv.step called before reset() or after the episode ended")
        core = self._core
        acts = core.check_actions(actions, core.action_shape)
        out = core.step(self._key, self._state, acts)
        self._key, self._state, obs, state, avail, active, reward, terminated, truncated, won = out
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        info = {"active": np.asarray(active), "won": bool(won)}
        return StepResult(np.asarray(obs), np.asarray(state), np.asarray(avail), float(reward),
                          terminated, truncated, info)  # fmt: skip

    def render_units(self) -> dict[str, Any]:
        """The battle as a renderer reads it (marlopt/render.py), numpy, allies first then enemies:
        ``positions[U, 2]`` (map units), ``alive[U]``, ``health[U]`` (fraction of the unit type's
        maximum), ``radius[U]``, ``shorthand`` (each unit's type letter), ``target[U]`` (the unit
        each one attacked in its last step, -1: none), ``n_allies``, ``width``, ``height``, ``step``."""
        if self._state is None:
            raise RuntimeError("SMAXEnv.render_units called before reset()")
        env, st = self._core.env, self._state.state
        types = np.asarray(st.unit_types)
        attack = np.asarray(st.prev_attack_actions).astype(np.int64) - int(env.num_movement_actions)
        n = int(env.num_allies)
        index = np.arange(len(types))
        # JaxMARL's visualiser's mapping: ally attack j hits enemy j, enemy attack j hits ally n-1-j
        target = np.where(index < n, attack + n, n - 1 - attack)
        return {
            "positions": np.asarray(st.unit_positions, dtype=np.float64),
            "alive": np.asarray(st.unit_alive, dtype=bool),
            "health": np.asarray(st.unit_health) / np.asarray(env.unit_type_health)[types],
            "radius": np.asarray(env.unit_type_radiuses)[types],
            "shorthand": [env.unit_type_shorthands[t] for t in types.tolist()],
            "target": np.where(attack >= 0, target, -1),
            "n_allies": n, "width": float(env.map_width), "height": float(env.map_height),
            "step": int(st.step),
        }

    # ------------------------------------------------------------------ exact resume
    def __getstate__(self) -> dict[str, Any]:
        leaves = None if self._state is None else self._core.leaves(self._state)
        return pickled_state(self.config, self._key, leaves, self._needs_reset)

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["map_name"], **d["options"])  # type: ignore[misc]
        core = self._core
        if d["key"] is not None:
            self._key = core.put(np.asarray(d["key"], dtype=np.uint32))
        if d["leaves"] is not None:
            self._state = core.unflatten([core.put(x) for x in d["leaves"]])
        self._needs_reset = d["needs_reset"]


def pickled_state(
    config: SmaxConfig, key: Any, leaves: list[np.ndarray] | None, needs_reset: bool
) -> dict[str, Any]:
    """What an ``SMAXEnv`` pickles: its configuration, key and SMAX state leaves, as numpy."""
    options = dataclasses.asdict(config)
    return {
        "map_name": options.pop("map_name"),
        "options": options,
        "key": None if key is None else np.array(key, dtype=np.uint32),
        "leaves": leaves,
        "needs_reset": needs_reset,
    }


def _unpickle_env(state: dict[str, Any]) -> SMAXEnv:
    env = SMAXEnv.__new__(SMAXEnv)
    env.__setstate__(state)
    return env


SMAXEnv.__module__ = _unpickle_env.__module__ = PICKLE_MODULE


class EnvBlob:
    """Pickles as an ``SMAXEnv`` in the given state (built without an ``SMAXEnv`` instance)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return _unpickle_env, (self.state,)


def check_available(map_name: str) -> None:
    """Raise ``ImportError`` (one line with the install command) unless JAX and JaxMARL are
    installed; nothing is imported (``marlopt.envs.registry.check_env`` calls it before a run)."""
    for name in ("jax", "jaxmarl"):
        if importlib.util.find_spec(name) is None:
            raise missing(ModuleNotFoundError(f"No module named {name!r}"))


def make(map_name: str, **options: Any) -> SMAXEnv:
    """Build an SMAX map (see ``marlopt.envs.smax`` for the maps and ``options``)."""
    resolve_config(map_name, options)  # a bad map/option fails here, before JAX is imported
    return SMAXEnv(map_name, **options)

