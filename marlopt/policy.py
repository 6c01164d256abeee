"""The deployed policy, whatever trained it: the ``Policy`` protocol and ``load_policy``.

Evaluation, ``python -m marlopt.evaluate`` and a researcher's own loop see only a :class:`Policy`.
Three lines load a trained one::

    from marlopt import load_policy
    policy = load_policy("runs/mpe/simple_spread/mappo/seed0_20261206-101500")
    state = policy.initial_state(n_envs)
    actions, state = policy.act(obs, avail, state)       # obs [E, N, obs_dim], numpy in and out

``state`` is the policy's memory (a recurrent actor's hidden state; ``None`` for a feed-forward
one). Its first axis is the env: where episode ``e`` ends, reset it with
``state[e] = policy.initial_state(n_envs)[e]`` (:func:`reset_finished`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """A decentralised policy for ``E`` envs of ``N`` agents."""

    def initial_state(self, n_envs: int) -> Any:
        """The memory at the start of an episode, for ``n_envs`` envs (``None``: no memory)."""

    def act(self, obs: np.ndarray, avail: np.ndarray | None, state: Any,
            greedy: bool = True) -> tuple[np.ndarray, Any]:
        """``obs[E, N, obs_dim]``, ``avail[E, N, A]`` (bool; ``None``: all available) -> actions
        ``[E, N]`` (int) or ``[E, N, A]`` (float, continuous) and the next state. ``greedy``: the
        mode of each agent's distribution, else a sample."""


def reset_finished(policy: Policy, state: Any, finished: np.ndarray) -> Any:
    """``state`` with the envs ``finished`` (bool ``[E]``) back at their initial state."""
    if state is None or not finished.any():
        return state
    fresh = policy.initial_state(len(finished))
    index = np.flatnonzero(finished)
    state[index] = fresh[index]
    return state


class ActorPolicy:
    """A :class:`Policy` over marlopt's actor network (``marlopt.models.Actor``), on its device."""

    def __init__(self, actor: Any):
        self.actor = actor

    @property
    def device(self) -> Any:
        return next(self.actor.parameters()).device

    def initial_state(self, n_envs: int) -> Any:
        return self.actor.initial_hidden(n_envs, self.device) if self.actor.hidden_size else None

    def act(self, obs: np.ndarray, avail: np.ndarray | None, state: Any,
            greedy: bool = True, env_state: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """``env_state`` reaches the network (a decentralised actor ignores it; a centralised one,
        MAGPO's guider, may read it)."""
        import torch

        device = self.device
        as_tensor = (lambda x: None if x is None else torch.as_tensor(x, device=device))
        actions, _, state = self.actor.act(as_tensor(obs), as_tensor(avail), state, deterministic=greedy,
                                           env_state=as_tensor(env_state))
        return actions.cpu().numpy(), state


def load_policy(run_dir: str | Path, checkpoint: str = "latest", device: str = "cpu") -> Policy:
    """The deployed policy of a finished or running marlopt run.

    ``checkpoint``: ``latest``, ``step_<frames>`` or a path to a ``.pt`` file. The run's saved
    config tells which algorithm and networks to rebuild; the env is made once to read its
    spec (observation and action sizes), so its simulator must be installed.
    """
    return load_run(run_dir, checkpoint, device).policy


class LoadedRun(NamedTuple):
    policy: Policy
    cfg: Any  # the run's TrainConfig
    checkpoint: Path
    frames: int  # env frames the checkpoint had trained on


def load_run(run_dir: str | Path, checkpoint: str = "latest", device: str = "cpu") -> LoadedRun:
    """:func:`load_policy` with the run's config, the checkpoint's path and its frame count."""
    import torch

    from marlopt.algos.registry import build_rule
    from marlopt.checkpoint import load_checkpoint, resolve_checkpoint
    from marlopt.cli import load_run_config
    from marlopt.envs import env_fn
    from marlopt.envs.registry import check_env

    run_dir = Path(run_dir)
    _, cfg = load_run_config(run_dir)
    check_env(cfg.env.name, cfg.env.map_name)
    path = resolve_checkpoint(run_dir, checkpoint)
    payload = load_checkpoint(path)
    probe = env_fn(cfg.env.name, cfg.env.map_name, cfg.env.maker_options())()
    try:
        spec = probe.spec
    finally:
        probe.close()
    rule = build_rule(spec, cfg.algo, cfg.model, torch.device(device))
    rule.load_state_dict(payload["rule"])
    return LoadedRun(rule.eval_policy(), cfg, path, int(payload["counters"]["frames"]))
