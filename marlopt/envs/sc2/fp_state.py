"""The feature-pruned agent-specific state (``state_type="FP"``) of SMAC and SMACv2 battles.

The state of the MAPPO reference (Yu et al. 2022: ``use_state_agent`` + ``use_mustalive`` +
``add_center_xy``; HARL's "FP"): one row per agent, agent ``i``'s view of the whole battle; once that
agent is dead, all zeros but its one-hot id (as the reference's ``get_state_agent``). ``sc`` is
SMAC's/SMACv2's ``StarCraft2Env``; numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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

    Layout of a row (``sight`` = the agent's sight range; centre = the map centre). A dead agent's
    row is all zeros except its one-hot id (``use_mustalive``): the MAPPO reference's
    ``StarCraft2_Env.get_state_agent`` (marlbenchmark/on-policy, ``onpolicy/envs/starcraft2``;
    HARL's ``harl/envs/smac/StarCraft2_Env.py`` alike) zeroes the features under
    ``if use_mustalive and unit.health > 0`` but appends ``agent_id_feats`` outside that branch.

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
        row = out[i]
        row[off_id + i] = 1.0  # the id is kept once the agent is dead (reference)
        if not alive[i]:
            continue
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
    return out

