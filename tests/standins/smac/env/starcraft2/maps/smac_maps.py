"""Stand-in for ``smac.env.starcraft2.maps.smac_maps`` (stands in for StarCraft II): SMAC's map
parameters, plus the unit composition of each map (``units``: allies, enemies) for the stand-in."""


def _p(n_agents, n_enemies, limit, a_race, b_race, unit_type_bits, map_type, allies, enemies):
    return {
        "n_agents": n_agents, "n_enemies": n_enemies, "limit": limit, "a_race": a_race,
        "b_race": b_race, "unit_type_bits": unit_type_bits, "map_type": map_type,
        "units": (allies, enemies),
    }


def _n(kind, k):
    return [kind] * k


MMM_ALLIES = ["medivac"] + _n("marauder", 2) + _n("marine", 7)

map_param_registry = {
    "3m": _p(3, 3, 60, "T", "T", 0, "marines", _n("marine", 3), _n("marine", 3)),
    "8m": _p(8, 8, 120, "T", "T", 0, "marines", _n("marine", 8), _n("marine", 8)),
    "25m": _p(25, 25, 150, "T", "T", 0, "marines", _n("marine", 25), _n("marine", 25)),
    "5m_vs_6m": _p(5, 6, 70, "T", "T", 0, "marines", _n("marine", 5), _n("marine", 6)),
    "8m_vs_9m": _p(8, 9, 120, "T", "T", 0, "marines", _n("marine", 8), _n("marine", 9)),
    "10m_vs_11m": _p(10, 11, 150, "T", "T", 0, "marines", _n("marine", 10), _n("marine", 11)),
    "27m_vs_30m": _p(27, 30, 180, "T", "T", 0, "marines", _n("marine", 27), _n("marine", 30)),
    "MMM": _p(10, 10, 150, "T", "T", 3, "MMM", MMM_ALLIES, MMM_ALLIES),
    "MMM2": _p(10, 12, 180, "T", "T", 3, "MMM", MMM_ALLIES,
               ["medivac"] + _n("marauder", 3) + _n("marine", 8)),
    "2s3z": _p(5, 5, 120, "P", "P", 2, "stalkers_and_zealots", _n("stalker", 2) + _n("zealot", 3),
               _n("stalker", 2) + _n("zealot", 3)),
    "3s5z": _p(8, 8, 150, "P", "P", 2, "stalkers_and_zealots", _n("stalker", 3) + _n("zealot", 5),
               _n("stalker", 3) + _n("zealot", 5)),
    "3s5z_vs_3s6z": _p(8, 9, 170, "P", "P", 2, "stalkers_and_zealots",
                       _n("stalker", 3) + _n("zealot", 5), _n("stalker", 3) + _n("zealot", 6)),
    "3s_vs_3z": _p(3, 3, 150, "P", "P", 0, "stalkers", _n("stalker", 3), _n("zealot", 3)),
    "3s_vs_4z": _p(3, 4, 200, "P", "P", 0, "stalkers", _n("stalker", 3), _n("zealot", 4)),
    "3s_vs_5z": _p(3, 5, 250, "P", "P", 0, "stalkers", _n("stalker", 3), _n("zealot", 5)),
    "1c3s5z": _p(9, 9, 180, "P", "P", 3, "colossi_stalkers_zealots",
                 ["colossus"] + _n("stalker", 3) + _n("zealot", 5),
                 ["colossus"] + _n("stalker", 3) + _n("zealot", 5)),
    "2m_vs_1z": _p(2, 1, 150, "T", "P", 0, "marines", _n("marine", 2), ["zealot"]),
    "corridor": _p(6, 24, 400, "P", "Z", 0, "zealots", _n("zealot", 6), _n("zergling", 24)),
    "6h_vs_8z": _p(6, 8, 150, "Z", "P", 0, "hydralisks", _n("hydralisk", 6), _n("zealot", 8)),
    "2s_vs_1sc": _p(2, 1, 300, "P", "Z", 0, "stalkers", _n("stalker", 2), ["spinecrawler"]),
    "so_many_baneling": _p(7, 32, 100, "P", "Z", 0, "zealots", _n("zealot", 7), _n("baneling", 32)),
    "bane_vs_bane": _p(24, 24, 200, "Z", "Z", 2, "bane", _n("zergling", 20) + _n("baneling", 4),
                       _n("zergling", 20) + _n("baneling", 4)),
    "2c_vs_64zg": _p(2, 64, 400, "P", "Z", 0, "colossus", _n("colossus", 2), _n("zergling", 64)),
}


def get_smac_map_registry():
    return map_param_registry
