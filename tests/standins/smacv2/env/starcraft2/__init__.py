"""Stand-in for ``smacv2.env.starcraft2`` (stands in for StarCraft II)."""
