"""Actors and critics: sharing modes, batched per-agent weights, masking, chunked BPTT."""

from __future__ import annotations

import pytest
import torch

from marlopt.config import ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models import Actor, Critic, MaskedCategorical, UnavailableActionError
from marlopt.models.distributions import DiagGaussian
from marlopt.models.layers import GroupedGRUCell, GroupedLinear

SPEC = EnvSpec(n_agents=3, obs_dim=5, state_dim=7, n_actions=4, episode_limit=10)
CONT = EnvSpec(n_agents=3, obs_dim=5, state_dim=7, n_actions=2, episode_limit=10, continuous=True,
               action_low=(0.0, 0.0), action_high=(1.0, 1.0))


def model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"hidden_sizes": [16], "rnn_hidden": 8, **kw})


def test_grouped_linear_equals_per_agent_loop():
    torch.manual_seed(0)
    layer = GroupedLinear(3, 5, 4)
    x = torch.randn(2, 6, 3, 5)
    y = layer(x)
    assert tuple(layer.weight[0].shape) == (4, 5), "weights are stored [out, in], as nn.Linear"
    for i in range(3):
        ref = x[..., i, :] @ layer.weight[i].t() + layer.bias[i]
        torch.testing.assert_close(y[..., i, :], ref)


def test_shared_and_single_agent_grouped_linear_equal_nn_linear():
    torch.manual_seed(0)
    shared = GroupedLinear(1, 5, 4)
    ref = torch.nn.Linear(5, 4)
    with torch.no_grad():  # same [out, in] layout: a plain copy, no transpose
        ref.weight.copy_(shared.weight)
        ref.bias.copy_(shared.bias)
    x = torch.randn(2, 6, 3, 5)
    torch.testing.assert_close(shared(x), ref(x))
    per_agent = GroupedLinear(3, 5, 4)
    # one agent's input, that agent's weights (sequential updates)
    one = x[..., 2:, :]
    torch.testing.assert_close(per_agent(one, group=2), one @ per_agent.weight[2].t() + per_agent.bias[2])


def test_grouped_gru_matches_torch_gru_cell():
    torch.manual_seed(0)
    cell = GroupedGRUCell(1, 5, 8)
    ref = torch.nn.GRUCell(5, 8)
    w_ih, w_hh = cell.input_map.weight, cell.hidden_map.weight
    with torch.no_grad():
        ref.weight_ih.copy_(w_ih)
        ref.weight_hh.copy_(w_hh)
        ref.bias_ih.copy_(cell.input_map.bias)
        ref.bias_hh.copy_(cell.hidden_map.bias)
    x, h = torch.randn(4, 2, 1, 5), torch.randn(2, 1, 8)
    out, _ = cell(x, h)
    hr = h[:, 0]
    for t in range(4):
        hr = ref(x[t, :, 0], hr)
        torch.testing.assert_close(out[t, :, 0], hr, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
def test_agent_parameters_touch_only_that_agent(sharing):
    torch.manual_seed(0)
    actor = Actor(SPEC, model_cfg(sharing=sharing))
    obs = torch.randn(1, 4, 3, 5)
    avail = torch.ones(1, 4, 3, 4, dtype=torch.bool)
    actions = torch.randint(0, 4, (1, 4, 3))
    h = actor.initial_hidden(4)
    if sharing == "shared":
        with pytest.raises(ValueError, match="separate or hybrid"):
            actor.agent_parameters(0)
        return
    logp, _ = actor.evaluate(obs, avail, actions, h, None)
    logp[..., 1].sum().backward()  # only agent 1's loss
    own = {id(p) for p in actor.agent_parameters(1)}
    for i in (0, 2):
        for p in actor.agent_parameters(i):
            assert p.grad is None or torch.all(p.grad == 0), "agent 1's loss moved another agent's parameters"
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters() if id(p) in own)


def test_single_agent_separate_actor_owns_all_its_parameters():
    spec = EnvSpec(n_agents=1, obs_dim=5, state_dim=7, n_actions=4, episode_limit=10)
    actor = Actor(spec, model_cfg(sharing="separate"))
    assert {id(p) for p in actor.agent_parameters(0)} == {id(p) for p in actor.parameters()}


def test_separate_actors_are_distinct_networks():
    torch.manual_seed(0)
    actor = Actor(SPEC, model_cfg(sharing="separate", recurrent=False))
    obs = torch.randn(1, 2, 1, 5).expand(1, 2, 3, 5)  # the same observation for every agent
    feats, _ = actor.features(obs, None, None)
    assert not torch.allclose(feats[..., 0, :], feats[..., 1, :])


