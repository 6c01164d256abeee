"""Tiny deterministic one-step matrix games: built-in envs for fast learning tests.

Every episode is a single step: both agents see a constant observation ``[1.0]``, act once, get
the team reward ``PAYOFFS[map][a_1, a_0]`` (rows = agent 1, columns = agent 0) and the episode
ends with ``terminated=True`` (a true end: nothing to bootstrap). ``episode_limit`` is 1.

Maps:

- ``gpvd_matrix`` (GPVD paper's matrix game; rows agent B = index 1, columns agent A = index 0)::

      [[  8, -12, -12],
       [-12,   6,   0],
       [-12,   0,   6]]

  The optimum is the joint action (0, 0) = 8; value factorisation (QMIX/VDN) tends to settle on a
  suboptimal one (6), GPVD must find 8.
- ``harl_example1`` (HARL's Example 1; actions {0, 1}): ``r(0,0)=0, r(0,1)=r(1,0)=2, r(1,1)=-1``.
  The optimum is 2 (agents pick different actions); simultaneous updates from ``π(0) > 0.6``
  can lower the return, sequential (HAPPO) updates do not.

The state is the same constant, one row (``state_per_agent`` False). There is no RNG: ``seed`` is
accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

# PAYOFFS[map][a_1, a_0]: rows = agent index 1, columns = agent index 0. Read-only.
PAYOFFS: dict[str, np.ndarray] = {
    "gpvd_matrix": np.array([[8, -12, -12], [-12, 6, 0], [-12, 0, 6]], dtype=np.float32),
    "harl_example1": np.array([[0, 2], [2, -1]], dtype=np.float32),
}
for _payoff in PAYOFFS.values():
    _payoff.setflags(write=False)

MAPS = tuple(PAYOFFS)


def optimal_value(map_name: str) -> float:
    """The best team reward of a map (the max payoff)."""
    return float(PAYOFFS[map_name].max())


class MatrixGameEnv(MultiAgentEnv):
    """A one-step, two-agent cooperative matrix game (see the module docstring)."""

    def __init__(self, map_name: str) -> None:
        if map_name not in PAYOFFS:
            raise ValueError(f"unknown matrix game {map_name!r}; valid maps: {list(MAPS)}")
        self.map_name = map_name
        self.payoff = PAYOFFS[map_name]
        n_actions = int(self.payoff.shape[0])
        self.spec = EnvSpec(
            n_agents=2,
            obs_dim=1,
            state_dim=1,
            n_actions=n_actions,
            episode_limit=1,
            continuous=False,
            state_per_agent=False,
            has_won=False,
            agent_names=("agent_0", "agent_1"),
        )
        self._done = True
        # Constant outputs, read-only so they can be shared between steps without copies.
        self._obs = np.ones((2, 1), dtype=np.float32)
        self._state = np.ones((1, 1), dtype=np.float32)
        self._avail = np.ones((2, n_actions), dtype=bool)
        self._active = np.ones(2, dtype=bool)
        for array in (self._obs, self._state, self._avail, self._active):
            array.setflags(write=False)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._done = False
        return self._obs, self._state, self._avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError("MatrixGameEnv.step called before reset() or after the episode ended")
        acts = np.asarray(actions).reshape(-1).tolist()
        n = self.spec.n_actions
        if len(acts) != 2 or not all(float(a).is_integer() and 0 <= a < n for a in acts):
            raise ValueError(f"{self.map_name} needs 2 actions in 0..{n - 1}, got {acts}")
        reward = float(self.payoff[int(acts[1]), int(acts[0])])
        self._done = True
        info = {"active": self._active}
        return StepResult(self._obs, self._state, self._avail, reward, True, False, info)


def make(map_name: str, continuous: bool = False, **options: Any) -> MatrixGameEnv:
    """Build a matrix game; the only option is ``continuous`` (must be False)."""
    if map_name not in PAYOFFS:
        raise ValueError(f"unknown matrix game {map_name!r}; valid maps: {list(MAPS)}")
    if continuous:
        raise ValueError(f"map {map_name} has discrete actions only (continuous=True given)")
    if options:
        raise ValueError(f"unknown games option(s) {sorted(options)}; valid options: ['continuous']")
    return MatrixGameEnv(map_name)
