"""The built-in ``games`` maps: tiny one-step matrix games, the MAGPO paper's CoordSum tasks and the
GPVD paper's predator-prey.

Matrix games (this module): every episode is a single step: every agent sees a constant
observation ``[1.0]``, acts once, the team gets the reward ``PAYOFFS[map][a_{n-1}, ..., a_1, a_0]``
(two agents: rows = agent 1, columns = agent 0) and the episode ends with ``terminated=True`` (a true
end: nothing to bootstrap). ``episode_limit`` is 1; the number of agents is the payoff's rank.

Maps:

- ``gpvd_matrix`` (GPVD paper's matrix game; rows agent B = index 1, columns agent A = index 0)::

      [[  8, -12, -12],
       [-12,   6,   0],
       [-12,   0,   6]]

  The optimum is the joint action (0, 0) = 8; value factorisation (QMIX/VDN) tends to settle on a
  suboptimal one (6), GPVD must find 8.
- ``pymarl2_matrix`` (PyMARL2's ``one_step_matrix_game``, ``src/envs/matrix_game/one_step_matrix_game.py``
  in github.com/hijkzzz/pymarl2; 2 agents, 3 actions)::

      [[ 12, -0.1, -0.1],
       [-0.1,   0,    0],
       [-0.1,   0,    0]]

  PyMARL2 reads ``payoff_values[a_0][a_1]`` (rows agent 0); the matrix is symmetric, so it is the
  same under marlopt's ``PAYOFFS[map][a_1, a_0]``. The optimum is (0, 0) = 12; PyMARL2's comment:
  "this non-monotonic matrix can be solved by qmix" (the miscoordination penalty is only -0.1).
  PyMARL2's observation and state are the one-hot of the step count, ``[1, 0]`` at the only
  decision (2 dims); marlopt's constant ``[1.0]`` carries the same (no) information.
- ``harl_example1`` (HARL's Example 1; actions {0, 1}): ``r(0,0)=0, r(0,1)=r(1,0)=2, r(1,1)=-1``.
  The optimum is 2 (agents pick different actions); simultaneous updates from ``π(0) > 0.6``
  can lower the return, sequential (HAPPO) updates do not.
- ``sum_to_10`` (MAGPO paper §3): 3 agents, actions {0..10}, reward 1 iff the actions sum to 10.
  A deterministic decentralised policy (``[4, 3, 3]``) is optimal; a joint policy that randomises
  agent 0 over {3, 4} and lets agent 2 compensate is optimal too, but cannot be distilled into
  independent policies (the failure of CTDS that MAGPO's band prevents).
- ``coordsum_3x10_30``, ``coordsum_3x30_50``, ``coordsum_5x20_80``, ``coordsum_8x15_100`` (MAGPO
  App. B; ``marlopt.envs.coordsum``): 100-step episodes, the agents' actions must sum to a random
  target while an opponent tries to guess agent 0's action.
- ``predator_prey`` (p = 0) and ``predator_prey_p2`` (p = -2) (GPVD's predator-prey, PyMARL2's
  ``stag_hunt``; ``marlopt.envs.predator_prey``): 8 predators catch 8 randomly moving prey on a
  10x10 grid, 200 steps, 5x5 local views; a capture needs two adjacent predators choosing catch
  together (+10, both frozen), a lone catch costs p.

The matrix games' state is the same constant, one row (``state_per_agent`` False). They have no
RNG: ``seed`` is accepted and ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marlopt.envs import coordsum, predator_prey
from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

_SUMS_OF_THREE = np.add.outer(np.add.outer(np.arange(11), np.arange(11)), np.arange(11))

# PAYOFFS[map][a_{n-1}, ..., a_0] (two agents: rows = agent index 1, columns = agent index 0). Read-only.
PAYOFFS: dict[str, np.ndarray] = {
    "gpvd_matrix": np.array([[8, -12, -12], [-12, 6, 0], [-12, 0, 6]], dtype=np.float32),
    "pymarl2_matrix": np.array([[12, -0.1, -0.1], [-0.1, 0, 0], [-0.1, 0, 0]], dtype=np.float32),
    "harl_example1": np.array([[0, 2], [2, -1]], dtype=np.float32),
    "sum_to_10": (_SUMS_OF_THREE == 10).astype(np.float32),
}
for _payoff in PAYOFFS.values():
    _payoff.setflags(write=False)

#: Every ``games`` map: the matrix games, the CoordSum maps of ``marlopt.envs.coordsum``, then the
#: predator-prey maps of ``marlopt.envs.predator_prey``.
MAPS = (*PAYOFFS, *coordsum.MAPS, *predator_prey.MAPS)


def optimal_value(map_name: str) -> float:
    """The best team reward of a map (the max payoff)."""
    return float(PAYOFFS[map_name].max())


class MatrixGameEnv(MultiAgentEnv):
    """A one-step cooperative matrix game of ``payoff.ndim`` agents (see the module docstring)."""

    def __init__(self, map_name: str) -> None:
        if map_name not in PAYOFFS:
            raise ValueError(f"unknown matrix game {map_name!r}; valid maps: {list(MAPS)}")
        self.map_name = map_name
        self.payoff = PAYOFFS[map_name]
        n_agents, n_actions = self.payoff.ndim, int(self.payoff.shape[0])
        self.spec = EnvSpec(
            n_agents=n_agents,
            obs_dim=1,
            state_dim=1,
            n_actions=n_actions,
            episode_limit=1,
            continuous=False,
            state_per_agent=False,
            has_won=False,
            agent_names=tuple(f"agent_{i}" for i in range(n_agents)),
        )
        self._done = True
        # Constant outputs, read-only so they can be shared between steps without copies.
        self._obs = np.ones((n_agents, 1), dtype=np.float32)
        self._state = np.ones((1, 1), dtype=np.float32)
        self._avail = np.ones((n_agents, n_actions), dtype=bool)
        self._active = np.ones(n_agents, dtype=bool)
        for array in (self._obs, self._state, self._avail, self._active):
            array.setflags(write=False)

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._done = False
        return self._obs, self._state, self._avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError("MatrixGameEnv.step called before reset() or after the episode ended")
        acts = np.asarray(actions).reshape(-1).tolist()
        n, a = self.spec.n_agents, self.spec.n_actions
        if len(acts) != n or not all(float(x).is_integer() and 0 <= x < a for x in acts):
            raise ValueError(f"{self.map_name} needs {n} actions in 0..{a - 1}, got {acts}")
        reward = float(self.payoff[tuple(int(x) for x in reversed(acts))])
        self._done = True
        info = {"active": self._active}
        return StepResult(self._obs, self._state, self._avail, reward, True, False, info)


def make(map_name: str, continuous: bool = False, **options: Any) -> MultiAgentEnv:
    """Build a ``games`` map (see ``MAPS``); the only option is ``continuous`` (must be False)."""
    if map_name not in MAPS:
        raise ValueError(f"unknown games map {map_name!r}; valid maps: {list(MAPS)}")
    if continuous:
        raise ValueError(f"map {map_name} has discrete actions only (continuous=True given)")
    if options:
        raise ValueError(f"unknown games option(s) {sorted(options)}; valid options: ['continuous']")
    if map_name in coordsum.MAPS:
        return coordsum.make(map_name)
    if map_name in predator_prey.MAPS:
        return predator_prey.make(map_name)
    return MatrixGameEnv(map_name)
