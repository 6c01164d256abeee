"""``EnvGroup``: a contiguous slice of the envs, stepped in one process, with auto-reset and crash
restarts. The process vector env steps its own slice with one (modes ``inproc`` and ``hybrid``),
and every worker process owns one (``worker.worker_main``): one loop, whichever process runs it.

An exception inside ``env.step`` / ``env.reset`` closes the env, rebuilds it from its ``env_fn`` and
resets it with a seed derived from its base seed (``derive_seed``); the step is marked ``dropped``.
A crash in the auto-reset *after* a completed episode keeps that episode (reported as ended, not
dropped). Every rebuild counts as one restart; beyond the group's budget it gives up (``GiveUp``).
"""

from __future__ import annotations

import logging
import pickle
import traceback
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv
from marlopt.envs.common import derive_seed
from marlopt.envs.vector.wire import ResetArrays, StepArrays, alloc, reset_layout, step_layout, zeros

log = logging.getLogger(__name__)

#: Tells the seeds of restarted envs apart from other derived seeds (b"marl").
RESTART_SEED_TAG = 0x6D61726C


class GiveUp(RuntimeError):
    """More restarts than ``max_restarts``: the vector env stops with this error."""


def give_up_message(max_restarts: int, last_error: str) -> str:
    return (
        f"ProcessVectorEnv gave up: more than max_restarts={max_restarts} restarts "
        f"(env rebuilds + worker respawns); last error:\n{last_error}"
    )


class GroupState(NamedTuple):
    """The group's part of a vector env checkpoint (one entry per env)."""

    blobs: list[bytes | None]  # MultiAgentEnv.get_state()
    episode_return: list[float]  # of the episode in flight, so far
    episode_length: list[int]
    seeds: list[int | None]  # base seeds


class Restored(NamedTuple):
    """What ``EnvGroup.set_state`` gives: which envs were reset instead of restored, and their
    fresh ``obs``/``state``/``avail`` (zeros for the restored envs)."""

    reset_mask: np.ndarray  # [n] bool
    obs: np.ndarray
    state: np.ndarray
    avail: np.ndarray


def all_dropped(reset: ResetArrays, n_agents: int) -> StepArrays:
    """The step outputs of envs that all restarted (their worker was lost and respawned):
    every env dropped, continuing from the fresh episodes of ``reset``."""
    n = len(reset.obs)
    return StepArrays(
        obs=reset.obs, state=reset.state, avail=reset.avail, active=np.ones((n, n_agents), dtype=bool),
        reward=np.zeros(n, dtype=np.float32), terminated=np.zeros(n, dtype=bool),
        truncated=np.zeros(n, dtype=bool), dropped=np.ones(n, dtype=bool),
        final_state=reset.state.copy(), final_active=np.ones((n, n_agents), dtype=bool),
        final_obs=reset.obs.copy(), final_avail=reset.avail.copy(),
        won=np.zeros(n, dtype=bool), episode_return=np.zeros(n, dtype=np.float32),
        episode_length=np.zeros(n, dtype=np.int64),
    )  # fmt: skip


