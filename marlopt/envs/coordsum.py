"""CoordSum, the MAGPO paper's coordination benchmark: built-in ``games`` maps (numpy only).

``coordsum_<n>x<A>_<max_target>`` (MAGPO App. B, ``CoordSum-<n>x<A>-<max_target>``): maps
``coordsum_3x10_30``, ``coordsum_3x30_50``, ``coordsum_5x20_80``, ``coordsum_8x15_100``.

- 100 steps per episode. At every step ``t`` a target is drawn uniformly from {0..max_target}.
- Observation, the same for every agent: the one-hot of the current target (``max_target + 1``
  dims) followed by ``t / episode_limit``; ``obs_dim = max_target + 2``. The state is one row equal
  to the observation (``state_per_agent`` False). All actions are always available; nobody dies.
- Actions: each agent an integer in {0..A-1}. Team reward: if the actions sum to the target, 2.0
  if an opponent's guess of agent 0's action is wrong and 1.0 if it is right; else 0.0.
- The opponent keeps, per target value, the counts of agent 0's past actions at the steps with
  that target, and guesses the most frequent one.
- The episode ends after ``episode_limit`` (100) steps with ``truncated=True`` (a time limit: the
  learner bootstraps), never ``terminated``. The final observation shows a freshly drawn target and
  ``t / episode_limit = 1``.

Choices the paper leaves open (docs/algorithms/magpo.md, "CoordSum"):

- the opponent's history is per episode (cleared by ``reset``);
- before any history for the current target the opponent makes no guess, which counts as wrong
  (reward 2.0 on a correct sum);
- ties go to the smallest action;
- the current step's action joins the history *after* its reward is computed.

Randomness: ``reset(seed)`` re-seeds the env's ``np.random.default_rng(seed)``; ``reset(None)``
continues its stream (fresh entropy if it was never seeded), so an env is deterministic given its
first seed. The paper's Table 1 returns (MAGPO, CTDS, MAPPO) and a uniform random policy's return
are in docs/algorithms/magpo.md.
"""

from __future__ import annotations

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

#: CoordSum map name -> (n_agents, n_actions, max_target), the paper's four tasks.
COORDSUM_MAPS: dict[str, tuple[int, int, int]] = {
    "coordsum_3x10_30": (3, 10, 30),
    "coordsum_3x30_50": (3, 30, 50),
    "coordsum_5x20_80": (5, 20, 80),
    "coordsum_8x15_100": (8, 15, 100),
}
MAPS = tuple(COORDSUM_MAPS)


def _int_actions(actions: np.ndarray, n_agents: int, n_actions: int, name: str) -> np.ndarray:
    """``actions`` as int64 ``[n_agents]``, or a one-line ValueError."""
    acts = np.asarray(actions).reshape(-1)
    if acts.shape[0] == n_agents and acts.dtype.kind in "iu":
        if acts.min() >= 0 and acts.max() < n_actions:
            return acts.astype(np.int64, copy=False)
    elif acts.shape[0] == n_agents and acts.dtype.kind == "f":
        if np.all(acts == np.floor(acts)) and acts.min() >= 0 and acts.max() < n_actions:
            return acts.astype(np.int64)
    raise ValueError(f"{name} needs {n_agents} integer actions in 0..{n_actions - 1}, got {acts.tolist()}")


def _readonly(*arrays: np.ndarray) -> None:
    for array in arrays:
        array.setflags(write=False)


class CoordSumEnv(MultiAgentEnv):
    """CoordSum-<n_agents>x<n_actions>-<max_target> (see the module docstring)."""

    def __init__(self, n_agents: int, n_actions: int, max_target: int, episode_limit: int = 100) -> None:
        if n_agents < 1 or n_actions < 1 or max_target < 0 or episode_limit < 1:
            raise ValueError(f"CoordSum needs n_agents >= 1, n_actions >= 1, max_target >= 0 and "
                             f"episode_limit >= 1, got {n_agents}, {n_actions}, {max_target}, {episode_limit}")
        self.n_agents, self.n_actions, self.max_target = n_agents, n_actions, max_target
        self.name = f"coordsum_{n_agents}x{n_actions}_{max_target}"
        self.spec = EnvSpec(
            n_agents=n_agents,
            obs_dim=max_target + 2,
            state_dim=max_target + 2,
            n_actions=n_actions,
            episode_limit=episode_limit,
            continuous=False,
            state_per_agent=False,
            has_won=False,
            agent_names=tuple(f"agent_{i}" for i in range(n_agents)),
        )
        self._rng: np.random.Generator | None = None
        # counts[target, action]: agent 0's actions at this episode's steps with that target.
        self.counts = np.zeros((max_target + 1, n_actions), dtype=np.int64)
        self._targets = np.zeros(episode_limit + 1, dtype=np.int64)  # one per step + the final obs
        self._t = 0
        self._done = True
        self._avail = np.ones((n_agents, n_actions), dtype=bool)
        self._active = np.ones(n_agents, dtype=bool)
        _readonly(self._avail, self._active)

    @property
    def target(self) -> int:
        """The current step's target."""
        return int(self._targets[self._t])

    def guess(self, target: int) -> int | None:
        """The opponent's guess of agent 0's action for ``target``: the most frequent past action
        (ties to the smallest), ``None`` before any history for that target."""
        row = self.counts[target]
        return int(row.argmax()) if row.any() else None

    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        obs = np.zeros((self.n_agents, self.max_target + 2), dtype=np.float32)
        obs[:, self._targets[self._t]] = 1.0
        obs[:, -1] = self._t / self.spec.episode_limit
        return obs, obs[:1].copy()

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        self._targets = self._rng.integers(0, self.max_target + 1, size=self.spec.episode_limit + 1)
        self.counts[:] = 0
        self._t = 0
        self._done = False
        obs, state = self._observe()
        return obs, state, self._avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError("CoordSumEnv.step called before reset() or after the episode ended")
        acts = _int_actions(actions, self.n_agents, self.n_actions, self.name)
        target, a0 = int(self._targets[self._t]), int(acts[0])
        reward = 0.0
        if int(acts.sum()) == target:
            reward = 1.0 if self.guess(target) == a0 else 2.0
        self.counts[target, a0] += 1  # after the reward: the opponent cannot see the current action
        self._t += 1
        truncated = self._t >= self.spec.episode_limit
        self._done = truncated
        obs, state = self._observe()
        return StepResult(obs, state, self._avail, reward, False, truncated, {"active": self._active})


def make(map_name: str) -> MultiAgentEnv:
    """Build a CoordSum map (options are checked by ``marlopt.envs.games.make``)."""
    if map_name not in MAPS:
        raise ValueError(f"unknown CoordSum map {map_name!r}; valid maps: {list(MAPS)}")
    return CoordSumEnv(*COORDSUM_MAPS[map_name])
