"""Greedy evaluation of the deployed (decentralised) policy on separately seeded envs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from marlopt.envs import MultiAgentEnv, ProcessVectorEnv
from marlopt.policy import Policy, reset_finished


def evaluate_policy(
    policy: Policy,
    env_fns: list[Callable[[], MultiAgentEnv]],
    episodes: int,
    seeds: list[int],
    greedy: bool = True,
) -> dict[str, float]:
    """Run ``episodes`` episodes (spread evenly over ``len(env_fns)`` envs) with ``policy``.

    Returns ``return_mean``/``return_std``/``length_mean`` and ``win_rate`` where the env has wins.
    The env loop is in-process; the policy sees only numpy (the :class:`~marlopt.policy.Policy`
    protocol), whatever trained it. A centralised policy (``policy.centralised``, e.g. MAGPO's
    guider) also gets the env state, ``act(..., env_state=state[E, S, D])``.
    """
    import torch

    envs = ProcessVectorEnv(env_fns[: min(episodes, len(env_fns))], mode="inproc")
    try:
        n = envs.num_envs
        quota = np.array([episodes // n + (i < episodes % n) for i in range(n)])
        first = envs.reset(seeds[:n])
        obs, avail, env_state = first.obs, first.avail, first.state
        centralised = getattr(policy, "centralised", False)
        state = policy.initial_state(n)
        returns: list[float] = []
        lengths: list[float] = []
        wins: list[float] = []
        done_count = np.zeros(n, dtype=np.int64)
        with torch.inference_mode():
            while (done_count < quota).any():
                extra = {"env_state": env_state} if centralised else {}
                actions, state = policy.act(obs, avail, state, greedy=greedy, **extra)
                step = envs.step(actions)
                ended = step.terminated | step.truncated
                state = reset_finished(policy, state, ended | step.dropped)
                for e in np.flatnonzero(ended):
                    if done_count[e] < quota[e]:
                        done_count[e] += 1
                        returns.append(float(step.episode_return[e]))
                        lengths.append(float(step.episode_length[e]))
                        if envs.spec.has_won:
                            wins.append(float(step.won[e]))
                obs, avail, env_state = step.obs, step.avail, step.state
    finally:
        envs.close()
    out = {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)),
           "length_mean": float(np.mean(lengths)), "episodes": float(len(returns))}
    if wins:
        out["win_rate"] = float(np.mean(wins))
    return out