def test_shared_actor_uses_agent_id():
    actor = Actor(SPEC, model_cfg(sharing="shared", recurrent=False))
    obs = torch.randn(1, 2, 1, 5).expand(1, 2, 3, 5)
    feats, _ = actor.features(obs, None, None)
    assert not torch.allclose(feats[..., 0, :], feats[..., 1, :])


@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
def test_chunked_evaluate_equals_stepwise_act(sharing):
    """BPTT over a chunk with an episode start inside reproduces the rollout's step-by-step pass."""
    torch.manual_seed(1)
    actor = Actor(SPEC, model_cfg(sharing=sharing))
    L, B = 6, 2
    obs = torch.randn(L, B, 3, 5)
    avail = torch.rand(L, B, 3, 4) > 0.3
    avail[..., 0] = True
    starts = torch.zeros(L, B, 1)
    starts[3, 0] = 1.0  # env 0 starts a new episode at step 3
    h0 = torch.randn(B, 3, 8)
    h = h0.clone()
    acts, logps = [], []
    for t in range(L):
        h = h * (1 - starts[t]).unsqueeze(-1)
        a, lp, h = actor.act(obs[t], avail[t], h)
        acts.append(a)
        logps.append(lp)
    logp, ent = actor.evaluate(obs, avail, torch.stack(acts), h0, starts)
    torch.testing.assert_close(logp, torch.stack(logps), atol=1e-5, rtol=1e-5)
    assert torch.all(ent >= 0)


@pytest.mark.parametrize("spec", [SPEC, CONT], ids=["discrete", "continuous"])
@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
@pytest.mark.parametrize("recurrent", [False, True], ids=["mlp", "gru"])
def test_evaluate_one_agent_equals_its_column_of_all_agents(spec, sharing, recurrent):
    """``evaluate(..., agent=i)`` on agent ``i``'s slice (as sequential updates call it) gives column
    ``i`` of the evaluation of all agents: its own trunk, head, log-std and agent id."""
    torch.manual_seed(2)
    actor = Actor(spec, model_cfg(sharing=sharing, recurrent=recurrent, feature_norm=True))
    with torch.no_grad():  # per-agent norms and log-stds start equal: make every agent's differ
        for name, p in actor.named_parameters():
            if "norm" in name or "log_std" in name:
                p.add_(0.3 * torch.randn(p.shape))
    L, B, n = 5, 4, spec.n_agents
    obs = torch.randn(L, B, n, 5)
    avail = torch.rand(L, B, n, spec.n_actions) > 0.3
    avail[..., 0] = True
    if spec.continuous:
        avail = None
    starts = torch.zeros(L, B, 1)
    starts[2, 1] = 1.0
    h0 = torch.randn(B, n, 8) if recurrent else None
    with torch.no_grad():
        actions = actor.dist(obs, avail, h0, starts).sample()
    logp, entropy = actor.evaluate(obs, avail, actions, h0, starts)
    for i in range(n):
        one = slice(i, i + 1)
        logp_i, entropy_i = actor.evaluate(obs[..., one, :], None if avail is None else avail[..., one, :],
                                           actions[:, :, one], None if h0 is None else h0[:, one], starts, agent=i)
        assert logp_i.shape == (L, B, 1)
        torch.testing.assert_close(logp_i[..., 0], logp[..., i])
        torch.testing.assert_close(entropy_i[..., 0], entropy[..., i])
    with pytest.raises(ValueError, match="that agent's inputs alone"):
        actor.evaluate(obs, avail, actions, h0, starts, agent=0)


def test_masked_categorical_never_samples_unavailable():
    torch.manual_seed(0)
    logits = torch.randn(2000, 6) * 5
    avail = torch.rand(2000, 6) > 0.5
    avail[torch.arange(2000), torch.randint(0, 6, (2000,))] = True
    dist = MaskedCategorical(logits, avail)
    a = dist.sample()
    assert avail.gather(-1, a[:, None]).all()
    assert torch.isfinite(dist.entropy()).all() and torch.isfinite(dist.log_prob(a)).all()
    probs = dist.probs()
    assert torch.all(probs[~avail] == 0)


def test_masked_categorical_all_masked_row_is_finite_and_raises_on_sample():
    dist = MaskedCategorical(torch.zeros(1, 3), torch.zeros(1, 3, dtype=torch.bool))
    assert torch.isfinite(dist.log_probs).all()  # no NaN from an all -inf row
    with pytest.raises(UnavailableActionError, match="not available"):
        dist.sample()


