"""Stand-in for ``smacv2.env`` (stands in for StarCraft II)."""

from smacv2.env.multiagentenv import MultiAgentEnv
from smacv2.env.starcraft2.starcraft2 import StarCraft2Env
from smacv2.env.starcraft2.wrapper import StarCraftCapabilityEnvWrapper

__all__ = ["MultiAgentEnv", "StarCraft2Env", "StarCraftCapabilityEnvWrapper"]
