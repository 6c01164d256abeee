"""MAGPO's guider: autoregressive over agents, teacher forcing equal to the rollout, recurrence."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.guider import Guider


def _spec(n: int = 3, a: int = 4, continuous: bool = False, state_rows: int = 1) -> EnvSpec:
    return EnvSpec(n_agents=n, obs_dim=5, state_dim=6, n_actions=a, episode_limit=10, continuous=continuous,
                   state_per_agent=state_rows > 1, has_won=False,
                   agent_names=tuple(f"agent_{i}" for i in range(n)))


def _guider(recurrent: bool = True, continuous: bool = False, guider_input: str = "joint_obs", n: int = 3) -> Guider:
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(), hidden_sizes=[32], rnn_hidden=16, recurrent=recurrent, head_gain=1.0)
    return Guider(_spec(n=n, continuous=continuous), cfg, guider_input)


@pytest.mark.parametrize("continuous", [False, True])
@pytest.mark.parametrize("recurrent", [False, True])
def test_teacher_forced_log_probs_equal_the_rollouts(recurrent: bool, continuous: bool) -> None:
    """Acting agent by agent over L steps and evaluating the stored actions in one pass give the
    same log-probabilities (the training pass sees exactly what each agent saw when it acted)."""
    g = _guider(recurrent, continuous)
    length, b, n = 6, 4, 3
    obs = torch.randn(length, b, n, 5)
    starts = torch.zeros(length, b, 1)
    starts[3, 1] = 1.0  # an episode starts mid-sequence in env 1
    h = g.initial_hidden(b)
    h0 = h.clone()
    acts, logps = [], []
    for t in range(length):
        if recurrent:
            h = h * (1.0 - starts[t]).unsqueeze(-1)
        a, lp, h = g.act(obs[t], None, h)
        acts.append(a)
        logps.append(lp)
    actions, rollout_logp = torch.stack(acts), torch.stack(logps)
    logp, entropy = g.evaluate(obs, None, actions, h0 if recurrent else None, starts)
    torch.testing.assert_close(logp, rollout_logp, rtol=1e-5, atol=1e-5)
    assert entropy.shape == (length, b, n)


def test_agent_j_depends_only_on_earlier_agents_actions() -> None:
    g = _guider(recurrent=False)
    obs = torch.randn(1, 2, 3, 5)
    actions = torch.tensor([[[0, 1, 2], [3, 0, 1]]])
    base = g.dist(obs, None, actions, None, None).log_probs
    later = actions.clone()
    later[..., 2] = (later[..., 2] + 1) % 4  # the last agent's action: nobody conditions on it
    torch.testing.assert_close(g.dist(obs, None, later, None, None).log_probs, base)
    earlier = actions.clone()
    earlier[..., 0] = (earlier[..., 0] + 1) % 4  # the first agent's action: agents 1 and 2 see it
    changed = g.dist(obs, None, earlier, None, None).log_probs
    torch.testing.assert_close(changed[..., 0, :], base[..., 0, :])
    assert not torch.allclose(changed[..., 1, :], base[..., 1, :])
    assert not torch.allclose(changed[..., 2, :], base[..., 2, :])


def test_the_guider_sees_every_agents_observation() -> None:
    """Centralised: agent 0's distribution changes when only agent 2's observation does."""
    g = _guider(recurrent=False)
    obs = torch.randn(1, 1, 3, 5)
    actions = torch.zeros(1, 1, 3, dtype=torch.long)
    other = obs.clone()
    other[..., 2, :] += 1.0
    a = g.dist(obs, None, actions, None, None).log_probs[..., 0, :]
    b = g.dist(other, None, actions, None, None).log_probs[..., 0, :]
    assert not torch.allclose(a, b)


def test_state_input_reads_the_env_state_and_refuses_without_it() -> None:
    g = _guider(recurrent=False, guider_input="state")
    obs = torch.randn(2, 3, 5)
    state = torch.randn(2, 1, 6)
    a1, _, _ = g.act(obs, None, None, deterministic=True, env_state=state)
    a2, _, _ = g.act(torch.randn(2, 3, 5), None, None, deterministic=True, env_state=state)
    torch.testing.assert_close(a1, a2)  # observations are not its input
    with pytest.raises(ValueError, match="env state"):
        g.act(obs, None, None)


def test_unavailable_actions_are_never_drawn() -> None:
    g = _guider(recurrent=False)
    avail = torch.ones(64, 3, 4, dtype=torch.bool)
    avail[:, 1, :3] = False  # agent 1 may only take action 3
    avail[:, 2, 0] = False
    actions, logp, _ = g.act(torch.randn(64, 3, 5), avail, None)
    assert (actions[:, 1] == 3).all() and (actions[:, 2] != 0).all()
    torch.testing.assert_close(logp[:, 1], torch.zeros(64), atol=1e-6, rtol=0)


def test_memory_is_one_row_per_env() -> None:
    g = _guider(recurrent=True)
    assert g.hidden_rows == 1 and g.initial_hidden(5).shape == (5, 1, 16)
    _, _, h = g.act(torch.randn(5, 3, 5), None, g.initial_hidden(5))
    assert h.shape == (5, 1, 16) and h.abs().sum() > 0


@pytest.mark.parametrize("continuous", [False, True])
def test_split_first_layer_is_the_plain_decoder(continuous: bool) -> None:
    """``_decode`` computes the first layer per block (features once per env); it must equal the
    decoder run on the concatenated input, for the training pass (features broadcast over agents)
    and the rollout pass."""
    g = _guider(recurrent=False, continuous=continuous)
    feats = torch.randn(4, 2, 1, g.encoder.out_features)
    ids = g.agent_ids.expand(4, 2, 3, 3)
    prev = torch.randn(4, 2, 3, 12)
    plain, _ = g.decoder.forward(torch.cat([feats.expand(4, 2, 3, -1), ids, prev], dim=-1), None, None)
    torch.testing.assert_close(g._decode(feats, ids, prev), g.head.forward(plain), rtol=1e-5, atol=1e-6)
    plain_step, _ = g.decoder.forward(torch.cat([feats[0, :, 0], ids[0, :, 1], prev[0, :, 1]], dim=-1), None, None)
    torch.testing.assert_close(g._decode(feats[0, :, 0], ids[0, :, 1], prev[0, :, 1]), g.head.forward(plain_step),
                               rtol=1e-5, atol=1e-6)
