"""The MultiAgentEnv protocol every marlopt environment implements (SMAC-shaped, numpy only).

Shapes (N agents):
- ``reset(seed) -> (obs[N, obs_dim], state[S, state_dim], avail[N, n_actions])`` where ``S`` is
  ``N`` for an agent-specific state (``spec.state_per_agent``) and ``1`` for one global state.
- ``step(actions) -> StepResult`` with the team reward (a float), ``terminated`` (a true end of the
  episode: no bootstrapping) and ``truncated`` (a time limit: the runner bootstraps from the final
  state), and ``info`` with ``active[N]`` (alive mask after the step) and ``won`` where the env has
  wins.
- Discrete actions: ``actions`` is int ``[N]``; ``avail`` is the bool available-action mask.
- Continuous (Box) actions: ``actions`` is float ``[N, n_actions]``; ``avail`` marks which action
  dimensions are real for each agent (heterogeneous agents are padded to the largest action
  dimension, and the policy's log-probability sums only over real dimensions).

This module must import nothing heavier than numpy: worker processes import it.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np


@dataclass(frozen=True)
class EnvSpec:
    """Static description of a multi-agent env, all the runner and the models need to know."""

    n_agents: int
    obs_dim: int
    state_dim: int
    n_actions: int  # discrete: number of actions; continuous: (padded) action dimensions
    episode_limit: int
    continuous: bool = False
    state_per_agent: bool = False
    has_won: bool = False
    action_low: tuple[float, ...] = ()  # continuous only, length n_actions
    action_high: tuple[float, ...] = ()
    agent_names: tuple[str, ...] = field(default=())

    @property
    def state_rows(self) -> int:
        return self.n_agents if self.state_per_agent else 1


class StepResult(NamedTuple):
    obs: np.ndarray  # [N, obs_dim] float32
    state: np.ndarray  # [S, state_dim] float32
    avail: np.ndarray  # [N, n_actions] bool
    reward: float  # team reward
    terminated: bool
    truncated: bool
    info: dict[str, Any]  # "active": bool[N]; "won": bool where spec.has_won


class MultiAgentEnv(ABC):
    """Base class of marlopt environments. Subclasses set ``self.spec`` in ``__init__``."""

    spec: EnvSpec

    @abstractmethod
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Start an episode; ``seed`` re-seeds the env's RNG, ``None`` continues it."""

    @abstractmethod
    def step(self, actions: np.ndarray) -> StepResult:
        """Advance one step with one action per agent."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release simulator resources."""

    def get_state(self) -> bytes | None:
        """Serialise the full env state (mid-episode included) for exact resume, or ``None``.

        The default pickles the whole env; simulators that cannot be pickled (StarCraft II)
        return ``None`` and are reset on resume instead.
        """
        try:
            return pickle.dumps(self)
        except Exception:  # noqa: BLE001 - any pickling failure means "not restorable"
            return None
