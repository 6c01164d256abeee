"""Stand-in for ``smacv2.env.starcraft2.starcraft2`` (it stands in for StarCraft II).

SMACv2's ``StarCraft2Env``: the real constructor arguments (capability config, unit ranges, own
position, conic field of view), SMACv2's observation/state layouts and sizes (protoss_10_vs_10:
obs 182, state 310, 16 actions), teams and start positions taken from the episode config that the
capability wrapper draws. The battle is ``_sc2_standin_core``'s simulator.
"""

from __future__ import annotations

import atexit
import random

import numpy as np
from _sc2_standin_core import STATS, Direction, StandinStarCraft2Env

from smacv2.env.multiagentenv import MultiAgentEnv
from smacv2.env.starcraft2.maps import get_map_params

EPS = 1e-7
GEN_ORDER = ["baneling", "colossus", "hydralisk", "marauder", "marine", "medivac", "stalker", "zealot",
             "zergling"]


class StarCraft2Env(StandinStarCraft2Env, MultiAgentEnv):
    """SMACv2's StarCraft II environment (stand-in)."""

    v2 = True
    ALLY_ORDER = {t: GEN_ORDER for t in ("protoss_gen", "terran_gen", "zerg_gen")}

    def __init__(
        self,
        map_name="8m",
        step_mul=8,
        move_amount=2,
        difficulty="7",
        game_version=None,
        seed=None,
        continuing_episode=False,
        obs_all_health=True,
        obs_own_health=True,
        obs_last_action=False,
        obs_pathing_grid=False,
        obs_terrain_height=False,
        obs_instead_of_state=False,
        obs_timestep_number=False,
        obs_own_pos=False,
        obs_starcraft=True,
        conic_fov=False,
        num_fov_actions=12,
        state_last_action=True,
        state_timestep_number=False,
        reward_sparse=False,
        reward_only_positive=True,
        reward_death_value=10,
        reward_win=200,
        reward_defeat=0,
        reward_negative_scale=0.5,
        reward_scale=True,
        reward_scale_rate=20,
        use_unit_ranges=False,
        min_attack_range=2,
        kill_unit_step_mul=2,
        fully_observable=False,
        capability_config={},  # noqa: B006 - the real signature
        replay_dir="",
        replay_prefix="",
        window_size_x=1920,
        window_size_y=1200,
        heuristic_ai=False,
        heuristic_rest=False,
        debug=False,
        prob_obs_enemy=0.0,
        action_mask=True,
    ):
        kw = dict(locals())
        kw.pop("self")
        kw.pop("__class__", None)
        self.map_name = map_name
        map_params = get_map_params(map_name)
        self.obs_starcraft = obs_starcraft
        self.obs_own_pos = obs_own_pos
        self.capability_config = capability_config
        self.fully_observable = fully_observable
        self.stochastic_attack = "attack" in capability_config
        self.stochastic_health = "health" in capability_config
        self.replace_teammates = "team_gen" in capability_config
        self.mask_enemies = "enemy_mask" in capability_config
        if self.stochastic_attack:
            self.zero_pad_stochastic_attack = not capability_config["attack"]["observe"]
            self.observe_attack_probs = capability_config["attack"]["observe"]
        if self.stochastic_health:
            self.zero_pad_health = not capability_config["health"]["observe"]
            self.observe_teammate_health = capability_config["health"]["observe"]
        if self.replace_teammates:
            self.zero_pad_unit_types = not capability_config["team_gen"]["observe"]
            self.observe_teammate_types = capability_config["team_gen"]["observe"]
        team = capability_config.get("team_gen", {})
        self.n_agents = team["n_units"] if self.replace_teammates else map_params["n_agents"]
        self.n_enemies = team["n_enemies"] if self.replace_teammates else map_params["n_enemies"]
        self.prob_obs_enemy = prob_obs_enemy
        self.action_mask = action_mask
        self.random_start = "start_positions" in capability_config
        self.conic_fov = conic_fov
        self.n_fov_actions = num_fov_actions if conic_fov else 0
        self.use_unit_ranges = use_unit_ranges
        self.min_attack_range = min_attack_range
        self._kill_unit_step_mul = kill_unit_step_mul
        self._setup(map_params, **kw)
        self.n_actions_no_attack = self.n_actions_move + self.n_fov_actions + 2
        if map_params["map_type"] in ["MMM", "terran_gen"] and self.n_agents > self.n_enemies:
            self.n_actions = self.n_actions_no_attack + self.n_agents
        else:
            self.n_actions = self.n_actions_no_attack + self.n_enemies
        self._post_setup()
        self.fov_directions = np.zeros((self.n_agents, 2))
        self.fov_directions[:, 0] = 1.0
        self.agent_attack_probabilities = np.zeros(self.n_agents)
        self.agent_health_levels = np.zeros(self.n_agents)
        self.ally_state_attr_names = ["health", "energy/cooldown", "rel_x", "rel_y"]
        self.enemy_state_attr_names = ["health", "rel_x", "rel_y"]
        if self.shield_bits_ally > 0:
            self.ally_state_attr_names += ["shield"]
        if self.shield_bits_enemy > 0:
            self.enemy_state_attr_names += ["shield"]
        if self.conic_fov:
            self.ally_state_attr_names += ["fov_x", "fov_y"]
        self.capability_attr_names = []
        if self.stochastic_attack:
            self.capability_attr_names += ["attack_probability"]
        if self.stochastic_health:
            self.capability_attr_names += ["total_health"]
        if self.unit_type_bits > 0:
            bits = [f"type_{b}" for b in range(self.unit_type_bits)]
            self.capability_attr_names += bits
            self.enemy_state_attr_names += bits
        self.obs_enemies = None
        self.enemy_tags = None
        self._unit_types = None
        atexit.register(lambda: self.close())

    def _map_file(self):
        return f"{self.map_params['map_name']}.SC2Map"

    # ------------------------------------------------------------------ episode
    def reset(self, episode_config={}):  # noqa: B006 - the real signature
        self.episode_config = episode_config
        return super().reset(episode_config)

    def _reset_trackers(self, episode_config={}):  # noqa: B006
        super()._reset_trackers()
        self.agent_attack_probabilities = episode_config.get("attack", {}).get("item", None)
        self.agent_health_levels = episode_config.get("health", {}).get("item", None)
        self.enemy_mask = episode_config.get("enemy_mask", {}).get("item", None)
        self.ally_start_positions = episode_config.get("ally_start_positions", {}).get("item", None)
        self.enemy_start_positions = episode_config.get("enemy_start_positions", {}).get("item", None)
        self.mask_enemies = self.enemy_mask is not None
        self.obs_enemies = np.zeros((self.n_enemies, self.n_agents))
        self.enemy_tags = [None for _ in range(self.n_enemies)]
        self.fov_directions = np.zeros((self.n_agents, 2))
        self.fov_directions[:, 0] = 1.0

    def init_units(self, episode_config={}):  # noqa: B006
        ally_team = episode_config.get("team_gen", {}).get("ally_team", None)
        enemy_team = episode_config.get("team_gen", {}).get("enemy_team", None)
        if not (ally_team and enemy_team):  # no team generator: a fixed team of the race
            first = {"protoss_gen": "stalker", "terran_gen": "marine", "zerg_gen": "zergling"}[self.map_type]
            ally_team, enemy_team = [first] * self.n_agents, [first] * self.n_enemies
        self._init_ally_unit_types(0)
        self._create_team(list(ally_team), ally=True)
        self._create_team(list(enemy_team), ally=False)
        self._collect_units()
        self._unit_types = [u.unit_type for u in self.agents.values()] + [u.unit_type for u in self.enemies.values()]

    def _create_team(self, team, ally):
        if not self.random_start:
            pos = [(8.0, 16.0) if ally else (24.0, 16.0)] * len(team)
        else:
            arr = self.ally_start_positions if ally else self.enemy_start_positions
            pos = [(float(arr[i][0]), float(arr[i][1])) for i in range(arr.shape[0])]
        for unit_id, kind in enumerate(team):
            x, y = pos[unit_id]
            jitter = self._rng.uniform(-0.2, 0.2, size=2)
            self._spawn(str(kind), 1 if ally else 2, float(np.clip(x + jitter[0], 1.0, 31.0)),
                        float(np.clip(y + jitter[1], 1.0, 31.0)))

    def _init_ally_unit_types(self, min_unit_type):
        base = 1970
        self._min_unit_type = base
        (self.baneling_id, self.colossus_id, self.hydralisk_id, self.marauder_id, self.marine_id,
         self.medivac_id, self.stalker_id, self.zealot_id, self.zergling_id) = range(base, base + 9)

    def _step_info(self, info):
        info["dead_allies"] = sum(1 for u in self.agents.values() if u.health == 0)
        info["dead_enemies"] = sum(1 for u in self.enemies.values() if u.health == 0)

    @staticmethod
    def _positive(value):
        return max(value, 0)

    # ------------------------------------------------------------------ unit info
    def unit_shoot_range(self, agent_id):
        if self.use_unit_ranges:
            attack_range_map = {
                self.stalker_id: 6, self.zealot_id: 0.1, self.colossus_id: 7, self.zergling_id: 0.1,
                self.baneling_id: 0.25, self.hydralisk_id: 5, self.marine_id: 5, self.marauder_id: 6,
                self.medivac_id: 4,
            }
            return max(attack_range_map[self.agents[agent_id].unit_type], self.min_attack_range)
        return 6

    def unit_sight_range(self, agent_id):
        if self.use_unit_ranges:
            sight_range_map = {
                self.stalker_id: 10, self.zealot_id: 9, self.colossus_id: 10, self.zergling_id: 8,
                self.baneling_id: 8, self.hydralisk_id: 9, self.marine_id: 9, self.marauder_id: 10,
                self.medivac_id: 11,
            }
            return sight_range_map[self.agents[agent_id].unit_type]
        return 9

    def unit_max_shield(self, unit):
        if unit.unit_type in (74, self.stalker_id):
            return 80
        if unit.unit_type in (73, self.zealot_id):
            return 50
        if unit.unit_type in (4, self.colossus_id):
            return 150
        raise Exception("Maximum shield not recognised")

    def get_unit_type_id(self, unit, ally):
        protoss = {self.stalker_id: 0, 74: 0, self.zealot_id: 1, 73: 1, self.colossus_id: 2, 4: 2}
        terran = {self.marine_id: 0, 48: 0, self.marauder_id: 1, 51: 1, self.medivac_id: 2, 54: 2}
        zerg = {self.zergling_id: 0, 105: 0, self.hydralisk_id: 1, 107: 1, self.baneling_id: 2, 9: 2}
        table = {"protoss_gen": protoss, "terran_gen": terran, "zerg_gen": zerg}.get(self.map_type)
        if table is None or unit.unit_type not in table:
            raise AttributeError()
        return table[unit.unit_type]

    def only_medivac_left(self, ally):
        if self.map_type not in ("MMM", "terran_gen"):
            return False
        units = self.agents.values() if ally else self.enemies.values()
        medivac = self.medivac_id if ally else STATS["medivac"]["sc2"]
        return not [a for a in units if a.health > 0 and a.unit_type != medivac]

    # ------------------------------------------------------------------ actions
    def get_avail_agent_actions(self, agent_id):
        unit = self.get_unit_by_id(agent_id)
        if unit.health > 0:
            avail_actions = [0] * self.n_actions
            avail_actions[1] = 1
            if self.can_move(unit, Direction.NORTH):
                avail_actions[2] = 1
            if self.can_move(unit, Direction.SOUTH):
                avail_actions[3] = 1
            if self.can_move(unit, Direction.EAST):
                avail_actions[4] = 1
            if self.can_move(unit, Direction.WEST):
                avail_actions[5] = 1
            if self.conic_fov:
                avail_actions[6 : 6 + self.n_fov_actions] = [1] * self.n_fov_actions
            shoot_range = self.unit_shoot_range(agent_id)
            target_items = self.enemies.items()
            if self.map_type in ("MMM", "terran_gen") and unit.unit_type == self.medivac_id:
                target_items = [(t_id, t_unit) for (t_id, t_unit) in self.agents.items()
                                if t_unit.unit_type != self.medivac_id]
            for t_id, t_unit in target_items:
                if t_unit.health > 0:
                    if not self.action_mask:
                        avail_actions[t_id + self.n_actions_no_attack] = 1
                    else:
                        dist = self.distance(unit.pos.x, unit.pos.y, t_unit.pos.x, t_unit.pos.y)
                        if dist <= shoot_range:
                            avail_actions[t_id + self.n_actions_no_attack] = 1
            return avail_actions
        return [1] + [0] * (self.n_actions - 1)

    def get_true_avail_agent_actions(self, agent_id):
        saved, self.action_mask = self.action_mask, True
        try:
            return self.get_avail_agent_actions(agent_id)
        finally:
            self.action_mask = saved

    # ------------------------------------------------------------------ sizes
    def get_obs_move_feats_size(self):
        move_feats = self.n_actions_move
        if self.obs_pathing_grid:
            move_feats += self.n_obs_pathing
        if self.obs_terrain_height:
            move_feats += self.n_obs_height
        return move_feats

    def get_obs_enemy_feats_size(self):
        nf_en = 4 + self.unit_type_bits
        if self.obs_all_health:
            nf_en += 1 + self.shield_bits_enemy
        return self.n_enemies, nf_en

    def get_obs_ally_capability_size(self):
        cap_feats = self.unit_type_bits
        if self.stochastic_attack and (self.zero_pad_stochastic_attack or self.observe_attack_probs):
            cap_feats += 1
        if self.stochastic_health and (self.observe_teammate_health or self.zero_pad_health):
            cap_feats += 1
        return cap_feats

    def get_obs_ally_feats_size(self):
        nf_al = 4
        if self.obs_all_health:
            nf_al += 1 + self.shield_bits_ally
        if self.obs_last_action:
            nf_al += self.n_actions
        return self.n_agents - 1, nf_al + self.get_obs_ally_capability_size()

    def get_cap_size(self):
        cap_feats = 0
        if self.stochastic_attack:
            cap_feats += 1
        if self.stochastic_health:
            cap_feats += 1
        if self.unit_type_bits > 0:
            cap_feats += self.unit_type_bits
        return cap_feats

    def get_obs_own_feats_size(self):
        own_feats = self.get_cap_size()
        if self.obs_own_health and self.obs_starcraft:
            own_feats += 1 + self.shield_bits_ally
        if self.conic_fov and self.obs_starcraft:
            own_feats += 2
        if self.obs_own_pos and self.obs_starcraft:
            own_feats += 2
        return own_feats

    def get_obs_size(self):
        own_feats = self.get_obs_own_feats_size()
        move_feats = self.get_obs_move_feats_size()
        n_enemies, n_enemy_feats = self.get_obs_enemy_feats_size()
        n_allies, n_ally_feats = self.get_obs_ally_feats_size()
        if self.obs_starcraft:
            return (self.obs_timestep_number + move_feats + n_enemies * n_enemy_feats
                    + n_allies * n_ally_feats + own_feats)
        return 1 if self.obs_timestep_number else 0

    def get_ally_num_attributes(self):
        return len(self.ally_state_attr_names) + len(self.capability_attr_names)

    def get_enemy_num_attributes(self):
        return len(self.enemy_state_attr_names)

    def get_state_size(self):
        if self.obs_instead_of_state:
            return self.get_obs_size() * self.n_agents
        size = self.n_enemies * self.get_enemy_num_attributes() + self.n_agents * self.get_ally_num_attributes()
        if self.state_last_action:
            size += self.n_agents * self.n_actions
        if self.state_timestep_number:
            size += 1
        return size

    def get_env_info(self):
        env_info = super().get_env_info()
        env_info["agent_features"] = self.ally_state_attr_names + self.capability_attr_names
        env_info["enemy_features"] = self.enemy_state_attr_names
        return env_info

    # ------------------------------------------------------------------ observations
    def get_obs(self):
        agents = list(range(self.n_agents))
        random.shuffle(agents)
        obs = [None] * self.n_agents
        for agent in agents:
            obs[agent] = self.get_obs_agent(agent, fully_observable=self.fully_observable)
        return obs

    def get_obs_agent(self, agent_id, fully_observable=False):
        unit = self.get_unit_by_id(agent_id)
        move_feats = np.zeros(self.get_obs_move_feats_size(), dtype=np.float32)
        enemy_feats = np.zeros(self.get_obs_enemy_feats_size(), dtype=np.float32)
        ally_feats = np.zeros(self.get_obs_ally_feats_size(), dtype=np.float32)
        own_feats = np.zeros(self.get_obs_own_feats_size(), dtype=np.float32)
        if unit.health > 0 and self.obs_starcraft:
            x, y = unit.pos.x, unit.pos.y
            sight_range = self.unit_sight_range(agent_id)
            avail_actions = self.get_avail_agent_actions(agent_id)
            true_avail = self.get_true_avail_agent_actions(agent_id)
            for m in range(self.n_actions_move):
                move_feats[m] = avail_actions[m + 2]
            ind = self.n_actions_move
            if self.obs_pathing_grid:
                move_feats[ind : ind + self.n_obs_pathing] = self.get_surrounding_pathing(unit)
                ind += self.n_obs_pathing
            if self.obs_terrain_height:
                move_feats[ind:] = self.get_surrounding_height(unit)
            for e_id, e_unit in self.enemies.items():
                e_x, e_y = e_unit.pos.x, e_unit.pos.y
                dist = self.distance(x, y, e_x, e_y)
                visible = dist < sight_range
                if visible and self.enemy_tags[e_id] is None:
                    self.obs_enemies[e_id, agent_id] = 1
                    self.enemy_tags[e_id] = agent_id
                    for a_id in range(self.n_agents):
                        if a_id != agent_id and np.random.rand() < self.prob_obs_enemy:
                            self.obs_enemies[e_id, a_id] = 1
                if self.obs_enemies[e_id, agent_id] == 0:
                    visible = False
                if (visible and e_unit.health > 0) or (e_unit.health > 0 and fully_observable):
                    enemy_feats[e_id, 0] = true_avail[self.n_actions_no_attack + e_id]
                    enemy_feats[e_id, 1] = dist / sight_range
                    enemy_feats[e_id, 2] = (e_x - x) / sight_range
                    enemy_feats[e_id, 3] = (e_y - y) / sight_range
                    show = (self.mask_enemies and not self.enemy_mask[agent_id][e_id]) or not self.mask_enemies
                    ind = 4
                    if self.obs_all_health and show:
                        enemy_feats[e_id, ind] = e_unit.health / e_unit.health_max
                        ind += 1
                        if self.shield_bits_enemy > 0:
                            enemy_feats[e_id, ind] = e_unit.shield / self.unit_max_shield(e_unit)
                            ind += 1
                    if self.unit_type_bits > 0 and show:
                        enemy_feats[e_id, ind + self.get_unit_type_id(e_unit, False)] = 1
            al_ids = [al_id for al_id in range(self.n_agents) if al_id != agent_id]
            for i, al_id in enumerate(al_ids):
                al_unit = self.get_unit_by_id(al_id)
                al_x, al_y = al_unit.pos.x, al_unit.pos.y
                dist = self.distance(x, y, al_x, al_y)
                if (dist < sight_range and al_unit.health > 0) or (al_unit.health > 0 and fully_observable):
                    ally_feats[i, 0] = 1
                    ally_feats[i, 1] = dist / sight_range
                    ally_feats[i, 2] = (al_x - x) / sight_range
                    ally_feats[i, 3] = (al_y - y) / sight_range
                    ind = 4
                    if self.obs_all_health:
                        ally_feats[i, ind] = al_unit.health / al_unit.health_max
                        ind += 1
                        if self.shield_bits_ally > 0:
                            ally_feats[i, ind] = al_unit.shield / self.unit_max_shield(al_unit)
                            ind += 1
                    if self.stochastic_attack and (self.observe_attack_probs or self.zero_pad_stochastic_attack):
                        ind += 1
                    if self.stochastic_health and (self.observe_teammate_health or self.zero_pad_health):
                        ind += 1
                    if self.unit_type_bits > 0 and (not self.replace_teammates or self.observe_teammate_types):
                        ally_feats[i, ind + self.get_unit_type_id(al_unit, True)] = 1
                        ind += self.unit_type_bits
                    elif self.unit_type_bits > 0 and self.zero_pad_unit_types:
                        ind += self.unit_type_bits
                    if self.obs_last_action:
                        ally_feats[i, ind:] = self.last_action[al_id]
            ind = 0
            if self.obs_own_health:
                own_feats[ind] = unit.health / unit.health_max
                ind += 1
                if self.shield_bits_ally > 0:
                    own_feats[ind] = unit.shield / self.unit_max_shield(unit)
                    ind += 1
            if self.stochastic_attack:
                ind += 1
            if self.stochastic_health:
                ind += 1
            if self.obs_own_pos:
                own_feats[ind] = x / self.map_x
                own_feats[ind + 1] = y / self.map_y
                ind += 2
            if self.conic_fov:
                own_feats[ind : ind + 2] = self.fov_directions[agent_id]
                ind += 2
            if self.unit_type_bits > 0:
                own_feats[ind + self.get_unit_type_id(unit, True)] = 1
        agent_obs = np.concatenate((move_feats.flatten(), enemy_feats.flatten(), ally_feats.flatten(),
                                    own_feats.flatten()))
        if self.obs_timestep_number:
            agent_obs = np.append(agent_obs, self._episode_steps / self.episode_limit)
        return agent_obs

    def get_state(self):
        if self.obs_instead_of_state:
            return np.concatenate(self.get_obs(), axis=0).astype(np.float32)
        d = self.get_state_dict()
        state = np.append(d["allies"].flatten(), d["enemies"].flatten())
        if "last_action" in d:
            state = np.append(state, d["last_action"].flatten())
        if "timestep" in d:
            state = np.append(state, d["timestep"])
        return state.astype(dtype=np.float32)

    def get_state_dict(self):
        ally_state = np.zeros((self.n_agents, self.get_ally_num_attributes()))
        enemy_state = np.zeros((self.n_enemies, self.get_enemy_num_attributes()))
        center_x, center_y = self.map_x / 2, self.map_y / 2
        for al_id, al_unit in self.agents.items():
            if al_unit.health > 0:
                x, y = al_unit.pos.x, al_unit.pos.y
                max_cd = self.unit_max_cooldown(al_unit)
                ally_state[al_id, 0] = al_unit.health / al_unit.health_max
                if self.map_type in ["MMM", "terran_gen"] and al_unit.unit_type == self.medivac_id:
                    ally_state[al_id, 1] = al_unit.energy / max_cd
                else:
                    ally_state[al_id, 1] = al_unit.weapon_cooldown / max_cd
                ally_state[al_id, 2] = (x - center_x) / self.max_distance_x
                ally_state[al_id, 3] = (y - center_y) / self.max_distance_y
                ind = 4
                if self.shield_bits_ally > 0:
                    ally_state[al_id, ind] = al_unit.shield / self.unit_max_shield(al_unit)
                    ind += 1
                if self.unit_type_bits > 0:
                    ally_state[al_id, self.get_unit_type_id(al_unit, True) - self.unit_type_bits] = 1
        for e_id, e_unit in self.enemies.items():
            if e_unit.health > 0:
                x, y = e_unit.pos.x, e_unit.pos.y
                enemy_state[e_id, 0] = e_unit.health / e_unit.health_max
                enemy_state[e_id, 1] = (x - center_x) / self.max_distance_x
                enemy_state[e_id, 2] = (y - center_y) / self.max_distance_y
                if self.shield_bits_enemy > 0:
                    enemy_state[e_id, 3] = e_unit.shield / self.unit_max_shield(e_unit)
                if self.unit_type_bits > 0:
                    enemy_state[e_id, self.get_unit_type_id(e_unit, False) - self.unit_type_bits] = 1
        state = {"allies": ally_state, "enemies": enemy_state}
        if self.state_last_action:
            state["last_action"] = self.last_action
        if self.state_timestep_number:
            state["timestep"] = self._episode_steps / self.episode_limit
        return state

    def get_capabilities_agent(self, agent_id):
        unit = self.get_unit_by_id(agent_id)
        cap = np.zeros(self.get_cap_size(), dtype=np.float32)
        ind = int(self.stochastic_attack) + int(self.stochastic_health)
        if self.unit_type_bits > 0:
            cap[ind + self.get_unit_type_id(unit, True)] = 1
        return cap

    def get_capabilities(self):
        return np.concatenate([self.get_capabilities_agent(i) for i in range(self.n_agents)]).astype(np.float32)

    def get_unit_types(self):
        return self._unit_types