class EnvGroup:
    """Envs ``[first_index, first_index + len(env_fns))`` of a vector env, stepped in this process.

    ``max_restarts`` is this group's own restart budget (its owner checks the total); ``limit`` is
    the vector env's ``max_restarts``, named in the give-up message. ``generation`` counts the
    respawns of the worker that owns the group and enters the derived seeds.
    """

    def __init__(
        self,
        env_fns: Sequence[Callable[[], MultiAgentEnv]],
        first_index: int,
        max_restarts: int,
        generation: int = 0,
        limit: int | None = None,
    ) -> None:
        self.env_fns = list(env_fns)
        self.envs: list[MultiAgentEnv] = []
        try:
            for fn in self.env_fns:
                self.envs.append(fn())
        except BaseException:
            self.close()
            raise
        self.spec: EnvSpec = self.envs[0].spec
        for i, env in enumerate(self.envs):
            if env.spec != self.spec:
                self.close()
                raise ValueError(
                    f"env {first_index + i} has spec {env.spec}, env {first_index} has {self.spec}"
                )
        self.n = len(self.envs)
        self.layout = step_layout(self.spec)
        self.first = first_index
        self.generation = generation
        self.max_restarts = max_restarts
        self.limit = max_restarts if limit is None else limit
        self.restarts = 0
        self.last_error = ""
        self.seeds: list[int | None] = [None] * self.n
        self.serial = [0] * self.n
        self.ep_return = [0.0] * self.n
        self.ep_length = [0] * self.n

    def _derived_seed(self, i: int) -> int:
        return derive_seed(self.seeds[i], self.first + i, self.generation, self.serial[i],
                           tag=RESTART_SEED_TAG)  # fmt: skip

    # -- crash handling -----------------------------------------------------------------------
    def _restart(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Rebuild env ``i`` after an exception (call it from the ``except`` block)."""
        self.last_error = traceback.format_exc()
        last_line = (self.last_error.strip().splitlines() or ["?"])[-1]
        log.warning("env %d crashed (%s); rebuilding it", self.first + i, last_line)
        while True:
            self.restarts += 1
            if self.restarts > self.max_restarts:
                raise GiveUp(give_up_message(self.limit, self.last_error))
            try:
                self.envs[i].close()
            except Exception:  # noqa: BLE001 - a crashed simulator may fail to close
                pass
            try:
                env = self.env_fns[i]()
                self.envs[i] = env
                self.serial[i] += 1
                out = env.reset(self._derived_seed(i))
                break
            except Exception:  # noqa: BLE001 - retry (counted) until the budget is spent
                self.last_error = traceback.format_exc()
        self.ep_return[i] = 0.0
        self.ep_length[i] = 0
        return out

    # -- commands -----------------------------------------------------------------------------
    def reset(self, seeds: Sequence[int | None], derive: bool = False) -> ResetArrays:
        """Reset every env with its seed (``derive``: with a seed derived from it, after a respawn)."""
        out = alloc(self.n, reset_layout(self.layout))
        for i in range(self.n):
            self.seeds[i] = None if seeds[i] is None else int(seeds[i])  # type: ignore[arg-type]
            seed = self.seeds[i]
            if derive:
                self.serial[i] += 1
                seed = self._derived_seed(i)
            try:
                o, s, a = self.envs[i].reset(seed)
            except Exception:  # noqa: BLE001
                o, s, a = self._restart(i)
            out.obs[i], out.state[i], out.avail[i] = o, s, a
            self.ep_return[i] = 0.0
            self.ep_length[i] = 0
        return out

    def step(self, actions: np.ndarray, out: StepArrays | None = None) -> StepArrays:
        """Step every env with ``actions[i]``; fill ``out`` (this slice's arrays; fresh if None)."""
        if out is None:
            out = alloc(self.n, self.layout)
        obs, state, avail, active = out.obs, out.state, out.avail, out.active
        reward, terminated, truncated, dropped = out.reward, out.terminated, out.truncated, out.dropped
        final_state, final_active, won = out.final_state, out.final_active, out.won
        final_obs, final_avail = out.final_obs, out.final_avail
        episode_return, episode_length = out.episode_return, out.episode_length
        for zeroed in (reward, terminated, truncated, dropped, won, episode_return, episode_length):
            zeroed.fill(0)
        envs, ep_return, ep_length = self.envs, self.ep_return, self.ep_length
        for i in range(self.n):
            env = envs[i]
            try:
                r = env.step(actions[i])
            except Exception:  # noqa: BLE001 - crash: rebuild, drop the episode in flight
                o, s, a = self._restart(i)
                obs[i], state[i], avail[i], active[i] = o, s, a, True
                final_state[i], final_active[i], dropped[i] = s, True, True
                final_obs[i], final_avail[i] = o, a
                continue
            rew = r.reward
            reward[i] = rew
            ret = ep_return[i] + rew
            length = ep_length[i] + 1
            alive = r.info.get("active", True)
            final_state[i] = r.state
            final_active[i] = alive
            final_obs[i], final_avail[i] = r.obs, r.avail
            if r.terminated or r.truncated:
                terminated[i] = r.terminated
                truncated[i] = r.truncated
                won[i] = bool(r.info.get("won", False))
                episode_return[i] = ret
                episode_length[i] = length
                ep_return[i] = 0.0
                ep_length[i] = 0
                try:
                    o, s, a = env.reset(None)
                except Exception:  # noqa: BLE001 - the finished episode is intact: not dropped
                    o, s, a = self._restart(i)
                obs[i], state[i], avail[i], active[i] = o, s, a, True
            else:
                ep_return[i] = ret
                ep_length[i] = length
                obs[i], state[i], avail[i], active[i] = r.obs, r.state, r.avail, alive
        return out

    def get_state(self) -> GroupState:
        return GroupState(
            blobs=[env.get_state() for env in self.envs],
            episode_return=list(self.ep_return),
            episode_length=list(self.ep_length),
            seeds=list(self.seeds),
        )

    def set_state(
        self,
        blobs: Sequence[bytes | None],
        ep_return: Sequence[float],
        ep_length: Sequence[int],
        seeds: Sequence[int | None],
    ) -> Restored:
        """Restore pickled envs; reset the others with derived seeds."""
        reset_mask = np.zeros(self.n, dtype=bool)
        fresh = zeros(self.n, reset_layout(self.layout))
        for i in range(self.n):
            self.seeds[i] = seeds[i]
            env = None
            if blobs[i] is not None:
                try:
                    env = pickle.loads(blobs[i])  # type: ignore[arg-type]
                except Exception:  # noqa: BLE001 - unrestorable here: reset it instead (warned)
                    log.warning("env %d could not be restored; resetting it\n%s",
                                self.first + i, traceback.format_exc())  # fmt: skip
            if env is not None:
                try:
                    self.envs[i].close()
                except Exception:  # noqa: BLE001
                    pass
                self.envs[i] = env
                self.ep_return[i] = float(ep_return[i])
                self.ep_length[i] = int(ep_length[i])
                continue
            reset_mask[i] = True
            self.serial[i] += 1
            try:
                o, s, a = self.envs[i].reset(self._derived_seed(i))
            except Exception:  # noqa: BLE001
                o, s, a = self._restart(i)
            fresh.obs[i], fresh.state[i], fresh.avail[i] = o, s, a
            self.ep_return[i] = 0.0
            self.ep_length[i] = 0
        return Restored(reset_mask, fresh.obs, fresh.state, fresh.avail)

    def close(self) -> None:
        for env in self.envs:
            try:
                env.close()
            except Exception:  # noqa: BLE001
                pass
