"""What the SMAC and SMACv2 wrappers (``marlopt.envs.smac``, ``marlopt.envs.smacv2``) share. One job
per module:

- ``adapter``: ``StarCraftEnv``, the ``MultiAgentEnv`` adapter of a SMAC-family env (its contract:
  states, wins, time limits, crashes, close), and the option checks of the makers;
- ``fp_state``: the feature-pruned agent-specific state (``state_type="FP"``);
- ``install``: is StarCraft II (and a map) installed here? (``SC2UnavailableError``);
- ``guard``: StarCraft II must not outlive the process that launched it;
- ``watchdog``: the script ``guard`` runs in a child process to kill orphaned games.

Numpy only; ``smac``/``smacv2`` are imported by the makers, lazily.
"""

from marlopt.envs.sc2.adapter import SC2CrashError, StarCraftEnv, check_continuous, split_options
from marlopt.envs.sc2.fp_state import fp_state, fp_state_dim
from marlopt.envs.sc2.guard import sc2_popen
from marlopt.envs.sc2.install import INSTALL_SC2, SC2UnavailableError, check_sc2_install, import_attr

__all__ = [
    "INSTALL_SC2",
    "SC2CrashError",
    "SC2UnavailableError",
    "StarCraftEnv",
    "check_continuous",
    "check_sc2_install",
    "fp_state",
    "fp_state_dim",
    "import_attr",
    "sc2_popen",
    "split_options",
]
