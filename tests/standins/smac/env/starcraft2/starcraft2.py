"""Stand-in for ``smac.env.starcraft2.starcraft2`` (it stands in for StarCraft II).

``StarCraft2Env`` takes the real constructor arguments and exposes the real methods; observations,
states and available actions follow SMAC's definitions (so their sizes equal the real ones), the
battle itself is ``_sc2_standin_core``'s small simulator.
"""

from __future__ import annotations

import atexit

import numpy as np
from _sc2_standin_core import ConnectionError, Direction, ProtocolError, StandinStarCraft2Env  # noqa: F401

from smac.env.multiagentenv import MultiAgentEnv
from smac.env.starcraft2.maps import get_map_params


class StarCraft2Env(StandinStarCraft2Env, MultiAgentEnv):
    """The StarCraft II environment for decentralised multi-agent micromanagement scenarios
    (stand-in)."""

    ALLY_ORDER = {
        "marines": ["marine"], "stalkers_and_zealots": ["stalker", "zealot"],
        "colossi_stalkers_zealots": ["colossus", "stalker", "zealot"],
        "MMM": ["marauder", "marine", "medivac"], "zealots": ["zealot"],
        "hydralisks": ["hydralisk"], "stalkers": ["stalker"], "colossus": ["colossus"],
        "bane": ["baneling", "zergling"],
    }

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
        replay_dir="",
        replay_prefix="",
        window_size_x=1920,
        window_size_y=1200,
        heuristic_ai=False,
        heuristic_rest=False,
        debug=False,
    ):
        kw = dict(locals())
        kw.pop("self")
        kw.pop("__class__", None)
        self.map_name = map_name
        map_params = get_map_params(map_name)
        self.n_agents = map_params["n_agents"]
        self.n_enemies = map_params["n_enemies"]
        self._setup(map_params, **kw)
        self.n_actions_no_attack = 6
        self.n_actions = self.n_actions_no_attack + self.n_enemies
        self._post_setup()
        self._unit_types = None
        self.ally_state_attr_names = ["health", "energy/cooldown", "rel_x", "rel_y"]
        self.enemy_state_attr_names = ["health", "rel_x", "rel_y"]
        if self.shield_bits_ally > 0:
            self.ally_state_attr_names += ["shield"]
        if self.shield_bits_enemy > 0:
            self.enemy_state_attr_names += ["shield"]
        if self.unit_type_bits > 0:
            bits = ["type_{}".format(bit) for bit in range(self.unit_type_bits)]
            self.ally_state_attr_names += bits
            self.enemy_state_attr_names += bits
        atexit.register(lambda: self.close())

    def get_env_info(self):
        env_info = super().get_env_info()
        env_info["agent_features"] = self.ally_state_attr_names
        env_info["enemy_features"] = self.enemy_state_attr_names
        return env_info

    def _map_file(self):
        return f"{self.map_name}.SC2Map"

    # ------------------------------------------------------------------ units
    def init_units(self):
        allies, enemies = self.map_params["units"]
        self._place(allies, owner=1)
        self._place(enemies, owner=2)
        self._collect_units()
        if self._episode_count == 0:
            min_unit_type = min(unit.unit_type for unit in self.agents.values())
            self._init_ally_unit_types(min_unit_type)

    def _init_ally_unit_types(self, min_unit_type):
        self._min_unit_type = min_unit_type
        if self.map_type == "marines":
            self.marine_id = min_unit_type
        elif self.map_type == "stalkers_and_zealots":
            self.stalker_id = min_unit_type
            self.zealot_id = min_unit_type + 1
        elif self.map_type == "colossi_stalkers_zealots":
            self.colossus_id = min_unit_type
            self.stalker_id = min_unit_type + 1
            self.zealot_id = min_unit_type + 2
        elif self.map_type == "MMM":
            self.marauder_id = min_unit_type
            self.marine_id = min_unit_type + 1
            self.medivac_id = min_unit_type + 2
        elif self.map_type == "zealots":
            self.zealot_id = min_unit_type
        elif self.map_type == "hydralisks":
            self.hydralisk_id = min_unit_type
        elif self.map_type == "stalkers":
            self.stalker_id = min_unit_type
        elif self.map_type == "colossus":
            self.colossus_id = min_unit_type
        elif self.map_type == "bane":
            self.baneling_id = min_unit_type
            self.zergling_id = min_unit_type + 1

    def get_unit_type_id(self, unit, ally):
        if ally:
            type_id = unit.unit_type - self._min_unit_type
        else:
            if self.map_type == "stalkers_and_zealots":
                type_id = unit.unit_type - 73
            elif self.map_type == "colossi_stalkers_zealots":
                type_id = 0 if unit.unit_type == 4 else (1 if unit.unit_type == 74 else 2)
            elif self.map_type == "bane":
                type_id = 0 if unit.unit_type == 9 else 1
            elif self.map_type == "MMM":
                type_id = 0 if unit.unit_type == 51 else (1 if unit.unit_type == 48 else 2)
        return type_id

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
            shoot_range = self.unit_shoot_range(agent_id)
            target_items = self.enemies.items()
            if self.map_type == "MMM" and unit.unit_type == self.medivac_id:
                target_items = [(t_id, t_unit) for (t_id, t_unit) in self.agents.items()
                                if t_unit.unit_type != self.medivac_id]
            for t_id, t_unit in target_items:
                if t_unit.health > 0:
                    dist = self.distance(unit.pos.x, unit.pos.y, t_unit.pos.x, t_unit.pos.y)
                    if dist <= shoot_range:
                        avail_actions[t_id + self.n_actions_no_attack] = 1
            return avail_actions
        return [1] + [0] * (self.n_actions - 1)

    # ------------------------------------------------------------------ observations
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

    def get_obs_ally_feats_size(self):
        nf_al = 4 + self.unit_type_bits
        if self.obs_all_health:
            nf_al += 1 + self.shield_bits_ally
        if self.obs_last_action:
            nf_al += self.n_actions
        return self.n_agents - 1, nf_al

    def get_obs_own_feats_size(self):
        own_feats = self.unit_type_bits
        if self.obs_own_health:
            own_feats += 1 + self.shield_bits_ally
        if self.obs_timestep_number:
            own_feats += 1
        return own_feats

    def get_obs_size(self):
        own_feats = self.get_obs_own_feats_size()
        move_feats = self.get_obs_move_feats_size()
        n_enemies, n_enemy_feats = self.get_obs_enemy_feats_size()
        n_allies, n_ally_feats = self.get_obs_ally_feats_size()
        return move_feats + n_enemies * n_enemy_feats + n_allies * n_ally_feats + own_feats

    def get_obs_agent(self, agent_id):
        unit = self.get_unit_by_id(agent_id)
        move_feats = np.zeros(self.get_obs_move_feats_size(), dtype=np.float32)
        enemy_feats = np.zeros(self.get_obs_enemy_feats_size(), dtype=np.float32)
        ally_feats = np.zeros(self.get_obs_ally_feats_size(), dtype=np.float32)
        own_feats = np.zeros(self.get_obs_own_feats_size(), dtype=np.float32)
        if unit.health > 0:
            x, y = unit.pos.x, unit.pos.y
            sight_range = self.unit_sight_range(agent_id)
            avail_actions = self.get_avail_agent_actions(agent_id)
            for m in range(self.n_actions_move):
                move_feats[m] = avail_actions[m + 2]
            ind = self.n_actions_move
            if self.obs_pathing_grid:
                move_feats[ind:ind + self.n_obs_pathing] = self.get_surrounding_pathing(unit)
                ind += self.n_obs_pathing
            if self.obs_terrain_height:
                move_feats[ind:] = self.get_surrounding_height(unit)
            for e_id, e_unit in self.enemies.items():
                e_x, e_y = e_unit.pos.x, e_unit.pos.y
                dist = self.distance(x, y, e_x, e_y)
                if dist < sight_range and e_unit.health > 0:
                    enemy_feats[e_id, 0] = avail_actions[self.n_actions_no_attack + e_id]
                    enemy_feats[e_id, 1] = dist / sight_range
                    enemy_feats[e_id, 2] = (e_x - x) / sight_range
                    enemy_feats[e_id, 3] = (e_y - y) / sight_range
                    ind = 4
                    if self.obs_all_health:
                        enemy_feats[e_id, ind] = e_unit.health / e_unit.health_max
                        ind += 1
                        if self.shield_bits_enemy > 0:
                            enemy_feats[e_id, ind] = e_unit.shield / self.unit_max_shield(e_unit)
                            ind += 1
                    if self.unit_type_bits > 0:
                        enemy_feats[e_id, ind + self.get_unit_type_id(e_unit, False)] = 1
            al_ids = [al_id for al_id in range(self.n_agents) if al_id != agent_id]
            for i, al_id in enumerate(al_ids):
                al_unit = self.get_unit_by_id(al_id)
                al_x, al_y = al_unit.pos.x, al_unit.pos.y
                dist = self.distance(x, y, al_x, al_y)
                if dist < sight_range and al_unit.health > 0:
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
                    if self.unit_type_bits > 0:
                        ally_feats[i, ind + self.get_unit_type_id(al_unit, True)] = 1
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
            if self.unit_type_bits > 0:
                own_feats[ind + self.get_unit_type_id(unit, True)] = 1
                ind += self.unit_type_bits
            if self.obs_timestep_number:
                own_feats[ind] = self._episode_steps / self.episode_limit
        return np.concatenate((move_feats.flatten(), enemy_feats.flatten(), ally_feats.flatten(),
                               own_feats.flatten()))

    # ------------------------------------------------------------------ state
    def get_state_size(self):
        if self.obs_instead_of_state:
            return self.get_obs_size() * self.n_agents
        nf_al = 4 + self.shield_bits_ally + self.unit_type_bits
        nf_en = 3 + self.shield_bits_enemy + self.unit_type_bits
        size = self.n_enemies * nf_en + self.n_agents * nf_al
        if self.state_last_action:
            size += self.n_agents * self.n_actions
        if self.state_timestep_number:
            size += 1
        return size

    def get_state(self):
        if self.obs_instead_of_state:
            return np.concatenate(self.get_obs(), axis=0).astype(np.float32)
        nf_al = 4 + self.shield_bits_ally + self.unit_type_bits
        nf_en = 3 + self.shield_bits_enemy + self.unit_type_bits
        ally_state = np.zeros((self.n_agents, nf_al))
        enemy_state = np.zeros((self.n_enemies, nf_en))
        center_x, center_y = self.map_x / 2, self.map_y / 2
        for al_id, al_unit in self.agents.items():
            if al_unit.health > 0:
                x, y = al_unit.pos.x, al_unit.pos.y
                max_cd = self.unit_max_cooldown(al_unit)
                ally_state[al_id, 0] = al_unit.health / al_unit.health_max
                if self.map_type == "MMM" and al_unit.unit_type == self.medivac_id:
                    ally_state[al_id, 1] = al_unit.energy / max_cd
                else:
                    ally_state[al_id, 1] = al_unit.weapon_cooldown / max_cd
                ally_state[al_id, 2] = (x - center_x) / self.max_distance_x
                ally_state[al_id, 3] = (y - center_y) / self.max_distance_y
                if self.shield_bits_ally > 0:
                    ally_state[al_id, 4] = al_unit.shield / self.unit_max_shield(al_unit)
                if self.unit_type_bits > 0:
                    type_id = self.get_unit_type_id(al_unit, True)
                    ally_state[al_id, type_id - self.unit_type_bits] = 1
        for e_id, e_unit in self.enemies.items():
            if e_unit.health > 0:
                x, y = e_unit.pos.x, e_unit.pos.y
                enemy_state[e_id, 0] = e_unit.health / e_unit.health_max
                enemy_state[e_id, 1] = (x - center_x) / self.max_distance_x
                enemy_state[e_id, 2] = (y - center_y) / self.max_distance_y
                if self.shield_bits_enemy > 0:
                    enemy_state[e_id, 3] = e_unit.shield / self.unit_max_shield(e_unit)
                if self.unit_type_bits > 0:
                    type_id = self.get_unit_type_id(e_unit, False)
                    enemy_state[e_id, type_id - self.unit_type_bits] = 1
        state = np.append(ally_state.flatten(), enemy_state.flatten())
        if self.state_last_action:
            state = np.append(state, self.last_action.flatten())
        if self.state_timestep_number:
            state = np.append(state, self._episode_steps / self.episode_limit)
        return state.astype(dtype=np.float32)
