"""The two protocols of marlopt environments (SMAC-shaped, numpy only).

``MultiAgentEnv``: one environment. Shapes (N agents):

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

``VectorEnv``: E environments stepped together, with stacked outputs (``VecObs``, ``VecStep``) and
automatic resets. Two implementations: ``marlopt.envs.vector.ProcessVectorEnv`` (any
``MultiAgentEnv``, in this process and/or in worker processes, crash restarts) and
``marlopt.envs.smax.SmaxVectorEnv`` (SMAX battles batched in one jitted JAX call). The runner and
the evaluation use only the members of the protocol.

This module must import nothing heavier than numpy: worker processes import it.
"""

from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol, runtime_checkable

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
    """What ``MultiAgentEnv.step`` returns (N agents)."""

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


# ---------------------------------------------------------------------------------------------
# Vector envs. E envs, N agents, S = spec.state_rows, O/D/A = spec.obs_dim/state_dim/n_actions.
# ---------------------------------------------------------------------------------------------
class VecObs(NamedTuple):
    """Stacked inputs of the policy, returned by ``reset`` and ``set_state``."""

    obs: np.ndarray  # [E, N, O] float32
    state: np.ndarray  # [E, S, D] float32
    avail: np.ndarray  # [E, N, A] bool
    active: np.ndarray  # [E, N] bool


class VecStep(NamedTuple):
    """One step of all E envs.

    ``obs``, ``state``, ``avail``, ``active``: the next inputs of the policy, *already reset* for
    envs whose episode ended (or that were restarted). ``final_state``/``final_active``: what the
    step reached before any auto-reset (bootstrap truncated episodes from ``final_state``);
    ``final_obs``/``final_avail``: the agents' view of it (an off-policy learner's target reads the
    agents' utilities there).
    ``won``, ``episode_return`` (the sum of the episode's team rewards) and ``episode_length`` are
    valid where an episode ended (``terminated | truncated``) and zero elsewhere. ``dropped``: the
    env crashed and was restarted this step; its episode in flight is lost (``reward`` 0,
    ``terminated``/``truncated`` False: never store it as a terminal transition).
    """

    obs: np.ndarray  # [E, N, O] f32, after auto-reset
    state: np.ndarray  # [E, S, D] f32, after auto-reset
    avail: np.ndarray  # [E, N, A] bool, after auto-reset
    active: np.ndarray  # [E, N] bool, after auto-reset
    reward: np.ndarray  # [E] f32, the team reward of the step
    terminated: np.ndarray  # [E] bool
    truncated: np.ndarray  # [E] bool
    dropped: np.ndarray  # [E] bool: crashed and restarted this step; episode in flight lost
    final_state: np.ndarray  # [E, S, D] f32, before auto-reset (valid where terminated|truncated)
    final_active: np.ndarray  # [E, N] bool, before auto-reset
    final_obs: np.ndarray  # [E, N, O] f32, before auto-reset
    final_avail: np.ndarray  # [E, N, A] bool, before auto-reset
    won: np.ndarray  # [E] bool (valid where an episode ended and spec.has_won)
    episode_return: np.ndarray  # [E] f32 (valid where an episode ended)
    episode_length: np.ndarray  # [E] int64 (valid where an episode ended)
    restarts: int  # total env restarts so far


@runtime_checkable
class VectorEnv(Protocol):
    """E envs stepped together, stacked, auto-reset: what the runner and the evaluation use.

    After an episode ends, env ``i`` is reset without a seed: it continues its own random stream,
    seeded once by ``reset(seeds)``. Same seeds and same actions give the same outputs.
    """

    #: The spec every one of the E envs shares.
    spec: EnvSpec
    #: E, the number of envs.
    num_envs: int
    #: ``[E]`` bool: which envs the last ``set_state`` reset instead of restoring (their partial
    #: episodes are lost; start new episodes there).
    last_restore_reset: np.ndarray

    @property
    def restarts(self) -> int:
        """Env restarts so far (crash recovery; 0 where nothing can crash)."""
        ...

    def reset(self, seeds: Sequence[int | None]) -> VecObs:
        """Reset env ``i`` with ``seeds[i]`` (``len(seeds) == E``); the ``[E, ...]`` inputs."""
        ...

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env: ``actions`` int ``[E, N]``, or float ``[E, N, A]`` if continuous."""
        ...

    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot (plain dicts, lists, numbers, bytes, numpy arrays) for exact resume."""
        ...

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot; the ``[E, ...]`` inputs to continue from."""
        ...

    def close(self) -> None:
        """Release workers, simulators and buffers (idempotent)."""
        ...
