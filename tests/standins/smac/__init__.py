"""Stand-in for the ``smac`` package (StarCraft Multi-Agent Challenge): it stands in for StarCraft II,
which cannot run here. Same API as ``smac.env.StarCraft2Env``; see ``_sc2_standin_core``."""

STANDIN = True
