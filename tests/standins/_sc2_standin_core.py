"""The StarCraft II stand-in's engine, shared by the ``smac`` and ``smacv2`` stand-in packages.

It stands in for StarCraft II (which cannot run here): a small deterministic battle simulator behind
the same Python surface as ``smac.env.StarCraft2Env`` (constructor arguments, attributes such as
``agents``/``enemies``/``death_tracker_ally``/``last_action``/``timeouts``/``force_restarts``/
``_sc2_proc``, and methods ``reset``/``step``/``get_obs``/``get_state``/``get_avail_actions``/
``save_replay``/``close``; ``get_env_info`` comes from each package's ``MultiAgentEnv``, as in the
real packages: smacv2's adds ``cap_shape``), with SMAC's observation, state and action layouts, so
the shapes equal the real ones (MMM2: obs 176, state 322, 18 actions). Its "game" is a real child
process (``sleep``) so that closing and orphan-killing can be tested.

Faithful behaviours: the ``"Agent {a_id} cannot perform action {action}"`` assertion; dead agents
may only take the no-op; ``(reward, terminated, info)`` with ``battle_won`` and, with
``continuing_episode``, ``episode_limit`` on timeouts; SMAC swallowing connection errors
(``full_restart`` and ``(0, True, {})``); launching needs ``$SC2PATH`` (default ``~/StarCraftII``)
with ``Versions/Base*/SC2_x64`` and ``Maps/SMAC_Maps/<map>.SC2Map``.

Fault injection through environment variables (read at every step, so spawned workers see them):

- ``MARLOPT_STANDIN_CRASH_PROB``: probability per step of a game crash;
- ``MARLOPT_STANDIN_CRASH_AT_STEP``: crash at this step (1-based) of an env instance's life;
- ``MARLOPT_STANDIN_CRASH_KIND``: ``raise`` (default; an uncaught ``RequestError`` from the game, as
  pysc2 raises) or ``swallow`` (a connection error that SMAC catches: it relaunches the game and
  returns ``(0, True, {})``);
- ``MARLOPT_STANDIN_HANG_AT_STEP``: the game stops answering at this step (sleeps for an hour);
- ``MARLOPT_STANDIN_EXIT_AT_STEP``: the process dies at this step (``os._exit(17)``);
- ``MARLOPT_STANDIN_FAULT_ONCE``: a directory; each ``*_AT_STEP`` fault then fires only once across
  all processes (a marker file per fault), so rebuilt envs behave;
- ``MARLOPT_STANDIN_PID_DIR``: a directory where each launched "game" leaves a file named by its pid.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import sys
import time
from copy import deepcopy
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np


# -- errors (as pysc2 names them) ---------------------------------------------------------------
class ProtocolError(Exception):
    """pysc2.lib.protocol.ProtocolError"""


class ConnectionError(Exception):  # noqa: A001 - pysc2.lib.protocol.ConnectionError
    """pysc2.lib.protocol.ConnectionError"""


class RequestError(Exception):
    """pysc2.lib.remote_controller.RequestError"""


class SC2LaunchError(Exception):
    """pysc2.lib.sc_process.SC2LaunchError"""


# -- units ------------------------------------------------------------------------------------
class Point:
    __slots__ = ("x", "y", "z")

    def __init__(self, x: float, y: float, z: float = 0.0) -> None:
        self.x, self.y, self.z = float(x), float(y), float(z)

    def __deepcopy__(self, memo: dict) -> Point:
        return Point(self.x, self.y, self.z)


class Unit:
    """A raw unit as pysc2 observes it (the fields SMAC reads)."""

    def __init__(self, tag: int, kind: str, unit_type: int, owner: int, x: float, y: float) -> None:
        st = STATS[kind]
        self.tag, self.kind, self.unit_type, self.owner = tag, kind, unit_type, owner
        self.pos = Point(x, y)
        self.health = self.health_max = float(st["health"])
        self.shield = self.shield_max = float(st["shield"])
        self.energy = 50.0 if kind == "medivac" else 0.0
        self.weapon_cooldown = 0.0
        self.aggro = False


# kind: SC2 unit type id (enemies use these), health, shield, damage, reach, cooldown (frames),
# speed per agent step, sight
STATS: dict[str, dict[str, Any]] = {
    "marine": dict(sc2=48, health=45, shield=0, damage=6, reach=5, cooldown=15, speed=1.0),
    "marauder": dict(sc2=51, health=125, shield=0, damage=10, reach=6, cooldown=25, speed=1.0),
    "medivac": dict(sc2=54, health=150, shield=0, damage=0, reach=4, cooldown=200, speed=1.2),
    "stalker": dict(sc2=74, health=80, shield=80, damage=13, reach=6, cooldown=35, speed=1.2),
    "zealot": dict(sc2=73, health=100, shield=50, damage=16, reach=1, cooldown=22, speed=1.0),
    "colossus": dict(sc2=4, health=200, shield=150, damage=20, reach=7, cooldown=24, speed=1.0),
    "zergling": dict(sc2=105, health=35, shield=0, damage=5, reach=1, cooldown=11, speed=1.4),
    "baneling": dict(sc2=9, health=30, shield=0, damage=16, reach=1, cooldown=1, speed=1.1),
    "hydralisk": dict(sc2=107, health=90, shield=0, damage=12, reach=5, cooldown=10, speed=1.0),
    "spinecrawler": dict(sc2=98, health=300, shield=0, damage=25, reach=7, cooldown=26, speed=0.0),
}
DIFFICULTY = {"1": 0.25, "2": 0.4, "3": 0.55, "4": 0.7, "5": 0.85, "6": 0.95, "7": 1.0,
              "8": 1.2, "9": 1.2, "A": 1.3}
SIGHT = 9.0
ALLY_TYPE_BASE = 1970  # SMAC maps give the RL units their own (new) unit types


# -- fault injection --------------------------------------------------------------------------
def _env_int(name: str) -> int | None:
    value = os.environ.get(name, "").strip()
    return int(value) if value else None


def _fire_once(kind: str) -> bool:
    directory = os.environ.get("MARLOPT_STANDIN_FAULT_ONCE", "").strip()
    if not directory:
        return True
    try:
        fd = os.open(os.path.join(directory, kind), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class Faults:
    def __init__(self) -> None:
        self.rng = random.Random(int(os.environ.get("MARLOPT_STANDIN_CRASH_SEED", "0") or 0) or None)
        self.life_steps = 0

    def before_step(self) -> str | None:
        """``None``, or the crash kind to raise now (``raise``/``swallow``); hangs and exits here."""
        self.life_steps += 1
        t = self.life_steps
        if _env_int("MARLOPT_STANDIN_EXIT_AT_STEP") == t and _fire_once("exit"):
            os._exit(17)
        if _env_int("MARLOPT_STANDIN_HANG_AT_STEP") == t and _fire_once("hang"):
            time.sleep(3600)
        kind = os.environ.get("MARLOPT_STANDIN_CRASH_KIND", "raise").strip() or "raise"
        if _env_int("MARLOPT_STANDIN_CRASH_AT_STEP") == t and _fire_once("crash"):
            return kind
        prob = float(os.environ.get("MARLOPT_STANDIN_CRASH_PROB", "0") or 0)
        if prob > 0 and self.rng.random() < prob:
            return kind
        return None


# -- the "game process" -----------------------------------------------------------------------
def sc2_base_dir() -> Path:
    return Path(os.environ.get("SC2PATH") or "~/StarCraftII").expanduser()


class StarcraftProcess:
    """Stands in for pysc2's ``StarcraftProcess``: a real child process (``_proc``)."""

    def __init__(self, map_file: str) -> None:
        base = sc2_base_dir()
        if not base.is_dir():
            raise SC2LaunchError(
                f"Expected to find StarCraft II installed at '{base}'. If it's not installed, do that and run it "
                "once so auto-detection works. If auto-detection failed repeatedly, then set the SC2PATH "
                "environment variable with the correct location.")
        exes = sorted((base / "Versions").glob("Base*/SC2_x64"))
        if not exes:
            raise SC2LaunchError(f"No SC2 binaries found in {base / 'Versions'}")
        map_path = base / "Maps" / "SMAC_Maps" / map_file
        if not map_path.is_file():
            raise FileNotFoundError(f"Map {map_path} not found")
        sleep = shutil.which("sleep")
        args = [sleep, "86400"] if sleep else [sys.executable, "-c", "import time; time.sleep(86400)"]
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        self.path = str(exes[-1])
        pid_dir = os.environ.get("MARLOPT_STANDIN_PID_DIR", "").strip()
        if pid_dir:  # tests check that no game process outlives its env
            Path(pid_dir, str(self._proc.pid)).write_text(str(os.getpid()))

    @property
    def pid(self) -> int:
        return self._proc.pid

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(timeout=5)


