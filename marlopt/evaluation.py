"""Greedy evaluation of the deployed (decentralised) policy on separately seeded envs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from marlopt.envs import MultiAgentEnv, VectorEnv
from marlopt.models import Actor


@torch.inference_mode()
def evaluate_policy(
    actor: Actor,
    env_fns: list[Callable[[], MultiAgentEnv]],
    episodes: int,
    seeds: list[int],
    deterministic: bool = True,
) -> dict[str, float]:
    """Run ``episodes`` episodes (spread evenly over ``len(env_fns)`` envs) with ``actor``.

    Returns ``return_mean``/``return_std``/``length_mean`` and ``win_rate`` where the env has wins.
    The actor runs on its current device; the env loop is in-process.
    """
    device = next(actor.parameters()).device
    envs = VectorEnv(env_fns[: min(episodes, len(env_fns))], mode="inproc")
    try:
        n = envs.num_envs
        quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
        obs, _, avail, _ = envs.reset(seeds[:n])
        h = actor.initial_hidden(n, device) if actor.hidden_size else None
        returns: list[float] = []
        lengths: list[float] = []
        wins: list[float] = []
        done_count = np.zeros(n, dtype=np.int64)
        was_training = actor.training
        actor.eval()
        while (done_count < quota).any():
            actions, _, h = actor.act(torch.as_tensor(obs, device=device), torch.as_tensor(avail, device=device), h,
                                      deterministic=deterministic)
            step = envs.step(actions.cpu().numpy())
            ended = step.terminated | step.truncated
            for e in np.flatnonzero(ended | step.dropped):
                if h is not None:
                    h[e] = 0.0
                if ended[e] and done_count[e] < quota[e]:
                    done_count[e] += 1
                    returns.append(float(step.episode_return[e]))
                    lengths.append(float(step.episode_length[e]))
                    if envs.spec.has_won:
                        wins.append(float(step.won[e]))
            obs, avail = step.obs, step.avail
        actor.train(was_training)
    finally:
        envs.close()
    out = {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
           "length_mean": float(np.mean(lengths)), "episodes": float(len(returns))}
    if wins:
        out["win_rate"] = float(np.mean(wins))
    return out
