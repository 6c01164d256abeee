"""Stand-in for ``smac.env.starcraft2.maps`` (stands in for StarCraft II)."""

from smac.env.starcraft2.maps.smac_maps import get_smac_map_registry


def get_map_params(map_name):
    registry = get_smac_map_registry()
    return registry[map_name]
