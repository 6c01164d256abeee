"""SMAX's maps and options: ``resolve_config(map_name, options) -> SmaxConfig`` checks them (no JAX
needed) and fills in the defaults (JaxMARL's SMAX benchmark settings; see ``marlopt.envs.smax``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from marlopt.envs.common import resolve_state_type
from marlopt.envs.smax.loading import registered_scenarios

# JaxMARL 0.2.0's scenarios: map -> (allies, enemies). Maps registered at run time with
# ``jaxmarl.environments.smax.register_scenario`` are accepted too.
MAPS: dict[str, tuple[int, int]] = {
    "3m": (3, 3),
    "8m": (8, 8),
    "25m": (25, 25),
    "2s3z": (5, 5),
    "3s5z": (8, 8),
    "5m_vs_6m": (5, 6),
    "10m_vs_11m": (10, 11),
    "27m_vs_30m": (27, 30),
    "3s5z_vs_3s6z": (8, 9),
    "3s_vs_5z": (3, 5),
    "6h_vs_8z": (6, 8),
    "smacv2_5_units": (5, 5),
    "smacv2_10_units": (10, 10),
    "smacv2_20_units": (20, 20),
}

OPTIONS = (
    "continuous", "state_type", "max_steps", "enemy_shoots", "attack_mode", "see_enemy_actions",
    "walls_cause_death", "won_battle_bonus", "observation_type", "device",
)  # fmt: skip
CONTINUOUS_DIMS = 4  # SMAX's continuous action: shoot_last_enemy, do_shoot, radius, angle


@dataclasses.dataclass(frozen=True)
class SmaxConfig:
    """A fully resolved SMAX configuration (the options of ``make`` with defaults filled in)."""

    map_name: str
    continuous: bool = False
    state_type: str = "EP"
    max_steps: int = 100
    enemy_shoots: bool = True
    attack_mode: str = "closest"
    see_enemy_actions: bool = True
    walls_cause_death: bool = True
    won_battle_bonus: float = 1.0
    observation_type: str = "unit_list"
    device: str = "cpu"


def resolve_config(map_name: str, options: dict[str, Any]) -> SmaxConfig:
    """Check ``map_name`` and ``options``; raise ``ValueError`` naming the valid ones."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown SMAX option(s) {unknown}; valid options: {list(OPTIONS)}")
    if map_name not in MAPS and map_name not in registered_scenarios():
        valid = sorted(set(MAPS) | set(registered_scenarios()))
        raise ValueError(f"unknown SMAX map {map_name!r}; valid maps: {valid}")
    opts = dict(options)
    state_type = resolve_state_type(opts.pop("state_type", None), "SMAX")
    cfg = SmaxConfig(map_name=map_name, state_type=state_type, **opts)
    cfg = dataclasses.replace(
        cfg,
        continuous=bool(cfg.continuous), max_steps=int(cfg.max_steps),
        enemy_shoots=bool(cfg.enemy_shoots), see_enemy_actions=bool(cfg.see_enemy_actions),
        walls_cause_death=bool(cfg.walls_cause_death), won_battle_bonus=float(cfg.won_battle_bonus),
        attack_mode=str(cfg.attack_mode), observation_type=str(cfg.observation_type),
        device=str(cfg.device),
    )  # fmt: skip
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")
    if cfg.attack_mode not in ("closest", "random"):
        raise ValueError(f"attack_mode must be 'closest' or 'random', got {cfg.attack_mode!r}")
    if cfg.observation_type not in ("unit_list", "conic"):
        raise ValueError(
            f"observation_type must be 'unit_list' or 'conic', got {cfg.observation_type!r}"
        )
    return cfg

