"""``MPEJaxEnv``: one JaxMARL MPE episode behind the ``MultiAgentEnv`` protocol, and ``make``, the
registered maker of ``env=mpe`` that picks the backend.

``MPEJaxEnv`` pickles as its configuration, JAX key and state leaves (numpy), mid-episode included
(``marlopt.envs.jax_core.JaxEnv``); ``EnvBlob`` writes the same pickle from a slice of a
batched state, so ``MpeJaxVectorEnv`` checkpoints hold ``MPEJaxEnv`` pickles (one per env, the
vector env checkpoint format).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from marlopt.envs.base import MultiAgentEnv, StepResult
from marlopt.envs.jax_core import JaxEnv
from marlopt.envs.mpe_jax.core import MpeJaxConfig, check_jax_available, core_for

#: The simulators ``env=mpe`` can run on (``env.backend``): mpe2 (``marlopt.envs.mpe``, one env per
#: object, any vector mode) or JaxMARL's JAX port (``marlopt.envs.mpe_jax``, batched).
BACKENDS = ("mpe2", "jax")


def resolve_config(map_name: str, options: dict[str, Any]) -> MpeJaxConfig:
    """Check ``map_name`` and the mpe2 wrapper's ``options`` (its own checks and messages)."""
    from marlopt.envs.mpe import _OPTIONS, MAPS, _raw_kwargs

    if map_name not in MAPS:
        raise ValueError(f"unknown MPE map {map_name!r}; valid maps: {sorted(MAPS)}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown MPE option(s) {unknown}; valid options: {list(_OPTIONS)}")
    cfg = MpeJaxConfig(map_name, **options)
    _raw_kwargs(map_name, cfg.n_agents, cfg.continuous, cfg.max_cycles, cfg.local_ratio,
                cfg.team_reward)  # ValueError
    return dataclasses.replace(
        cfg, n_agents=None if cfg.n_agents is None else int(cfg.n_agents), continuous=bool(cfg.continuous),
        max_cycles=int(cfg.max_cycles), local_ratio=None if cfg.local_ratio is None else float(cfg.local_ratio),
    )  # fmt: skip


class MPEJaxEnv(JaxEnv):
    """One MPE episode on JaxMARL's JAX port; the same outputs as ``marlopt.envs.mpe.MPEEnv``
    (within float32 rounding) for the same world state and actions. Seeds differ: JAX's PRNG
    (``reset(seed)``: the key of the 64-bit seed; ``None`` continues the key) draws other worlds."""

    def __init__(self, map_name: str = "simple_spread", **options: Any) -> None:
        config = resolve_config(map_name, options)
        super().__init__(config, core_for(config))

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        core = self._core
        self._key, self._state, obs, state = core.reset(self._start_key(seed))
        self._needs_reset = False
        return np.asarray(obs), np.asarray(state), core.avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("MPEJaxEnv.step called before reset() or after the episode ended")
        core = self._core
        acts = core.check_actions(actions, core.action_shape)
        self._key, self._state, obs, state, reward, terminated, truncated = core.step(self._key, self._state, acts)
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        return StepResult(np.asarray(obs), np.asarray(state), core.avail, float(reward), terminated,
                          truncated, {"active": core.active})  # fmt: skip


def _unpickle_env(state: dict[str, Any]) -> MPEJaxEnv:
    env = MPEJaxEnv.__new__(MPEJaxEnv)
    env.__setstate__(state)
    return env


class EnvBlob:
    """Pickles as an ``MPEJaxEnv`` in the given state (built without an ``MPEJaxEnv`` instance)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return _unpickle_env, (self.state,)


def split_backend(options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(backend, the other options)``; ``ValueError`` naming the valid backends."""
    rest = dict(options)
    backend = str(rest.pop("backend", None) or "mpe2")
    if backend not in BACKENDS:
        raise ValueError(f"unknown MPE backend {backend!r}; valid: {list(BACKENDS)}")
    return backend, rest


def make(map_name: str, **options: Any) -> MultiAgentEnv:
    """``env=mpe``'s registered maker: ``backend`` (``"mpe2"`` default | ``"jax"``) picks the
    simulator; the other options are ``marlopt.envs.mpe.make``'s."""
    backend, rest = split_backend(options)
    if backend == "mpe2":
        from marlopt.envs.mpe import make as make_mpe2

        return make_mpe2(map_name, **rest)
    resolve_config(map_name, rest)  # a bad map/option fails here, before JAX is imported
    check_jax_available()
    return MPEJaxEnv(map_name, **rest)
