"""marlopt environments: the ``MultiAgentEnv`` and ``VectorEnv`` protocols, the env registry and
``ProcessVectorEnv``.

Light on purpose: importing ``marlopt.envs`` imports numpy only (no simulator, no torch, no JAX),
so spawned env workers stay small. Simulators load when ``make_env`` builds an env.

Layout: ``base`` (the protocols and their data types), ``registry`` (env name -> maker),
``common`` (helpers the wrappers share), ``vector/`` (``ProcessVectorEnv``), one wrapper module
or package per simulator (``mpe``, ``games``, ``grf``, ``smac``, ``smacv2``, ``smax/``), and
``sc2/`` (what the two StarCraft II wrappers share).
"""

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult, VecObs, VecStep, VectorEnv
from marlopt.envs.registry import ENV_MAKERS, env_fn, make_env
from marlopt.envs.vector import ProcessVectorEnv

__all__ = [
    "ENV_MAKERS",
    "EnvSpec",
    "MultiAgentEnv",
    "ProcessVectorEnv",
    "StepResult",
    "VecObs",
    "VecStep",
    "VectorEnv",
    "env_fn",
    "make_env",
]
