"""Stand-in for ``smac.env`` (stands in for StarCraft II)."""

from smac.env.multiagentenv import MultiAgentEnv
from smac.env.starcraft2.starcraft2 import StarCraft2Env

__all__ = ["MultiAgentEnv", "StarCraft2Env"]
