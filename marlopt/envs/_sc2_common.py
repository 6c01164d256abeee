"""What the SMAC and SMACv2 wrappers share: install checks, the SC2 process guard, the FP state and
the ``MultiAgentEnv`` adapter itself (``StarCraftEnv``).

Contract with marlopt (``marlopt.envs.base``):

- ``reset(seed) -> (obs[N, O], state[S, D], avail[N, A])``; ``step(actions) -> StepResult``.
- ``state_type="EP"``: the environment-provided state (``env.get_state()``), one row
  (``spec.state_per_agent=False``). ``state_type="FP"``: the feature-pruned agent-specific state of
  the MAPPO reference (Yu et al. 2022, ``use_state_agent`` + ``use_mustalive`` + ``add_center_xy``;
  HARL's "FP"), one row per agent, all zeros once that agent is dead (see ``fp_state``).
- ``info["won"]`` is SC2's ``battle_won``; the time limit is ``truncated=True, terminated=False``
  (the wrapper always builds the SC2 env with ``continuing_episode=True`` so that it reports
  ``info["episode_limit"]``, and also watches the env's ``timeouts`` counter); ``info["active"]`` is
  the alive mask; dead agents can only take the no-op (action 0), enforced in ``avail``.
- Crashes: every exception of the game (pysc2 ``ConnectionError``/``ProtocolError``/
  ``RequestError``, websocket errors, ...) propagates out of ``step``/``reset`` so that ``VectorEnv``
  rebuilds the env and drops the episode in flight. SMAC catches some connection errors itself,
  relaunches the game and returns ``(0, True, {})`` — a fabricated terminal transition; the wrapper
  turns that (and any relaunch SMAC does inside ``reset``) into an ``SC2CrashError``.
- ``close()`` kills the SC2 process even when the game no longer answers; a tiny watchdog process
  kills SC2 processes whose owner (an env worker) was killed (SIGKILL on a hang) before it could.
- ``get_state()`` is ``None``: StarCraft II cannot be pickled, so resuming resets these envs.

This module imports numpy only; ``smac``/``smacv2`` are imported by the makers, lazily.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

log = logging.getLogger(__name__)

STATE_TYPES = ("EP", "FP")
INSTALL_SC2 = "bash scripts/install_sc2.sh"  # StarCraft II 4.10 + the SMAC/SMACv2 maps into $SC2PATH


class SC2UnavailableError(ImportError):
    """The simulator cannot run here (package or StarCraft II missing). The message is one line
    that names the fix."""


class SC2CrashError(RuntimeError):
    """StarCraft II failed and was relaunched behind our back: the episode in flight is lost."""


# ---------------------------------------------------------------------------------------------
# Installation checks (one clear line each)
# ---------------------------------------------------------------------------------------------
def sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II on Linux: ``$SC2PATH``, else ``~/StarCraftII``."""
    return Path(os.environ.get("SC2PATH") or "~/StarCraftII").expanduser()


def check_sc2_install(map_file: str) -> None:
    """Raise ``SC2UnavailableError`` unless StarCraft II and ``Maps/SMAC_Maps/<map_file>`` exist."""
    root = sc2_path()
    where = f"$SC2PATH={os.environ['SC2PATH']}" if os.environ.get("SC2PATH") else "SC2PATH unset"
    fix = f"install it with `{INSTALL_SC2}` (StarCraft II 4.10 + SMAC/SMACv2 maps) and export SC2PATH=<that dir>"
    if not root.is_dir():
        raise SC2UnavailableError(f"StarCraft II not found at {root} ({where}); {fix}")
    if not any((root / "Versions").glob("Base*/SC2_x64")):
        raise SC2UnavailableError(
            f"no StarCraft II binary under {root}/Versions/Base*/SC2_x64 ({where}); {fix}"
        )
    map_path = root / "Maps" / "SMAC_Maps" / map_file
    if not map_path.is_file():
        raise SC2UnavailableError(
            f"map file {map_path} is missing; install the SMAC/SMACv2 maps with `{INSTALL_SC2}`"
        )


