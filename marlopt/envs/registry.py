"""The one environment registry: env name -> lazy ``"module:function"`` maker.

Simulators are imported only when an env is built (importing SMAC and SMACv2 together breaks
pysc2; workers must not pay for simulators they do not use). Each maker is
``make(map_name, **options) -> MultiAgentEnv`` and raises ``ValueError`` listing its maps for an
unknown map.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Mapping
from typing import Any

from marlopt.envs.base import MultiAgentEnv, VectorEnv

ENV_MAKERS: dict[str, str] = {
    "mpe": "marlopt.envs.mpe_jax:make",  # env.backend: mpe2 (marlopt.envs.mpe) | jax
    "games": "marlopt.envs.games:make",
    "smac": "marlopt.envs.smac:make",
    "smacv2": "marlopt.envs.smacv2:make",
    "grf": "marlopt.envs.grf:make",
    "smax": "marlopt.envs.smax:make",
}


def _resolve(env_name: str) -> Callable[..., MultiAgentEnv]:
    if env_name not in ENV_MAKERS:
        raise ValueError(f"unknown env {env_name!r}; valid envs: {sorted(ENV_MAKERS)}")
    module_name, _, function = ENV_MAKERS[env_name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:  # the wrapper itself is missing, not one of its dependencies
            raise ImportError(
                f"env {env_name!r} is registered ({ENV_MAKERS[env_name]}) but its wrapper "
                f"module {module_name} is not available in this marlopt version"
            ) from err
        raise
    return getattr(module, function)


#: Envs that also offer a natively batched vector env (``make_vector(map_name, n_envs, **options)``).
VECTOR_MAKERS: dict[str, str] = {
    "smax": "marlopt.envs.smax:make_vector",
    "mpe": "marlopt.envs.mpe_jax:make_vector",  # env.backend=jax only
}


def make_vector_env(env_name: str, map_name: str, options: Mapping[str, Any] | None, n_envs: int) -> VectorEnv:
    """The env's natively batched ``VectorEnv`` (``env.vector=batched``), where it has one; the other
    modes wrap single envs in ``marlopt.envs.vector.ProcessVectorEnv``."""
    import importlib

    if env_name not in VECTOR_MAKERS:
        raise ValueError(f"env.vector=batched: env={env_name} has no batched vector env "
                         f"(available for: {', '.join(sorted(VECTOR_MAKERS))}); use inproc or subproc")
    module_name, _, function = VECTOR_MAKERS[env_name].partition(":")
    return getattr(importlib.import_module(module_name), function)(map_name, n_envs, **dict(options or {}))


def check_env(env_name: str, map_name: str) -> None:
    """Fail early, in one line, when ``env_name``'s simulator is not installed.

    Imports the wrapper module (which imports its simulator lazily) and calls its optional
    ``check_available(map_name)``, which raises ``ImportError`` naming the fix; wrappers whose
    simulator is a hard dependency (MPE) need none.
    """
    import importlib

    module_name = ENV_MAKERS[env_name].partition(":")[0] if env_name in ENV_MAKERS else None
    if module_name is None:
        raise ValueError(f"unknown env {env_name!r}; valid envs: {sorted(ENV_MAKERS)}")
    check = getattr(importlib.import_module(module_name), "check_available", None)
    if check is not None:
        check(map_name)


def make_env(
    env_name: str, map_name: str, options: Mapping[str, Any] | None = None
) -> MultiAgentEnv:
    """Build ``env_name``'s map ``map_name`` with ``options`` (the maker's keyword arguments)."""
    return _resolve(env_name)(map_name, **dict(options or {}))


def env_fn(
    env_name: str, map_name: str, options: Mapping[str, Any] | None = None
) -> Callable[[], MultiAgentEnv]:
    """A picklable zero-argument env factory (``functools.partial``) for spawn workers.

    The env name is checked now (a typo fails here, not in a worker); the simulator is not imported.
    """
    if env_name not in ENV_MAKERS:
        raise ValueError(f"unknown env {env_name!r}; valid envs: {sorted(ENV_MAKERS)}")
    return functools.partial(make_env, env_name, map_name, dict(options or {}))
