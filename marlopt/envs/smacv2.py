"""SMACv2 over the real ``smacv2`` package's ``StarCraftCapabilityEnvWrapper``.

Maps (``MAPS``): ``{protoss,terran,zerg}_{5_vs_5,10_vs_10,20_vs_20,10_vs_11,20_vs_23}``, each the
official SMACv2 scenario (``smacv2/examples/configs/sc2_gen_<race>.yaml``; the settings HARL and
the SMACv2 paper ran): map ``10gen_<race>`` (episode limit 200), ``n_units`` allies vs
``n_enemies`` enemies drawn per episode by ``weighted_teams`` (protoss: stalker/zealot/colossus
0.45/0.45/0.1; terran: marine/marauder/medivac 0.45/0.45/0.1, never all medivacs; zerg:
zergling/baneling/hydralisk 0.45/0.1/0.45, never all banelings; teammates' types observed) and
start positions ``surrounded_and_reflect`` (p=0.5 on the 32x32 map), unit-specific sight and
attack ranges (``use_unit_ranges``, ``min_attack_range=2``), own position observed.

Options: ``state_type`` (``EP`` default: the env's ``get_state()``; ``FP``: the agent-specific
feature-pruned state, see ``marlopt.envs.sc2.fp_state.fp_state``), ``save_replay``,
``stacked_frames`` (as for SMAC), ``capability_config`` (a dict deep-merged over the scenario's,
e.g. ``{enemy_mask: {dist_type: mask, mask_probability: 0.5}}``), anything else goes to
``StarCraftCapabilityEnvWrapper``/``StarCraft2Env`` (``difficulty``, ``conic_fov``, ...).

Seeding: ``reset(seed)`` seeds the game (before its first launch) and the scenario generators
(their numpy generators and a private ``random.Random`` used while they draw), so the same seed
gives the same sequence of teams and start positions.

Install: ``pip install "smacv2 @ git+https://github.com/oxwhirl/smacv2.git"`` (not on PyPI), then
``bash scripts/install_sc2.sh`` (StarCraft II 4.10 and the SMACv2 maps into ``$SC2PATH``).
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np

from marlopt.envs.sc2 import (
    SC2UnavailableError,
    StarCraftEnv,
    check_continuous,
    check_sc2_install,
    import_attr,
    split_options,
)

PIP_SMACV2 = 'pip install "smacv2 @ git+https://github.com/oxwhirl/smacv2.git"'
FIX = (f"install SMACv2 with: {PIP_SMACV2} (it is not on PyPI), then StarCraft II 4.10 + maps with: "
       "bash scripts/install_sc2.sh")
MAP_FILE = "32x32_flat.SC2Map"  # the map every 10gen_<race> scenario is played on

RACES: dict[str, dict[str, Any]] = {
    "protoss": {"unit_types": ["stalker", "zealot", "colossus"], "weights": [0.45, 0.45, 0.1]},
    "terran": {"unit_types": ["marine", "marauder", "medivac"], "weights": [0.45, 0.45, 0.1],
               "exception_unit_types": ["medivac"]},
    "zerg": {"unit_types": ["zergling", "baneling", "hydralisk"], "weights": [0.45, 0.1, 0.45],
             "exception_unit_types": ["baneling"]},
}
SIZES = ((5, 5), (10, 10), (20, 20), (10, 11), (20, 23))
MAPS: dict[str, tuple[str, int, int]] = {
    f"{race}_{a}_vs_{e}": (race, a, e) for race in RACES for a, e in SIZES
}

# The official scenario settings (smacv2 examples / HARL smacv2_map_config), minus the map.
SCENARIO: dict[str, Any] = {
    "difficulty": "7",
    "game_version": None,
    "move_amount": 2,
    "obs_all_health": True,
    "obs_instead_of_state": False,
    "obs_last_action": False,
    "obs_own_health": True,
    "obs_pathing_grid": False,
    "obs_terrain_height": False,
    "obs_timestep_number": False,
    "reward_death_value": 10,
    "reward_defeat": 0,
    "reward_negative_scale": 0.5,
    "reward_only_positive": True,
    "reward_scale": True,
    "reward_scale_rate": 20,
    "reward_sparse": False,
    "reward_win": 200,
    "replay_dir": "",
    "replay_prefix": "",
    "conic_fov": False,
    "use_unit_ranges": True,
    "min_attack_range": 2,
    "obs_own_pos": True,
    "num_fov_actions": 12,
    "state_last_action": True,
    "state_timestep_number": False,
    "step_mul": 8,
    "heuristic_ai": False,
    "debug": False,
}

OWN_OPTIONS = ("state_type", "save_replay", "stacked_frames")
RESERVED = ("map_name", "continuing_episode")


def capability_config(map_name: str) -> dict[str, Any]:
    """The SMACv2 ``capability_config`` of one of ``MAPS`` (a fresh dict)."""
    race, n_units, n_enemies = MAPS[map_name]
    team = {"dist_type": "weighted_teams", **copy.deepcopy(RACES[race]), "observe": True}
    return {
        "n_units": n_units,
        "n_enemies": n_enemies,
        "team_gen": team,
        "start_positions": {"dist_type": "surrounded_and_reflect", "p": 0.5, "map_x": 32, "map_y": 32},
    }


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _reseed_generators(obj: Any, seq: np.random.SeedSequence, depth: int = 0) -> None:
    """Give every numpy ``Generator`` of a smacv2 distribution (and its sub-distributions) a child
    stream of ``seq``."""
    if depth > 3 or not hasattr(obj, "__dict__"):
        return
    for name, value in sorted(vars(obj).items()):
        if isinstance(value, np.random.Generator):
            setattr(obj, name, np.random.default_rng(seq.spawn(1)[0]))
        elif type(value).__module__.startswith("smacv2"):
            _reseed_generators(value, seq, depth + 1)


class SMACv2Env(StarCraftEnv):
    family = "smacv2"

    def __init__(self, raw: Any, map_name: str, **kwargs: Any) -> None:
        super().__init__(raw, getattr(raw, "env", raw), map_name, **kwargs)
        self._py_random = random.Random()

    def _reseed(self, seed: int) -> None:
        super()._reseed(seed)
        seq = np.random.SeedSequence([int(seed) % 2**63, 0x5C2])
        for dist in getattr(self._raw, "env_key_to_distribution_map", {}).values():
            _reseed_generators(dist, seq)
        self._py_random.seed(int(seq.generate_state(1)[0]))

    def _raw_reset(self) -> None:
        raw = self._raw
        dists = getattr(raw, "env_key_to_distribution_map", None)
        inner = getattr(raw, "env", None)
        if dists is None or inner is None:  # an unknown smacv2 layout: its own reset
            raw.reset()
            return
        # the wrapper's reset, with the distributions' python-random draws on our own stream
        saved = random.getstate()
        random.setstate(self._py_random.getstate())
        try:
            episode_config: dict[str, Any] = {}
            for dist in dists.values():
                episode_config.update(dist.generate())
        finally:
            self._py_random.setstate(random.getstate())
            random.setstate(saved)
        inner.reset(episode_config)


def check_available(map_name: str) -> None:
    """Raise ``SC2UnavailableError`` (one line with the fix) unless ``map_name`` can run here."""
    _check_map(map_name)
    _wrapper_class()
    check_sc2_install(MAP_FILE)


def _check_map(map_name: str) -> None:
    if map_name not in MAPS:
        raise ValueError(f"unknown SMACv2 map {map_name!r}; valid maps: {sorted(MAPS)}")


def _wrapper_class() -> Any:
    try:
        return import_attr("smacv2.env", "StarCraftCapabilityEnvWrapper", FIX)
    except SC2UnavailableError:
        return import_attr("smacv2.env.starcraft2.wrapper", "StarCraftCapabilityEnvWrapper", FIX)


def make(map_name: str, continuous: bool = False, **options: Any) -> SMACv2Env:
    """Build SMACv2 scenario ``map_name`` (see the module docstring for the options)."""
    _check_map(map_name)
    check_continuous(continuous, "smacv2")
    mine, rest = split_options(options, OWN_OPTIONS, RESERVED, "smacv2")
    cap = _merge(capability_config(map_name), dict(rest.pop("capability_config", None) or {}))
    check_available(map_name)
    cls = _wrapper_class()
    race = MAPS[map_name][0]
    kwargs = {**SCENARIO, **rest, "map_name": f"10gen_{race}", "continuing_episode": True,
              "capability_config": cap}
    try:
        raw = cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"invalid smacv2 option(s) {sorted(rest)}: {err}; valid options: "
                         f"{list(OWN_OPTIONS)} + capability_config + StarCraft2Env's keyword arguments") from err
    return SMACv2Env(raw, map_name, **mine)


__all__ = ["MAPS", "SC2UnavailableError", "SMACv2Env", "capability_config", "check_available", "make"]
