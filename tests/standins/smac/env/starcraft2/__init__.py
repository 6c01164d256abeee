"""Stand-in for ``smac.env.starcraft2`` (stands in for StarCraft II)."""
