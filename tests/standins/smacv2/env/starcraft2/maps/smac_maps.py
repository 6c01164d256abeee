"""Stand-in for ``smacv2.env.starcraft2.maps.smac_maps`` (stands in for StarCraft II): the
procedurally generated ``10gen_<race>`` maps, all played on ``32x32_flat``."""

map_param_registry = {
    "10gen_terran": {"n_agents": 10, "n_enemies": 10, "limit": 200, "a_race": "T", "b_race": "T",
                     "unit_type_bits": 3, "map_type": "terran_gen", "map_name": "32x32_flat"},
    "10gen_zerg": {"n_agents": 10, "n_enemies": 10, "limit": 200, "a_race": "Z", "b_race": "Z",
                   "unit_type_bits": 3, "map_type": "zerg_gen", "map_name": "32x32_flat"},
    "10gen_protoss": {"n_agents": 10, "n_enemies": 10, "limit": 200, "a_race": "P", "b_race": "P",
                      "unit_type_bits": 3, "map_type": "protoss_gen", "map_name": "32x32_flat"},
}


def get_smac_map_registry():
    return map_param_registry
