"""Stand-in for ``smacv2.env.starcraft2.distributions`` (stands in for StarCraft II): the scenario
generators SMACv2 draws teams and start positions from (same config keys, same outputs)."""

from __future__ import annotations

from copy import deepcopy
from math import inf
from random import shuffle
from typing import Any

import numpy as np
from numpy.random import default_rng

DISTRIBUTION_MAP: dict[str, type] = {}


def get_distribution(key):
    return DISTRIBUTION_MAP[key]


def register_distribution(key, cls):
    DISTRIBUTION_MAP[key] = cls


class Distribution:
    def generate(self) -> dict[str, Any]:
        raise NotImplementedError

    @property
    def n_tasks(self):
        return inf


class WeightedTeamsDistribution(Distribution):
    def __init__(self, config):
        self.config = config
        self.units = np.array(config["unit_types"])
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.weights = np.array(config["weights"])
        self.exceptions = config.get("exception_unit_types", set())
        self.rng = default_rng()
        self.env_key = config["env_key"]

    def _gen_team(self, n_units, use_exceptions):
        team = []
        while not team or (all(member in self.exceptions for member in team) and use_exceptions):
            team = list(self.rng.choice(self.units, size=(n_units,), p=self.weights))
            shuffle(team)
        return team

    def generate(self):
        team = self._gen_team(self.n_units, use_exceptions=True)
        enemy_team = team.copy()
        if self.n_enemies > self.n_units:
            enemy_team.extend(self._gen_team(self.n_enemies - self.n_units, use_exceptions=True))
        elif self.n_enemies < self.n_units:
            enemy_team = enemy_team[: self.n_enemies]
        return {self.env_key: {"ally_team": team, "enemy_team": enemy_team, "id": 0}}


register_distribution("weighted_teams", WeightedTeamsDistribution)


class PerAgentUniformDistribution(Distribution):
    def __init__(self, config):
        self.config = config
        self.lower_bound = config["lower_bound"]
        self.upper_bound = config["upper_bound"]
        self.env_key = config["env_key"]
        self.n_units = config["n_units"]
        self.rng = default_rng()

    def generate(self):
        probs = self.rng.uniform(low=self.lower_bound, high=self.upper_bound,
                                 size=(self.n_units, len(self.lower_bound)))
        return {self.env_key: {"item": probs, "id": 0}}


register_distribution("per_agent_uniform", PerAgentUniformDistribution)


class MaskDistribution(Distribution):
    def __init__(self, config):
        self.config = config
        self.mask_probability = config["mask_probability"]
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.rng = default_rng()

    def generate(self):
        mask = self.rng.choice([0, 1], size=(self.n_units, self.n_enemies),
                               p=[self.mask_probability, 1.0 - self.mask_probability])
        return {"enemy_mask": {"item": mask, "id": 0}}


register_distribution("mask", MaskDistribution)


class ReflectPositionDistribution(Distribution):
    def __init__(self, config):
        self.config = config
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.map_x = config["map_x"]
        self.map_y = config["map_y"]
        cfg = deepcopy(config)
        cfg["env_key"] = "ally_start_positions"
        cfg["lower_bound"] = (0, 0)
        cfg["upper_bound"] = (self.map_x / 2 - 1, self.map_y)
        self.pos_generator = PerAgentUniformDistribution(cfg)
        if self.n_enemies > self.n_units:
            ecfg = deepcopy(config)
            ecfg["env_key"] = "enemy_start_positions"
            ecfg["lower_bound"] = (self.map_x / 2, 0)
            ecfg["upper_bound"] = (self.map_x, self.map_y)
            ecfg["n_units"] = self.n_enemies - self.n_units
            self.enemy_pos_generator = PerAgentUniformDistribution(ecfg)

    def generate(self):
        ally = self.pos_generator.generate()["ally_start_positions"]["item"]
        enemy = np.zeros((self.n_enemies, 2))
        if self.n_enemies >= self.n_units:
            enemy[: self.n_units, 0] = self.map_x - ally[:, 0]
            enemy[: self.n_units, 1] = ally[:, 1]
            if self.n_enemies > self.n_units:
                enemy[self.n_units:, :] = self.enemy_pos_generator.generate()["enemy_start_positions"]["item"]
        else:
            enemy[:, 0] = self.map_x - ally[: self.n_enemies, 0]
            enemy[:, 1] = ally[: self.n_enemies, 1]
        return {"ally_start_positions": {"item": ally, "id": 0},
                "enemy_start_positions": {"item": enemy, "id": 0}}


register_distribution("reflect_position", ReflectPositionDistribution)


class SurroundedPositionDistribution(Distribution):
    def __init__(self, config):
        self.config = config
        self.n_units = config["n_units"]
        self.n_enemies = config["n_enemies"]
        self.map_x = config["map_x"]
        self.map_y = config["map_y"]
        self.rng = default_rng()

    def generate(self):
        offset = 2
        centre = np.array([self.map_x / 2, self.map_y / 2])
        diag_centre = {
            0: np.array([self.map_x / 2 - offset, self.map_y / 2 - offset]),
            1: np.array([self.map_x / 2 - offset, self.map_y / 2 + offset]),
            2: np.array([self.map_x / 2 + offset, self.map_y / 2 + offset]),
            3: np.array([self.map_x / 2 + offset, self.map_y / 2 - offset]),
        }
        corner = {0: np.array([0, 0]), 1: np.array([0, self.map_y]),
                  2: np.array([self.map_x, self.map_y]), 3: np.array([self.map_x, 0])}
        ally = np.tile(centre, (self.n_units, 1))
        enemy = np.zeros((self.n_enemies, 2))
        n_groups = self.rng.integers(1, 5)
        membership = self.rng.multinomial(self.n_enemies, np.ones(n_groups) / n_groups)
        where = self.rng.uniform(size=(n_groups,))
        diagonals = self.rng.choice(np.array(range(4)), size=(n_groups,), replace=False)
        k = 0
        for i in range(n_groups):
            t = where[i]
            enemy[k : k + membership[i], :] = diag_centre[diagonals[i]] * t + corner[diagonals[i]] * (1 - t)
            k += membership[i]
        return {"ally_start_positions": {"item": ally, "id": 0},
                "enemy_start_positions": {"item": enemy, "id": 0}}


register_distribution("surrounded", SurroundedPositionDistribution)


class SurroundedAndReflectPositionDistribution(Distribution):
    def __init__(self, config):
        self.p_threshold = config["p"]
        self.surrounded_distribution = SurroundedPositionDistribution(config)
        self.reflect_distribution = ReflectPositionDistribution(config)
        self.rng = default_rng()

    def generate(self):
        if self.rng.random() > self.p_threshold:
            return self.surrounded_distribution.generate()
        return self.reflect_distribution.generate()


register_distribution("surrounded_and_reflect", SurroundedAndReflectPositionDistribution)
