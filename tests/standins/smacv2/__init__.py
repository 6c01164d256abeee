"""Stand-in for the ``smacv2`` package: it stands in for StarCraft II, which cannot run here. Same API
as ``smacv2.env.StarCraftCapabilityEnvWrapper`` / ``StarCraft2Env``; see ``_sc2_standin_core``."""

STANDIN = True
