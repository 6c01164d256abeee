"""``ProcessVectorEnv``: the ``VectorEnv`` of any ``MultiAgentEnv``, in this process and/or in spawn
worker processes, with crash restarts. One job per module:

- ``process_env``: ``ProcessVectorEnv`` itself (modes, commands, restart accounting, checkpoints);
- ``group``: ``EnvGroup``, a slice of the envs stepped in one process (auto-reset, env rebuilds);
- ``worker``: the main loop of a worker process (it owns one ``EnvGroup``);
- ``handle``: the parent's handle on one worker process (start, pipe I/O with deadlines, stop);
- ``wire``: what goes through the pipes (named array layouts, the binary step block, the tags).

Numpy only, like the rest of ``marlopt.envs``: worker processes import this package.
"""

from marlopt.envs.vector.process_env import ProcessVectorEnv

__all__ = ["ProcessVectorEnv"]
