"""``model.std_param``: how the actor's learnable std parameter ``p`` gives the Gaussian's std.

``log`` (default, unchanged): ``σ = exp(p)``. ``harl``: HARL's ``DiagGaussian``
(PKU-MARL/HARL ``harl/models/base/distributions.py``): ``p`` starts at ``std_x_coef`` and
``action_std = sigmoid(log_std / std_x_coef) * std_y_coef`` (``std_x_coef: 1``,
``std_y_coef: 0.5`` in ``harl/configs/algos_cfgs/*.yaml``).
"""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.config import ConfigError, ModelConfig
from marlopt.envs.base import EnvSpec
from marlopt.models import Actor
from marlopt.models.distributions import gaussian_log_std

CONT = EnvSpec(n_agents=3, obs_dim=5, state_dim=7, n_actions=2, episode_limit=10, continuous=True,
               action_low=(0.0, 0.0), action_high=(1.0, 1.0))


def model_cfg(**kw) -> ModelConfig:
    return ModelConfig(**{"hidden_sizes": [16], "rnn_hidden": 8, "recurrent": False, **kw})


def _direct_std(p: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """HARL's line, verbatim: ``torch.sigmoid(self.log_std / self.std_x_coef) * self.std_y_coef``."""
    return torch.sigmoid(p / x) * y


def test_defaults_are_todays_log_std():
    cfg = ModelConfig()
    assert (cfg.std_param, cfg.std_x_coef, cfg.std_y_coef) == ("log", 1.0, 0.5)
    p = torch.randn(4, requires_grad=True)
    assert gaussian_log_std(p) is p  # the default passes the parameter through untouched
    actor = Actor(CONT, model_cfg(sharing="shared"))
    assert torch.equal(actor.log_std[0].detach(), torch.full((2,), -0.5))
    dist = actor.dist(torch.randn(3, 4, 3, 5), None, None, None)
    assert torch.equal(dist.log_std, actor.log_std[0].expand_as(dist.mean))


@pytest.mark.parametrize("sharing", ["shared", "separate", "hybrid"])
@pytest.mark.parametrize("coefs", [(1.0, 0.5), (2.0, 0.8)], ids=["harl_defaults", "other"])
def test_harl_std_and_its_gradient_equal_the_direct_computation(sharing, coefs):
    x, y = coefs
    torch.manual_seed(0)
    actor = Actor(CONT, model_cfg(sharing=sharing, std_param="harl", std_x_coef=x, std_y_coef=y))
    groups = len(actor.log_std)
    for p in actor.log_std:
        assert torch.equal(p.detach(), torch.full((2,), x)), "HARL: log_std = ones * std_x_coef"
    with torch.no_grad():
        for p in actor.log_std:
            p.copy_(3.0 * torch.randn(2))  # away from the start, both signs
    obs, actions = torch.randn(4, 6, 3, 5), torch.rand(4, 6, 3, 2)
    dist = actor.dist(obs, None, None, None)
    params = torch.stack(tuple(actor.log_std))  # [groups, 2]
    std = _direct_std(params, x, y)
    torch.testing.assert_close(dist.log_std.exp(), std.expand_as(dist.mean), rtol=1e-6, atol=0)
    # log-prob + entropy against torch.distributions.Normal with HARL's std (same mean)
    mean = dist.mean.detach()
    ours = actor.distribution(actor.features(obs, None, None)[0], None)
    loss = (ours.log_prob(actions) + 0.3 * ours.entropy()).sum()
    grads = torch.autograd.grad(loss, list(actor.log_std))
    leaf = [p.detach().clone().requires_grad_(True) for p in actor.log_std]
    std_ref = _direct_std(torch.stack(leaf), x, y).expand_as(mean)
    normal = torch.distributions.Normal(mean, std_ref)
    ref_loss = (normal.log_prob(actions).sum(-1) + 0.3 * normal.entropy().sum(-1)).sum()
    ref_grads = torch.autograd.grad(ref_loss, leaf)
    assert len(grads) == groups
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-6)
        assert g.abs().sum() > 0


def test_harl_initial_std_and_bounds():
    actor = Actor(CONT, model_cfg(sharing="shared", std_param="harl"))
    dist = actor.dist(torch.randn(1, 2, 3, 5), None, None, None)
    torch.testing.assert_close(dist.log_std.exp(), torch.full_like(dist.mean, 0.5 / (1 + math.exp(-1.0))))
    p = torch.tensor([-200.0, 0.0, 200.0], requires_grad=True)
    log_std = gaussian_log_std(p, "harl", 1.0, 0.5)
    assert torch.isfinite(log_std).all()  # logsigmoid: no log(0) for a very negative parameter
    torch.testing.assert_close(log_std.exp(), _direct_std(p.detach(), 1.0, 0.5))
    assert log_std[2].item() == pytest.approx(math.log(0.5))  # bounded by std_y_coef
    log_std.sum().backward()
    assert torch.isfinite(p.grad).all()


def test_harl_std_trains_through_an_update():
    """A continuous MAPPO update with ``model.std_param=harl`` moves the std parameter and stays finite."""
    import dataclasses

    from marlopt.algos.registry import build_rule
    from tests.algos.test_sequential import random_chunks
    from tests.helpers import make_config

    spec = EnvSpec(n_agents=3, obs_dim=4, state_dim=6, n_actions=3, episode_limit=5, continuous=True,
                   action_low=(0.0,) * 3, action_high=(1.0,) * 3)
    cfg = make_config("algo=mappo", "env=games", "map=harl_example1", "model.recurrent=false",
                      "model.std_param=harl", "algo.ppo_epochs=2")
    torch.manual_seed(0)
    rule = build_rule(spec, cfg.algo, cfg.model, torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    chunks = random_chunks(spec)
    chunks = dataclasses.replace(chunks, actions=torch.rand(*chunks.logp.shape, 3, generator=g),
                                 avail=torch.ones(*chunks.logp.shape, 3, dtype=torch.bool))
    with torch.no_grad():
        logp = rule.actor.evaluate(chunks.obs, chunks.avail, chunks.actions, None, None)[0]
    chunks = dataclasses.replace(chunks, logp=logp)
    before = rule.actor.log_std[0].detach().clone()
    metrics = rule.update_policy(chunks)
    after = rule.actor.log_std[0].detach()
    assert not torch.equal(before, after) and torch.isfinite(after).all()
    assert all(math.isfinite(v) for v in metrics.values())


def test_std_param_only_changes_the_std():
    """The same seed builds the same trunk and head whatever ``std_param`` (only the std differs)."""
    torch.manual_seed(4)
    a = Actor(CONT, model_cfg(sharing="hybrid"))
    torch.manual_seed(4)
    b = Actor(CONT, model_cfg(sharing="hybrid", std_param="harl"))
    for (name, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        if "log_std" not in name:
            assert torch.equal(p, q), name


def test_std_param_is_checked():
    with pytest.raises(ConfigError, match="model.std_param"):
        ModelConfig(std_param="softplus")
    with pytest.raises(ConfigError, match="model.std_y_coef"):
        ModelConfig(std_param="harl", std_y_coef=0.0)
    with pytest.raises(ValueError, match="std_param"):
        gaussian_log_std(torch.zeros(2), "softplus")