def import_attr(module: str, attr: str, fix: str) -> Any:
    """``module.attr``, or ``SC2UnavailableError`` with the install line ``fix``."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise SC2UnavailableError(f"{module} could not be imported ({reason}); {fix}") from err
    try:
        return getattr(mod, attr)
    except AttributeError as err:
        raise SC2UnavailableError(f"{module} has no {attr} (wrong package installed?); {fix}") from err


# ---------------------------------------------------------------------------------------------
# The SC2 process guard: StarCraft II must not outlive the process that launched it.
# ---------------------------------------------------------------------------------------------
# A child process reads "+pid start" / "-pid" lines; at EOF (its parent died, even by SIGKILL) it
# kills every pid still registered whose start time is unchanged (no pid-reuse accidents).
_WATCHDOG = r"""
import os, signal, sys
def start(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None
pids = {}
for line in sys.stdin:
    op, _, rest = line.strip().partition(" ")
    if op == "+":
        pid, _, st = rest.partition(" ")
        pids[int(pid)] = st
    elif op == "-":
        pids.pop(int(rest), None)
for pid, st in pids.items():
    if start(pid) == st:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
"""

_guard_lock = threading.Lock()
_guard: dict[str, Any] = {"proc": None, "owner": None}


def _start_time(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except OSError:
        return None


def _guard_send(line: str) -> None:
    if not sys.platform.startswith("linux"):
        return
    with _guard_lock:
        proc = _guard["proc"]
        if proc is None or proc.poll() is not None or _guard["owner"] != os.getpid():
            try:
                proc = subprocess.Popen(
                    [sys.executable, "-c", _WATCHDOG], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, text=True, start_new_session=True,
                )
            except OSError as err:  # the guard is a safety net, never a reason to fail
                log.warning("could not start the SC2 process guard: %s", err)
                return
            _guard["proc"], _guard["owner"] = proc, os.getpid()
        try:
            proc.stdin.write(line + "\n")
            proc.stdin.flush()
        except (OSError, ValueError):
            _guard["proc"] = None


def guard_pid(pid: int) -> None:
    """Kill ``pid`` if this process dies before ``release_pid(pid)``."""
    start = _start_time(pid)
    if start is not None:
        _guard_send(f"+ {pid} {start}")


def release_pid(pid: int) -> None:
    _guard_send(f"- {pid}")


def sc2_popen(raw_env: Any) -> Any:
    """The ``subprocess.Popen`` of the game an env launched (pysc2's ``StarcraftProcess._proc``)."""
    proc = getattr(raw_env, "_sc2_proc", None)
    return getattr(proc, "_proc", None) if proc is not None else None


# ---------------------------------------------------------------------------------------------
# The feature-pruned agent-specific state (FP)
# ---------------------------------------------------------------------------------------------
def _medivac_like(sc: Any, unit: Any) -> bool:
    return getattr(sc, "map_type", "") in ("MMM", "terran_gen") and unit.unit_type == getattr(sc, "medivac_id", -1)


def _max_shield(sc: Any, unit: Any) -> float:
    value = 0.0
    try:
        value = float(sc.unit_max_shield(unit) or 0.0)
    except Exception:  # noqa: BLE001 - smacv2 raises for non-Protoss units
        value = 0.0
    if value <= 0:
        value = float(getattr(unit, "shield_max", 0.0) or 0.0)
    return value if value > 0 else 1.0


def fp_sizes(sc: Any) -> tuple[int, int, int, int]:
    """Feature counts ``(ally, enemy, move, own)`` of one FP row (per ally/enemy where relevant)."""
    last = sc.n_actions if getattr(sc, "state_last_action", True) else 0
    tb = int(sc.unit_type_bits)
    nf_al = 5 + 1 + sc.shield_bits_ally + tb + 2 + last  # visible dist dx dy cooldown, health...
    nf_en = 5 + 1 + sc.shield_bits_enemy + tb + 2  # shootable dist dx dy visible, health...
    nf_own = 4 + 1 + sc.shield_bits_ally + tb + 2 + last
    return nf_al, nf_en, sc.n_actions_move, nf_own


def fp_state_dim(sc: Any) -> int:
    nf_al, nf_en, nf_mv, nf_own = fp_sizes(sc)
    return (sc.n_agents - 1) * nf_al + sc.n_enemies * nf_en + nf_mv + nf_own + sc.n_agents


def fp_state(sc: Any, alive: np.ndarray, avail: np.ndarray) -> np.ndarray:
    """``[N, fp_state_dim]`` float32: row ``i`` is agent ``i``'s view of the whole battle.

    Layout of a row (``sight`` = the agent's sight range; centre = the map centre; zero rows for
    dead agents, ``use_mustalive``):

    - allies (the other ``N-1``, in id order), each ``[visible, dist/sight, dx/sight, dy/sight,
      cooldown/max (energy/max for medivacs), health/max, (shield/max), unit type one-hot,
      (x-cx)/width, (y-cy)/height, (last action one-hot)]``, zeros for dead allies;
    - enemies, each ``[shootable by me, dist/sight, dx/sight, dy/sight, visible, health/max,
      (shield/max), unit type one-hot, (x-cx)/width, (y-cy)/height]``, zeros for dead enemies
      (unlike the observation, enemies outside the sight range are included: the critic sees all);
    - move feasibility north/south/east/west (``avail[2:6]``);
    - own ``[1, 0, 0, 0, health/max, (shield/max), unit type one-hot, (x-cx)/width, (y-cy)/height,
      (last action one-hot)]``;
    - the agent's one-hot id.
    """
    n, m = sc.n_agents, sc.n_enemies
    nf_al, nf_en, nf_mv, nf_own = fp_sizes(sc)
    tb, sb_a, sb_e = int(sc.unit_type_bits), int(sc.shield_bits_ally), int(sc.shield_bits_enemy)
    use_last = bool(getattr(sc, "state_last_action", True))
    last_action = np.asarray(sc.last_action, dtype=np.float32) if use_last else None
    cx, cy = sc.map_x / 2.0, sc.map_y / 2.0
    wx, wy = float(sc.max_distance_x) or 1.0, float(sc.max_distance_y) or 1.0
    no_attack = int(sc.n_actions_no_attack)
    out = np.zeros((n, fp_state_dim(sc)), dtype=np.float32)
    units = [sc.get_unit_by_id(i) for i in range(n)]
    enemies = [sc.enemies[e] for e in range(m)]
    off_en = (n - 1) * nf_al
    off_mv = off_en + m * nf_en
    off_own = off_mv + nf_mv
    off_id = off_own + nf_own

    def common(row: np.ndarray, k: int, unit: Any, ally: bool, shield_bits: int) -> int:
        row[k] = unit.health / unit.health_max
        k += 1
        if shield_bits:
            row[k] = unit.shield / _max_shield(sc, unit)
            k += 1
        if tb:
            row[k + sc.get_unit_type_id(unit, ally)] = 1.0
            k += tb
        row[k] = (unit.pos.x - cx) / wx
        row[k + 1] = (unit.pos.y - cy) / wy
        return k + 2

    for i in range(n):
        if not alive[i]:
            continue
        row = out[i]
        me = units[i]
        x, y = me.pos.x, me.pos.y
        sight = float(sc.unit_sight_range(i))
        j = 0
        for a in range(n):
            if a == i:
                continue
            al = units[a]
            if alive[a] and al.health > 0:
                f = row[j * nf_al : (j + 1) * nf_al]
                dx, dy = al.pos.x - x, al.pos.y - y
                dist = float(np.hypot(dx, dy))
                f[0] = 1.0 if dist < sight else 0.0
                f[1], f[2], f[3] = dist / sight, dx / sight, dy / sight
                max_cd = float(sc.unit_max_cooldown(al)) or 1.0
                f[4] = (al.energy if _medivac_like(sc, al) else al.weapon_cooldown) / max_cd
                k = common(f, 5, al, True, sb_a)
                if use_last:
                    f[k:] = last_action[a]
            j += 1
        for e, en in enumerate(enemies):
            if en.health > 0:
                f = row[off_en + e * nf_en : off_en + (e + 1) * nf_en]
                dx, dy = en.pos.x - x, en.pos.y - y
                dist = float(np.hypot(dx, dy))
                f[0] = float(avail[i, no_attack + e]) if no_attack + e < avail.shape[1] else 0.0
                f[1], f[2], f[3] = dist / sight, dx / sight, dy / sight
                f[4] = 1.0 if dist < sight else 0.0
                common(f, 5, en, False, sb_e)
        row[off_mv : off_mv + nf_mv] = avail[i, 2 : 2 + nf_mv]
        own = row[off_own : off_own + nf_own]
        own[0] = 1.0
        k = common(own, 4, me, True, sb_a)
        if use_last:
            own[k:] = last_action[i]
        row[off_id + i] = 1.0
    return out


# ---------------------------------------------------------------------------------------------
# The MultiAgentEnv adapter
# ---------------------------------------------------------------------------------------------
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
        state_type: str = "EP",
        save_replay: bool = False,
        stacked_frames: int = 1,
    ) -> None:
        if state_type not in STATE_TYPES:
            raise ValueError(f"state_type must be one of {list(STATE_TYPES)} (got {state_type!r})")
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
                _kill_pid(self._guarded, self._guarded_start)
                release_pid(self._guarded)
            guard_pid(pid)
            self._guarded, self._guarded_start = pid, _start_time(pid)

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
            _kill(popen)
        try:
            self._raw.close()
        except Exception as err:  # noqa: BLE001
            log.debug("%s close failed: %s", self.family, err)
        if popen is not None:
            _kill(popen)
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


def _kill_pid(pid: int, start: str | None) -> None:
    """SIGKILL ``pid`` if it is still the process that started at ``start``."""
    if start is None or _start_time(pid) != start:
        return
    try:
        os.kill(pid, 9)
    except OSError:
        pass


def _kill(popen: Any) -> None:
    try:
        if popen.poll() is None:
            popen.kill()
        popen.wait(timeout=10)
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
