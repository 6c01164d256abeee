"""marlopt environments: the ``MultiAgentEnv`` protocol, the env registry and ``VectorEnv``.

Light on purpose: importing ``marlopt.envs`` imports numpy only (no simulator, no torch), so
spawned env workers stay small. Simulators load when ``make_env`` builds an env.
"""

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult
from marlopt.envs.registry import ENV_MAKERS, env_fn, make_env
from marlopt.envs.vector import VecObs, VecStep, VectorEnv

__all__ = [
    "ENV_MAKERS",
    "EnvSpec",
    "MultiAgentEnv",
    "StepResult",
    "VecObs",
    "VecStep",
    "VectorEnv",
    "env_fn",
    "make_env",
]
