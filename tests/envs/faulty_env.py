"""Small test envs for the ProcessVectorEnv tests (``tests/envs/vector``) and the runner's fault
tests, importable by spawn workers (no torch, numpy only).

``ToyEnv`` is a seeded random env that exercises everything the vector env must carry: an
agent-specific state (``state_per_agent``), avail masks that change, agents that die (``active``),
early termination with wins, truncation at the limit, and an RNG that continues across resets.
Its ``fail`` option injects crashes: ``"raise"`` (an exception in ``step``), ``"raise_reset"``
(an exception in the ``reset`` after the failing step's episode), ``"hang"`` (sleeps in
``step``), ``"exit"`` (the process dies in ``step``) and ``"slow"`` (one 0.6 s step).
``fail_at`` is the step of the instance's life at which it fails; with ``once_path`` it fails only
if that file does not exist yet (and creates it), so that the rebuilt env (in any process)
behaves. ``unavailable_taken`` counts the actions an agent took that its last ``avail`` did not
allow (the off-policy runner's masking tests read it).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult


class ToyEnv(MultiAgentEnv):
    def __init__(
        self,
        n_agents: int = 3,
        n_actions: int = 4,
        episode_limit: int = 6,
        fail: str | None = None,
        fail_at: int = 3,
        once_path: str | None = None,
        picklable: bool = True,
    ) -> None:
        self.picklable = picklable
        self.spec = EnvSpec(
            n_agents=n_agents,
            obs_dim=5,
            state_dim=4,
            n_actions=n_actions,
            episode_limit=episode_limit,
            state_per_agent=True,
            has_won=True,
        )
        self.fail, self.fail_at, self.once_path = fail, fail_at, once_path
        self.rng = np.random.default_rng()
        self.life_steps = 0
        self.t = 0
        self.x = np.zeros((n_agents, 4))
        self.alive = np.ones(n_agents, dtype=bool)
        self.fail_reset_next = False
        self.avail = np.ones((n_agents, n_actions), dtype=bool)
        self.unavailable_taken = 0

    def _should_fail(self) -> bool:
        if self.fail is None or self.life_steps != self.fail_at:
            return False
        if self.once_path is None:
            return True
        try:
            fd = os.open(self.once_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        os.close(fd)
        return True

    def _outputs(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.spec.n_agents
        obs = np.concatenate([self.x, np.full((n, 1), self.t)], axis=1).astype(np.float32)
        obs[~self.alive] = 0.0
        state = (self.x + self.x.sum(0, keepdims=True)).astype(np.float32)
        avail = self.rng.random((n, self.spec.n_actions)) < 0.7
        avail[:, 0] = True
        avail[~self.alive] = False
        avail[~self.alive, 0] = True  # dead agents: no-op only
        self.avail = avail
        return obs, state, avail

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.fail_reset_next:
            self.fail_reset_next = False
            raise RuntimeError("injected reset failure")
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.t = 0
        self.x = self.rng.normal(size=self.x.shape)
        self.alive = np.ones(self.spec.n_agents, dtype=bool)
        return self._outputs()

    def step(self, actions: np.ndarray) -> StepResult:
        self.life_steps += 1
        if self._should_fail():
            if self.fail == "raise":
                raise RuntimeError("injected step failure")
            if self.fail == "hang":
                time.sleep(3600)
            if self.fail == "slow":
                time.sleep(0.6)
            if self.fail == "exit":
                os._exit(3)
            if self.fail == "raise_reset":
                self.fail_reset_next = True
                self.t = self.spec.episode_limit - 1  # end this episode now; its reset fails
        a = np.asarray(actions, dtype=np.float64).reshape(self.spec.n_agents, -1)
        if a.shape[1] == 1:  # discrete actions
            self.unavailable_taken += int((~self.avail[np.arange(self.spec.n_agents), a[:, 0].astype(int)]).sum())
        self.t += 1
        self.x = 0.9 * self.x + 0.1 * a[:, :1] + 0.05 * self.rng.normal(size=self.x.shape)
        reward = float(self.x[:, 0].sum() + 0.1 * a.sum())
        if self.t > 1:
            self.alive &= self.rng.random(self.spec.n_agents) > 0.1
        terminated = bool(self.rng.random() < 0.15)
        truncated = (not terminated) and self.t >= self.spec.episode_limit
        info: dict[str, Any] = {"active": self.alive.copy()}
        if terminated or truncated:
            info["won"] = bool(terminated and self.rng.random() < 0.5)
        obs, state, avail = self._outputs()
        return StepResult(obs, state, avail, reward, terminated, truncated, info)


    def get_state(self) -> bytes | None:
        return super().get_state() if self.picklable else None


def make_toy(**kwargs: Any) -> ToyEnv:
    return ToyEnv(**kwargs)


def make(map_name: str, continuous: bool = False, **options: Any) -> ToyEnv:
    """The registry-style maker (``map_name`` and ``continuous`` ignored)."""
    return ToyEnv(**options)