# -- the environment --------------------------------------------------------------------------
class Direction:
    NORTH, SOUTH, EAST, WEST = 0, 1, 2, 3


class StandinStarCraft2Env:
    """Shared engine; ``smac``/``smacv2`` stand-in classes give the API of each package."""

    v2 = False
    map_size = 32

    # ------------------------------------------------------------------ setup
    def _setup(self, map_params: dict[str, Any], **kw: Any) -> None:
        self.map_params = map_params
        self.episode_limit = map_params["limit"]
        self._move_amount = kw["move_amount"]
        self._step_mul = kw["step_mul"]
        self.difficulty = kw["difficulty"]
        self.game_version = kw["game_version"]
        self._seed = kw["seed"]
        self.continuing_episode = kw["continuing_episode"]
        self.obs_all_health = kw["obs_all_health"]
        self.obs_own_health = kw["obs_own_health"] or kw["obs_all_health"]
        self.obs_last_action = kw["obs_last_action"]
        self.obs_pathing_grid = kw["obs_pathing_grid"]
        self.obs_terrain_height = kw["obs_terrain_height"]
        self.obs_instead_of_state = kw["obs_instead_of_state"]
        self.obs_timestep_number = kw["obs_timestep_number"]
        self.state_last_action = kw["state_last_action"]
        self.state_timestep_number = kw["state_timestep_number"]
        self.n_obs_pathing, self.n_obs_height = 8, 9
        self.reward_sparse = kw["reward_sparse"]
        self.reward_only_positive = kw["reward_only_positive"]
        self.reward_negative_scale = kw["reward_negative_scale"]
        self.reward_death_value = kw["reward_death_value"]
        self.reward_win = kw["reward_win"]
        self.reward_defeat = kw["reward_defeat"]
        self.reward_scale = kw["reward_scale"]
        self.reward_scale_rate = kw["reward_scale_rate"]
        self.replay_dir = kw["replay_dir"]
        self.replay_prefix = kw["replay_prefix"]
        self.window_size = (kw["window_size_x"], kw["window_size_y"])
        self.heuristic_ai = kw["heuristic_ai"]
        self.heuristic_rest = kw["heuristic_rest"]
        self.debug = kw["debug"]
        self._agent_race, self._bot_race = map_params["a_race"], map_params["b_race"]
        self.shield_bits_ally = 1 if self._agent_race == "P" else 0
        self.shield_bits_enemy = 1 if self._bot_race == "P" else 0
        self.unit_type_bits = map_params["unit_type_bits"]
        self.map_type = map_params["map_type"]
        self.n_actions_move = 4
        self.agents: dict[int, Unit] = {}
        self.enemies: dict[int, Unit] = {}
        self._episode_count = self._episode_steps = self._total_steps = 0
        self.battles_won = self.battles_game = self.timeouts = self.force_restarts = 0
        self.previous_ally_units = self.previous_enemy_units = None
        self._min_unit_type = 0
        self.marine_id = self.marauder_id = self.medivac_id = 0
        self.hydralisk_id = self.zergling_id = self.baneling_id = 0
        self.stalker_id = self.colossus_id = self.zealot_id = 0
        self.max_distance_x = self.max_distance_y = 0
        self.map_x = self.map_y = 0
        self.pathing_grid = self.terrain_height = None
        self._sc2_proc: StarcraftProcess | None = None
        self._controller = None
        self._faults = Faults()
        self._game_units: dict[int, Unit] = {}
        self._next_tag = 1
        self.win_counted = self.defeat_counted = False

    def _post_setup(self) -> None:
        self.max_reward = self.n_enemies * self.reward_death_value + self.reward_win
        self.death_tracker_ally = np.zeros(self.n_agents)
        self.death_tracker_enemy = np.zeros(self.n_enemies)
        self.last_action = np.zeros((self.n_agents, self.n_actions))

    # ------------------------------------------------------------------ the game
    def _map_file(self) -> str:
        return f"{self.map_params.get('map_name', self.map_name)}.SC2Map"

    def _launch(self) -> None:
        self._sc2_proc = StarcraftProcess(self._map_file())
        self._controller = self._sc2_proc  # any truthy handle
        self._rng = np.random.default_rng(self._seed)
        s = self.map_size
        self.map_x = self.map_y = s
        self.max_distance_x = self.max_distance_y = s - 2
        grid = np.ones((s, s), dtype=bool)
        grid[0, :] = grid[-1, :] = grid[:, 0] = grid[:, -1] = False
        self.pathing_grid = grid
        self.terrain_height = np.full((s, s), 0.5)
        self._game_units = {}

    def _spawn(self, kind: str, owner: int, x: float, y: float) -> Unit:
        unit_type = self._ally_type(kind) if owner == 1 else STATS[kind]["sc2"]
        unit = Unit(self._next_tag, kind, unit_type, owner, x, y)
        self._next_tag += 1
        self._game_units[unit.tag] = unit
        return unit

    def _observe(self) -> list[Unit]:
        """The raw units SC2 reports: copies of the living ones."""
        return [deepcopy(u) for u in self._game_units.values() if u.health > 0]

    def _simulate(self, commands: list[tuple]) -> None:
        """One agent step: ally commands, then the built-in AI, then cooldowns/energy."""
        units = self._game_units
        frames = self._step_mul or 8
        for cmd in commands:
            kind, tag = cmd[0], cmd[1]
            unit = units.get(tag)
            if unit is None or unit.health <= 0:
                continue
            if kind == "move":
                dx, dy = cmd[2] - unit.pos.x, cmd[3] - unit.pos.y
                d = math.hypot(dx, dy)
                step = min(d, STATS[unit.kind]["speed"])
                if d > 0 and self._walkable(unit.pos.x + dx / d * step, unit.pos.y + dy / d * step):
                    unit.pos.x += dx / d * step
                    unit.pos.y += dy / d * step
            elif kind in ("attack", "heal"):
                target = units.get(cmd[2])
                if target is not None and target.health > 0:
                    self._engage(unit, target, kind == "heal", 1.0)
        mult = DIFFICULTY.get(str(self.difficulty), 1.0)
        allies = [u for u in units.values() if u.owner == 1 and u.health > 0]
        for enemy in [u for u in units.values() if u.owner == 2 and u.health > 0]:
            if not allies:
                break
            near = min(allies, key=lambda a: self.distance(enemy.pos.x, enemy.pos.y, a.pos.x, a.pos.y))
            dist = self.distance(enemy.pos.x, enemy.pos.y, near.pos.x, near.pos.y)
            if dist < SIGHT:
                enemy.aggro = True
            if not enemy.aggro:
                continue
            if enemy.kind == "medivac":
                hurt = [u for u in units.values() if u.owner == 2 and 0 < u.health < u.health_max
                        and u.kind != "medivac"]
                if hurt:
                    self._engage(enemy, hurt[0], True, 1.0)
                continue
            self._engage(enemy, near, False, mult)
            allies = [u for u in allies if u.health > 0]
        for unit in units.values():
            unit.weapon_cooldown = max(0.0, unit.weapon_cooldown - frames)
            if unit.kind == "medivac":
                unit.energy = min(200.0, unit.energy + 0.5)

    def _engage(self, unit: Unit, target: Unit, heal: bool, mult: float) -> None:
        st = STATS[unit.kind]
        dist = self.distance(unit.pos.x, unit.pos.y, target.pos.x, target.pos.y)
        reach = max(st["reach"], 1.0) + 0.5
        if dist > reach:  # walk towards the target
            speed = st["speed"]
            if speed > 0 and dist > 0:
                frac = min(1.0, speed / dist)
                unit.pos.x += (target.pos.x - unit.pos.x) * frac * 0.9
                unit.pos.y += (target.pos.y - unit.pos.y) * frac * 0.9
            return
        if heal:
            if unit.energy >= 5 and target.health < target.health_max:
                target.health = min(target.health_max, target.health + 9.0)
                unit.energy -= 5.0
            return
        if unit.weapon_cooldown > 0:
            return
        unit.weapon_cooldown = float(st["cooldown"])
        self._damage(target, st["damage"] * mult)
        if unit.kind == "baneling":  # explodes: splash, and dies
            for other in self._game_units.values():
                if other is not target and other.owner == target.owner and other.health > 0 and \
                        self.distance(other.pos.x, other.pos.y, target.pos.x, target.pos.y) < 2.2:
                    self._damage(other, st["damage"] * mult)
            unit.health = 0.0

    @staticmethod
    def _damage(unit: Unit, amount: float) -> None:
        absorbed = min(unit.shield, amount)
        unit.shield -= absorbed
        unit.health = max(0.0, unit.health - (amount - absorbed))
        unit.aggro = True
        if unit.health <= 0:
            unit.shield = 0.0

    def _walkable(self, x: float, y: float) -> bool:
        xi, yi = int(x), int(y)
        return self.check_bounds(xi, yi) and bool(self.pathing_grid[xi, yi])

    # ------------------------------------------------------------------ API (SMAC)
    def reset(self, *args: Any, **kwargs: Any):  # noqa: ANN201
        self._episode_steps = 0
        if self._episode_count == 0:
            self._launch()
        else:
            self._restart()
        self._reset_trackers(*args, **kwargs)
        self.init_units(*args, **kwargs)
        return self.get_obs(), self.get_state()

    def _reset_trackers(self, *args: Any, **kwargs: Any) -> None:
        self.death_tracker_ally = np.zeros(self.n_agents)
        self.death_tracker_enemy = np.zeros(self.n_enemies)
        self.previous_ally_units = None
        self.previous_enemy_units = None
        self.win_counted = False
        self.defeat_counted = False
        self.last_action = np.zeros((self.n_agents, self.n_actions))

    def _restart(self) -> None:
        try:
            self._kill_all_units()
        except (ProtocolError, ConnectionError):
            self.full_restart()

    def _kill_all_units(self) -> None:
        self._game_units = {}

    def full_restart(self) -> None:
        if self._sc2_proc is not None:
            self._sc2_proc.close()
        self._launch()
        self.force_restarts += 1

    def step(self, actions):  # noqa: ANN001, ANN201
        actions_int = [int(a) for a in actions]
        self.last_action = np.eye(self.n_actions)[np.array(actions_int)]
        commands = []
        for a_id, action in enumerate(actions_int):
            cmd = self.get_agent_action(a_id, action)
            if cmd:
                commands.append(cmd)
        crash = self._faults.before_step()
        if crash == "raise":
            raise RequestError("SC2 request failed: Game has already ended (stand-in injected crash)")
        try:
            if crash == "swallow":
                raise ConnectionError("Connection already closed. SC2 probably crashed. (stand-in)")
            self._simulate(commands)
            raw_units = self._observe()
        except (ProtocolError, ConnectionError):
            self.full_restart()
            return 0, True, {}
        self._raw_units = raw_units
        self._total_steps += 1
        self._episode_steps += 1
        game_end_code = self.update_units()
        terminated = False
        reward = self.reward_battle()
        info = {"battle_won": False}
        self._step_info(info)
        if game_end_code is not None:
            terminated = True
            self.battles_game += 1
            if game_end_code == 1 and not self.win_counted:
                self.battles_won += 1
                self.win_counted = True
                info["battle_won"] = True
                if not self.reward_sparse:
                    reward += self.reward_win
                else:
                    reward = 1
            elif game_end_code == -1 and not self.defeat_counted:
                self.defeat_counted = True
                if not self.reward_sparse:
                    reward += self.reward_defeat
                else:
                    reward = -1
        elif self._episode_steps >= self.episode_limit:
            terminated = True
            if self.continuing_episode:
                info["episode_limit"] = True
            self.battles_game += 1
            self.timeouts += 1
        if terminated:
            self._episode_count += 1
        if self.reward_scale:
            reward /= self.max_reward / self.reward_scale_rate
        self.reward = reward
        return reward, terminated, info

    def _step_info(self, info: dict) -> None:
        pass

    def get_agent_action(self, a_id: int, action: int):  # noqa: ANN201
        avail_actions = self.get_avail_agent_actions(a_id)
        assert avail_actions[action] == 1, "Agent {} cannot perform action {}".format(a_id, action)
        unit = self.get_unit_by_id(a_id)
        tag, x, y = unit.tag, unit.pos.x, unit.pos.y
        if action == 0:
            assert unit.health == 0, "No-op only available for dead agents."
            return None
        if action == 1:
            return ("stop", tag)
        if 2 <= action <= 5:
            m = self._move_amount
            dx, dy = {2: (0, m), 3: (0, -m), 4: (m, 0), 5: (-m, 0)}[action]
            return ("move", tag, x + dx, y + dy)
        if action < self.n_actions_no_attack:  # conic-fov look actions (smacv2)
            return None
        target_id = action - self.n_actions_no_attack
        if self.map_type in ("MMM", "terran_gen") and unit.unit_type == self.medivac_id:
            return ("heal", tag, self.agents[target_id].tag)
        return ("attack", tag, self.enemies[target_id].tag)

    def reward_battle(self) -> float:
        if self.reward_sparse:
            return 0
        delta_deaths = delta_ally = delta_enemy = 0.0
        neg_scale = self.reward_negative_scale
        for al_id, al_unit in self.agents.items():
            if not self.death_tracker_ally[al_id]:
                prev = self.previous_ally_units[al_id].health + self.previous_ally_units[al_id].shield
                if al_unit.health == 0:
                    self.death_tracker_ally[al_id] = 1
                    if not self.reward_only_positive:
                        delta_deaths -= self.reward_death_value * neg_scale
                    delta_ally += prev * neg_scale
                else:
                    delta_ally += neg_scale * (prev - al_unit.health - al_unit.shield)
        for e_id, e_unit in self.enemies.items():
            if not self.death_tracker_enemy[e_id]:
                prev = self.previous_enemy_units[e_id].health + self.previous_enemy_units[e_id].shield
                if e_unit.health == 0:
                    self.death_tracker_enemy[e_id] = 1
                    delta_deaths += self.reward_death_value
                    delta_enemy += prev
                else:
                    delta_enemy += prev - e_unit.health - e_unit.shield
        if self.reward_only_positive:
            return self._positive(delta_enemy + delta_deaths)
        return delta_enemy + delta_deaths - delta_ally

    @staticmethod
    def _positive(value: float) -> float:
        return abs(value)

    def update_units(self) -> int | None:
        n_ally_alive = n_enemy_alive = 0
        self.previous_ally_units = deepcopy(self.agents)
        self.previous_enemy_units = deepcopy(self.enemies)
        by_tag = {u.tag: u for u in self._raw_units}
        for al_id, al_unit in self.agents.items():
            unit = by_tag.get(al_unit.tag)
            if unit is not None:
                self.agents[al_id] = unit
                n_ally_alive += 1
            else:
                al_unit.health = 0
        for e_id, e_unit in self.enemies.items():
            unit = by_tag.get(e_unit.tag)
            if unit is not None:
                self.enemies[e_id] = unit
                n_enemy_alive += 1
            else:
                e_unit.health = 0
        if (n_ally_alive == 0 and n_enemy_alive > 0) or self.only_medivac_left(ally=True):
            return -1
        if (n_ally_alive > 0 and n_enemy_alive == 0) or self.only_medivac_left(ally=False):
            return 1
        if n_ally_alive == 0 and n_enemy_alive == 0:
            return 0
        return None

    def only_medivac_left(self, ally: bool) -> bool:
        if self.map_type not in ("MMM", "terran_gen"):
            return False
        if ally:
            return not [a for a in self.agents.values() if a.health > 0 and a.unit_type != self.medivac_id]
        return not [a for a in self.enemies.values() if a.health > 0 and a.unit_type != STATS["medivac"]["sc2"]]

    def get_unit_by_id(self, a_id: int) -> Unit:
        return self.agents[a_id]

    def get_total_actions(self) -> int:
        return self.n_actions

    @staticmethod
    def distance(x1: float, y1: float, x2: float, y2: float) -> float:
        return math.hypot(x2 - x1, y2 - y1)

    def unit_shoot_range(self, agent_id: int) -> float:
        return 6

    def unit_sight_range(self, agent_id: int) -> float:
        return 9

    def unit_max_cooldown(self, unit: Unit) -> float:
        switcher = {
            self.marine_id: 15, self.marauder_id: 25, self.medivac_id: 200, self.stalker_id: 35,
            self.zealot_id: 22, self.colossus_id: 24, self.hydralisk_id: 10, self.zergling_id: 11,
            self.baneling_id: 1,
        }
        return switcher.get(unit.unit_type, 15)

    def unit_max_shield(self, unit: Unit):  # noqa: ANN201
        if unit.unit_type == 74 or unit.unit_type == self.stalker_id:
            return 80
        if unit.unit_type == 73 or unit.unit_type == self.zealot_id:
            return 50
        if unit.unit_type == 4 or unit.unit_type == self.colossus_id:
            return 150
        return None

    def can_move(self, unit: Unit, direction: int) -> bool:
        m = self._move_amount / 2
        if direction == Direction.NORTH:
            x, y = int(unit.pos.x), int(unit.pos.y + m)
        elif direction == Direction.SOUTH:
            x, y = int(unit.pos.x), int(unit.pos.y - m)
        elif direction == Direction.EAST:
            x, y = int(unit.pos.x + m), int(unit.pos.y)
        else:
            x, y = int(unit.pos.x - m), int(unit.pos.y)
        return bool(self.check_bounds(x, y) and self.pathing_grid[x, y])

    def get_surrounding_points(self, unit: Unit, include_self: bool = False) -> list[tuple[int, int]]:
        x, y, ma = int(unit.pos.x), int(unit.pos.y), self._move_amount
        points = [(x, y + 2 * ma), (x, y - 2 * ma), (x + 2 * ma, y), (x - 2 * ma, y),
                  (x + ma, y + ma), (x - ma, y - ma), (x + ma, y - ma), (x - ma, y + ma)]
        if include_self:
            points.append((x, y))
        return points

    def check_bounds(self, x: int, y: int) -> bool:
        return 0 <= x < self.map_x and 0 <= y < self.map_y

    def get_surrounding_pathing(self, unit: Unit) -> list:
        return [self.pathing_grid[x, y] if self.check_bounds(x, y) else 1
                for x, y in self.get_surrounding_points(unit)]

    def get_surrounding_height(self, unit: Unit) -> list:
        return [self.terrain_height[x, y] if self.check_bounds(x, y) else 1
                for x, y in self.get_surrounding_points(unit, include_self=True)]

    def get_obs(self) -> list[np.ndarray]:
        return [self.get_obs_agent(i) for i in range(self.n_agents)]

    def get_avail_actions(self) -> list[list[int]]:
        return [self.get_avail_agent_actions(i) for i in range(self.n_agents)]

    def get_stats(self) -> dict[str, Any]:
        return {"battles_won": self.battles_won, "battles_game": self.battles_game,
                "battles_draw": self.timeouts, "win_rate": self.battles_won / max(self.battles_game, 1),
                "timeouts": self.timeouts, "restarts": self.force_restarts}

    def save_replay(self) -> None:
        prefix = self.replay_prefix or self.map_name
        directory = Path(self.replay_dir) if self.replay_dir else sc2_base_dir() / "Replays"
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{prefix}_{time.strftime('%Y-%m-%d-%H-%M-%S')}_{self._total_steps}.SC2Replay"
        path.write_bytes(b"stand-in replay\n")

    def close(self) -> None:
        if self._sc2_proc:
            self._sc2_proc.close()

    def seed(self):  # noqa: ANN201
        return self._seed

    def render(self, mode: str = "human") -> None:
        pass

    # ------------------------------------------------------------------ unit setup
    def _ally_type(self, kind: str) -> int:
        order = self.ALLY_ORDER.get(self.map_type, [kind])
        return ALLY_TYPE_BASE + (order.index(kind) if kind in order else 0)

    def _place(self, kinds: list[str], owner: int) -> None:
        rng = self._rng
        n = len(kinds)
        cols = max(1, math.ceil(n / 12))
        for i, kind in enumerate(kinds):
            col, row = divmod(i, math.ceil(n / cols))
            x = (8.0 - col * 1.2) if owner == 1 else (24.0 + col * 1.2)
            y = 16.0 + (row - (min(n, math.ceil(n / cols)) - 1) / 2) * 1.1
            self._spawn(kind, owner, x + rng.uniform(-0.3, 0.3), float(np.clip(y + rng.uniform(-0.3, 0.3), 1.5, 30.5)))

    def _collect_units(self) -> None:
        raw = self._observe()
        self.agents, self.enemies = {}, {}
        allies = sorted([u for u in raw if u.owner == 1], key=attrgetter("unit_type", "pos.x", "pos.y"))
        for i, unit in enumerate(allies):
            self.agents[i] = unit
        for unit in raw:
            if unit.owner == 2:
                self.enemies[len(self.enemies)] = unit
                if self._episode_count == 0:
                    self.max_reward += unit.health_max + unit.shield_max
        assert len(self.agents) == self.n_agents and len(self.enemies) == self.n_enemies
