"""Stand-in for ``smacv2.env.starcraft2.maps`` (stands in for StarCraft II)."""

from smacv2.env.starcraft2.maps.smac_maps import get_smac_map_registry


def get_map_params(map_name):
    return get_smac_map_registry()[map_name]
