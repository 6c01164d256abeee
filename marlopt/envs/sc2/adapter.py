"""``StarCraftEnv``: the ``MultiAgentEnv`` adapter of SMAC-family envs, shared by the SMAC and SMACv2
wrappers (``marlopt.envs.smac``, ``marlopt.envs.smacv2``), and the option checks of their makers.

Contract with marlopt (``marlopt.envs.base``):

- ``reset(seed) -> (obs[N, O], state[S, D], avail[N, A])``; ``step(actions) -> StepResult``.
- ``state_type="EP"``: the environment-provided state (``env.get_state()``), one row
  (``spec.state_per_agent=False``). ``state_type="FP"``: the feature-pruned agent-specific state of
  the MAPPO reference (Yu et al. 2022, ``use_state_agent`` + ``use_mustalive`` + ``add_center_xy``;
  HARL's "FP"), one row per agent; once that agent is dead, all zeros but its one-hot id (see
  ``fp_state``).
- ``info["won"]`` is SC2's ``battle_won``; the time limit is ``truncated=True, terminated=False``
  (the wrapper always builds the SC2 env with ``continuing_episode=True`` so that it reports
  ``info["episode_limit"]``, and also watches the env's ``timeouts`` counter); ``info["active"]`` is
  the alive mask; dead agents can only take the no-op (action 0), enforced in ``avail``.
- Crashes: every exception of the game (pysc2 ``ConnectionError``/``ProtocolError``/
  ``RequestError``, websocket errors, ...) propagates out of ``step``/``reset`` so that the vector
  env rebuilds the env and drops the episode in flight. SMAC catches some connection errors itself,
  relaunches the game and returns ``(0, True, {})`` — a fabricated terminal transition; the wrapper
  turns that (and any relaunch SMAC does inside ``reset``) into an ``SC2CrashError``.
- ``close()`` kills the SC2 process even when the game no longer answers; a tiny watchdog process
  kills SC2 processes whose owner (an env worker) was killed (SIGKILL on a hang) before it could
  (``guard``, ``watchdog``).
- ``get_state()`` is ``None``: StarCraft II cannot be pickled, so resuming resets these envs.

This module imports numpy only; ``smac``/``smacv2`` are imported by the makers, lazily.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult
from marlopt.envs.common import resolve_state_type
from marlopt.envs.sc2.fp_state import fp_state, fp_state_dim
from marlopt.envs.sc2.guard import guard_pid, kill_pid, kill_popen, release_pid, sc2_popen
from marlopt.envs.sc2.watchdog import start_time

log = logging.getLogger(__name__)


class SC2CrashError(RuntimeError):
    """StarCraft II failed and was relaunched behind our back: the episode in flight is lost."""


class StarCraftEnv(MultiAgentEnv):
    """A SMAC-family env (``smac`` or ``smacv2``) behind marlopt's protocol (module docstring).

    Subclasses build the raw env and say how to reset it (``_raw_reset``) and seed it
    (``_reseed``). ``self._sc`` is the underlying ``StarCraft2Env`` (for SMACv2, the capability
    wrapper's ``.env``).
    """

    family = "smac"

    def __init__(
        self,
        raw: Any,
        sc: Any,
        map_name: str,
        state_type: str | None = "EP",
        save_replay: bool = False,
        stacked_frames: int = 1,
    ) -> None:
        state_type = resolve_state_type(state_type, self.family)
        if int(stacked_frames) < 1:
            raise ValueError(f"stacked_frames must be >= 1 (got {stacked_frames})")
        self._raw, self._sc = raw, sc
        self.map_name = map_name
        self.state_type = state_type
        self._save_replays = bool(save_replay)
        self._k = int(stacked_frames)
        info = raw.get_env_info()
        n, n_actions = int(info["n_agents"]), int(info["n_actions"])
        self._obs_dim, self._env_state_dim = int(info["obs_shape"]), int(info["state_shape"])
        state_dim = fp_state_dim(sc) if state_type == "FP" else self._env_state_dim
        self.spec = EnvSpec(
            n_agents=n,
            obs_dim=self._obs_dim * self._k,
            state_dim=state_dim * self._k,
            n_actions=n_actions,
            episode_limit=int(info["episode_limit"]),
            continuous=False,
            state_per_agent=state_type == "FP",
            has_won=True,
            agent_names=tuple(f"agent_{i}" for i in range(n)),
        )
        self._state_dim = state_dim
        self._needs_reset = True
        self._broken = False
        self._closed = False
        self._guarded: int | None = None
        self._guarded_start: str | None = None
        self._warned_dead_avail = False
        self._avail = np.zeros((n, n_actions), dtype=bool)
        self._frames: tuple[collections.deque, collections.deque] | None = None
        self.episode_steps = 0

    # -- hooks ----------------------------------------------------------------------------------
    def _raw_reset(self) -> None:
        self._raw.reset()

    def _reseed(self, seed: int) -> None:
        """Seed what can be seeded: the game's random seed before its first launch."""
        if not self._launched():
            self._sc._seed = int(seed) % (2**31 - 1)

    # -- helpers --------------------------------------------------------------------------------
    def _launched(self) -> bool:
        return getattr(self._sc, "_sc2_proc", None) is not None

    def _counter(self, name: str) -> int:
        return int(getattr(self._sc, name, 0) or 0)

    def _alive(self) -> np.ndarray:
        sc, n = self._sc, self.spec.n_agents
        alive = np.array([sc.get_unit_by_id(i).health > 0 for i in range(n)], dtype=bool)
        tracker = getattr(sc, "death_tracker_ally", None)
        if tracker is not None:
            alive &= ~np.asarray(tracker, dtype=bool)
        return alive

    def _read_avail(self, alive: np.ndarray) -> np.ndarray:
        sc = self._sc
        avail = self._avail = np.zeros_like(self._avail)
        for i in range(self.spec.n_agents):
            avail[i] = np.asarray(sc.get_avail_agent_actions(i), dtype=bool)
        dead = ~alive
        if dead.any():
            rows = avail[dead]
            if not self._warned_dead_avail and (not rows[:, 0].all() or rows[:, 1:].any()):
                self._warned_dead_avail = True
                log.warning("%s gave a dead agent actions other than the no-op; only the no-op is kept",
                            self.family)
            avail[dead] = False
            avail[dead, 0] = True
        stuck = ~avail.any(axis=1)
        if stuck.any():  # never hand the policy an all-masked row (NaN logits)
            avail[stuck, 1 if self.spec.n_actions > 1 else 0] = True
        return avail

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        sc = self._sc
        alive = self._alive()
        avail = self._read_avail(alive)
        obs = np.asarray(sc.get_obs(), dtype=np.float32).reshape(self.spec.n_agents, self._obs_dim)
        if self.state_type == "FP":
            state = fp_state(sc, alive, avail)
        else:
            state = np.asarray(sc.get_state(), dtype=np.float32).reshape(1, self._env_state_dim)
        if self._k > 1:
            obs, state = self._stack(obs, state)
        return obs, state, avail.copy(), alive

    def _stack(self, obs: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self._frames is None:
            zo, zs = np.zeros_like(obs), np.zeros_like(state)
            self._frames = (collections.deque([zo] * self._k, maxlen=self._k),
                            collections.deque([zs] * self._k, maxlen=self._k))  # fmt: skip
        self._frames[0].append(obs)
        self._frames[1].append(state)
        return np.concatenate(self._frames[0], axis=-1), np.concatenate(self._frames[1], axis=-1)

    def _guard_process(self) -> None:
        """Register the game's pid with the guard; a previous game of this env that still runs
        (relaunched behind our back) is killed."""
        popen = sc2_popen(self._sc)
        pid = getattr(popen, "pid", None)
        if pid is not None and pid != self._guarded:
            if self._guarded is not None:
                kill_pid(self._guarded, self._guarded_start)
                release_pid(self._guarded)
            guard_pid(pid)
            self._guarded, self._guarded_start = pid, start_time(pid)

    # -- protocol -------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self._closed:
            raise RuntimeError(f"{self.family} env {self.map_name} is closed")
        if seed is not None:
            self._reseed(int(seed))
        restarts = self._counter("force_restarts")
        if self._launched() and int(getattr(self._sc, "_episode_count", 1) or 0) == 0:
            # SMAC/SMACv2 relaunch StarCraft II on every reset until an episode has ended (the old
            # game is leaked, and the reward scale counts the enemies again): reset in the game.
            self._sc._episode_count = 1
        self._broken = True  # until the reset succeeds
        self._raw_reset()
        self._guard_process()
        if self._counter("force_restarts") != restarts:
            raise SC2CrashError(f"StarCraft II failed during reset and {self.family} relaunched it; "
                                "rebuilding the env")
        self._needs_reset = False
        self._frames = None
        self.episode_steps = 0
        obs, state, avail, _ = self._observe()
        self._broken = False
        return obs, state, avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError(f"{self.family} env step() called before reset() or after the episode ended")
        acts = np.asarray(actions).reshape(-1)
        if acts.shape[0] != self.spec.n_agents:
            raise ValueError(f"expected {self.spec.n_agents} actions, got {acts.shape[0]}")
        if acts.dtype.kind not in "iu":
            if not np.all(np.mod(acts, 1) == 0):
                raise ValueError(f"discrete actions must be integers, got {acts}")
        acts = acts.astype(np.int64)
        bad = (acts < 0) | (acts >= self.spec.n_actions)
        if not bad.any():
            bad = ~self._avail[np.arange(acts.shape[0]), acts]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"Agent {i} cannot perform action {int(acts[i])} "
                             f"(available: {np.flatnonzero(self._avail[i]).tolist()})")
        restarts, timeouts = self._counter("force_restarts"), self._counter("timeouts")
        self._broken = True  # until the step succeeds
        reward, terminated, info = self._raw.step(acts.tolist())
        info = dict(info or {})
        if self._counter("force_restarts") != restarts or (terminated and "battle_won" not in info):
            raise SC2CrashError(f"StarCraft II lost its connection and {self.family} relaunched it "
                                "(it reported a terminal step without a result); the episode is dropped")
        self.episode_steps += 1
        won = bool(info.get("battle_won", False))
        time_limit = bool(info.get("episode_limit", False)) or self._counter("timeouts") != timeouts
        truncated = bool(terminated) and time_limit and not won
        terminated = bool(terminated) and not truncated
        obs, state, avail, alive = self._observe()
        self._broken = False
        out_info: dict[str, Any] = {"active": alive}
        if terminated or truncated:
            out_info["won"] = won
            self._needs_reset = True
            if self._save_replays:
                self.save_replay()
        return StepResult(obs, state, avail, float(reward), terminated, truncated, out_info)

    def save_replay(self) -> str | None:
        """Save a replay of the game so far (into the env's ``replay_dir``); never raises."""
        try:
            self._raw.save_replay()
        except Exception as err:  # noqa: BLE001 - a replay must never cost a run
            log.warning("could not save a %s replay: %s", self.family, err)
            return None
        return str(getattr(self._sc, "replay_dir", "") or "")

    def close(self) -> None:
        """Close the game; kill its process if it does not go (or the env failed)."""
        if self._closed:
            return
        self._closed = True
        popen = sc2_popen(self._sc)
        if self._broken and popen is not None:  # a dead/hung game: do not wait for its answer
            kill_popen(popen)
        try:
            self._raw.close()
        except Exception as err:  # noqa: BLE001
            log.debug("%s close failed: %s", self.family, err)
        if popen is not None:
            kill_popen(popen)
        if self._guarded is not None:
            release_pid(self._guarded)
            self._guarded = None

    def get_state(self) -> bytes | None:
        return None  # StarCraft II cannot be pickled: these envs are reset on resume

    def __del__(self) -> None:  # the atexit hook of smac holds a reference anyway
        try:
            self.close()
        except Exception:  # noqa: BLE001
            pass



def split_options(options: dict[str, Any], own: Sequence[str], reserved: Sequence[str],
                  family: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Options for the wrapper (``own``) and for the SC2 env (the rest); ``reserved`` are refused."""
    refused = sorted(set(options) & set(reserved))
    if refused:
        raise ValueError(f"{family} option(s) {refused} are set by marlopt and cannot be overridden")
    mine = {k: v for k, v in options.items() if k in own}
    rest = {k: v for k, v in options.items() if k not in own}
    return mine, rest


def check_continuous(continuous: bool, family: str) -> None:
    if continuous:
        raise ValueError(f"{family} has discrete actions only; use env.continuous=false")


Maker = Callable[..., StarCraftEnv]