def test_gaussian_logprob_sums_real_dims_only():
    mean, log_std = torch.zeros(1, 2, 3), torch.zeros(3)
    mask = torch.tensor([[[True, True, False], [True, True, True]]])
    dist = DiagGaussian(mean, log_std, mask)
    a = torch.zeros(1, 2, 3)
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(torch.tensor(0.0))
    torch.testing.assert_close(dist.log_prob(a), torch.stack([2 * ref, 3 * ref]).view(1, 2))


def test_continuous_actor_samples_box_actions():
    actor = Actor(CONT, model_cfg(sharing="hybrid", recurrent=False))
    obs = torch.randn(4, 3, 5)
    a, logp, _ = actor.act(obs, torch.ones(4, 3, 2, dtype=torch.bool), actor.initial_hidden(4))
    assert a.shape == (4, 3, 2) and a.dtype == torch.float32 and logp.shape == (4, 3)


def test_critic_runs_once_per_env_for_global_state_and_per_agent_otherwise():
    critic = Critic(SPEC, model_cfg())
    assert critic.rows == 1
    v, h = critic.value(torch.randn(5, 1, 7), critic.initial_hidden(5))
    assert v.shape == (5, 1) and h.shape == (5, 1, 8)
    fp = EnvSpec(n_agents=3, obs_dim=5, state_dim=7, n_actions=4, episode_limit=10, state_per_agent=True)
    critic = Critic(fp, model_cfg())
    v, _ = critic.value(torch.randn(5, 3, 7), critic.initial_hidden(5))
    assert v.shape == (5, 3)
    with_id = Critic(SPEC, model_cfg(critic_agent_id=True))
    v, _ = with_id.value(torch.randn(5, 1, 7), with_id.initial_hidden(5))
    assert v.shape == (5, 3) and not torch.allclose(v[:, 0], v[:, 1])


@pytest.mark.parametrize("spec", [SPEC, CONT], ids=["discrete", "continuous"])
@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
def test_act_without_an_all_true_mask_takes_the_same_step(spec, sharing):
    """The rollout passes ``avail=None`` when every action is available: the same actions, the
    same log-probabilities and the same random draws, bit for bit."""
    torch.manual_seed(3)
    actor = Actor(spec, model_cfg(sharing=sharing))
    obs, h = torch.randn(4, 3, 5), torch.randn(4, 3, 8)
    everything = torch.ones(4, 3, spec.n_actions, dtype=torch.bool)
    torch.manual_seed(11)
    a_mask, lp_mask, h_mask = actor.act(obs, everything, h)
    after_mask = torch.rand(1)
    torch.manual_seed(11)
    a_none, lp_none, h_none = actor.act(obs, None, h)
    after_none = torch.rand(1)
    assert torch.equal(a_mask, a_none) and torch.equal(lp_mask, lp_none) and torch.equal(h_mask, h_none)
    assert torch.equal(after_mask, after_none)  # the same number of random draws


def test_gumbel_max_sample_is_argmax_of_log_probs_plus_gumbel_noise():
    """``sample`` computes ``argmax(log p - log(-log u))`` (in place, on its own uniform draws)."""
    logits = torch.randn(500, 6)
    avail = torch.rand(500, 6) > 0.3
    avail[:, 2] = True
    dist = MaskedCategorical(logits, avail)
    gen = torch.Generator().manual_seed(5)
    action = dist.sample(generator=gen)
    u = torch.rand(dist.log_probs.shape, generator=torch.Generator().manual_seed(5))
    expected = (dist.log_probs - torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-7)))).argmax(-1)
    assert torch.equal(action, expected)
    assert dist.log_probs.isfinite().all()  # the in-place noise never touched the distribution


def test_agent_id_one_hot_made_in_inference_mode_still_works_with_autograd():
    """The cached one-hot is built outside inference mode: a rollout may build it first, and the
    update's forward and backward then use the same cached tensor."""
    from marlopt.models.actor import _eye, with_agent_id

    with torch.inference_mode():
        with_agent_id(torch.zeros(2, 7, 3, dtype=torch.float64), 7)
    assert not _eye(7, torch.device("cpu"), torch.float64).is_inference()
    x = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    y = with_agent_id(x, 7)
    assert torch.equal(y[..., 3:], torch.eye(7, dtype=torch.float64).expand(2, 7, 7))
    (y[..., :3] * 2).sum().backward()
    assert torch.equal(x.grad, torch.full_like(x, 2.0))
    assert torch.equal(with_agent_id(torch.zeros(1, 1, 2), 3, agent=1)[0, 0], torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))
