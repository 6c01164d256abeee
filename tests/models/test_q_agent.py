"""The agent utilities and the mixers of value decomposition."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models.mixers import QMixer, VDNMixer, make_mixer
from marlopt.models.q_agent import QAgent

SPEC = EnvSpec(n_agents=3, obs_dim=4, state_dim=6, n_actions=5, episode_limit=10)
PYMARL = ModelConfig(hidden_sizes=[16], rnn_hidden=8, feature_norm=False, layer_norm=False)


@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
@pytest.mark.parametrize("recurrent", [True, False])
def test_a_sequence_equals_its_steps_one_by_one(sharing, recurrent):
    torch.manual_seed(0)
    agent = QAgent(SPEC, dataclasses.replace(PYMARL, sharing=sharing, recurrent=recurrent))
    obs = torch.randn(7, 2, 3, 4)
    last = torch.randint(-1, 5, (7, 2, 3))
    h0 = agent.initial_hidden(2) if recurrent else None
    q, h_end = agent(obs, last, h0)
    assert q.shape == (7, 2, 3, 5)
    h = h0
    for t in range(7):
        qt, h = agent(obs[t : t + 1], last[t : t + 1], h)
        torch.testing.assert_close(qt[0], q[t])
    if recurrent:
        torch.testing.assert_close(h, h_end)


def test_input_is_obs_previous_action_and_id():
    agent = QAgent(SPEC, PYMARL)
    obs = torch.zeros(1, 3, 4)
    x = agent.inputs(obs, torch.tensor([[-1, 0, 4]]))
    assert x.shape == (1, 3, 4 + 5 + 3)
    assert x[0, 0, 4:9].sum() == 0  # no previous action at an episode start
    assert x[0, 1, 4:9].tolist() == [1, 0, 0, 0, 0] and x[0, 2, 4:9].tolist() == [0, 0, 0, 0, 1]
    assert x[0, :, 9:].tolist() == torch.eye(3).tolist()
    without = QAgent(SPEC, PYMARL, last_action=False)
    assert without.inputs(obs, torch.tensor([[-1, 0, 4]])).shape == (1, 3, 4 + 3)


def test_separate_agents_do_not_share_weights():
    torch.manual_seed(0)
    agent = QAgent(SPEC, dataclasses.replace(PYMARL, sharing="separate"))
    obs = torch.randn(1, 1, 3, 4).expand(1, 1, 3, 4).clone()
    obs[..., :, :] = obs[..., :1, :]  # identical observations
    q, _ = agent(obs, torch.full((1, 1, 3), -1), agent.initial_hidden(1))
    assert not torch.allclose(q[..., 0, :], q[..., 1, :])
    shared = QAgent(SPEC, dataclasses.replace(PYMARL, agent_id=False))
    q, _ = shared(obs, torch.full((1, 1, 3), -1), shared.initial_hidden(1))
    torch.testing.assert_close(q[..., 0, :], q[..., 1, :])


def test_continuous_actions_are_refused():
    with pytest.raises(ValueError, match="discrete"):
        QAgent(dataclasses.replace(SPEC, continuous=True), PYMARL)


def test_vdn_is_the_sum():
    qs = torch.randn(4, 5, 3)
    torch.testing.assert_close(VDNMixer()(qs, torch.randn(4, 5, 6)), qs.sum(-1))


def test_qmix_is_monotonic_in_every_utility_and_matches_its_equations():
    torch.manual_seed(1)
    mixer = QMixer(3, 6, embed=8, hypernet_embed=16)
    qs = torch.randn(50, 3, requires_grad=True)
    state = torch.randn(50, 6)
    out = mixer(qs, state)
    (grad,) = torch.autograd.grad(out.sum(), qs)
    assert (grad >= 0).all()  # ∂Q_tot/∂Q_i >= 0 for every state
    # the equations, written out for one sample
    s, q = state[0], qs[0].detach()
    w1 = mixer.hyper_w1(s).abs().view(3, 8)
    hidden = torch.nn.functional.elu(q @ w1 + mixer.hyper_b1(s))
    expected = hidden @ mixer.hyper_w2(s).abs() + mixer.value(s)[0]
    torch.testing.assert_close(out[0], expected)
    assert make_mixer("vdn", 3, 6, 8, 16).__class__ is VDNMixer
    with pytest.raises(ValueError, match="unknown mixer"):
        make_mixer("qplex", 3, 6, 8, 16)


def test_initialisation_is_pytorchs_default_as_pymarls():
    torch.manual_seed(0)
    agent = QAgent(SPEC, dataclasses.replace(PYMARL, sharing="hybrid"))
    bounds = {"mlp.linears.0": 1 / (4 + 5 + 3) ** 0.5, "gru.input_map": 1 / 8**0.5, "gru.hidden_map": 1 / 8**0.5,
              "head": 1 / 8**0.5}
    for name, param in agent.named_parameters():
        bound = next(b for prefix, b in bounds.items() if name.startswith(prefix))
        assert param.abs().max() <= bound, name
        if param.numel() >= 64:  # enough draws to reach near the bound: U(-b, b), not orthogonal
            assert param.abs().max() > 0.9 * bound, name
