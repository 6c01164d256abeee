"""``SMAXEnv``: one SMAX battle behind the ``MultiAgentEnv`` protocol, and its maker.

``SMAXEnv`` pickles as its configuration, JAX key and SMAX state leaves (numpy), mid-episode
included (``marlopt.envs.jax_core.JaxEnv``); ``EnvBlob`` writes the same pickle from a slice
of a batched state, so ``SmaxVectorEnv`` checkpoints hold ``SMAXEnv`` pickles too.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from marlopt.envs.base import StepResult
from marlopt.envs.jax_core import JaxEnv
from marlopt.envs.smax.config import resolve_config
from marlopt.envs.smax.core import core_for
from marlopt.envs.smax.loading import missing

#: Pickles name SMAX envs by the package's path (``marlopt.envs.smax.SMAXEnv`` and
#: ``marlopt.envs.smax._unpickle_env``, both exported there): checkpoints written before the
#: package was split into modules hold that path, and it stays valid whatever moves inside.
PICKLE_MODULE = "marlopt.envs.smax"


class SMAXEnv(JaxEnv):
    """One SMAX battle behind the ``MultiAgentEnv`` protocol (see ``marlopt.envs.smax``)."""

    def __init__(self, map_name: str = "3m", **options: Any) -> None:
        config = resolve_config(map_name, options)
        super().__init__(config, core_for(config))  # the state: JaxMARL's HeuristicEnemySMAX state pytree

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        core = self._core
        self._key, self._state, obs, state, avail, _ = core.reset(self._start_key(seed))
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

