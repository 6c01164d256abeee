"""The trunk after its GRU: ``model.rnn_layer_norm`` (the LayerNorm on the GRU's output) and
``model.post_rnn_sizes`` (MLP layers before the heads, JaxMARL's Dense(128) + relu)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from marlopt.config import ConfigError, ModelConfig
from marlopt.models.trunk import Trunk
from tests.helpers import make_config


def _trunk(groups: int = 1, **changes) -> Trunk:
    torch.manual_seed(0)
    cfg = dataclasses.replace(ModelConfig(hidden_sizes=[8], rnn_hidden=6, feature_norm=False), **changes)
    return Trunk(groups, 5, cfg)


@pytest.mark.parametrize("groups", [1, 3])
def test_the_layers_after_the_gru_are_the_stated_function(groups):
    """features = act(W2 · act(W1 · norm?(gru_out) + b1) + b2) for post_rnn_sizes=[7, 4], with and
    without the GRU's LayerNorm; the GRU's own states are unchanged by what follows it."""
    x, starts = torch.randn(4, 2, 3, 5), torch.zeros(4, 2, 1)
    h0 = torch.randn(2, 3, 6)
    for rnn_norm in (True, False):
        trunk = _trunk(groups, rnn_layer_norm=rnn_norm, post_rnn_sizes=[7, 4], layer_norm=False)
        plain = _trunk(groups, rnn_layer_norm=rnn_norm, layer_norm=False)  # the same seed: the same layers up to the GRU
        assert trunk.out_features == 4 and plain.out_features == 6
        assert (trunk.gru_norm is None) == (not rnn_norm)
        with torch.no_grad():
            feats, h = trunk(x, h0, starts)
            gru_feats, h_plain = plain(x, h0, starts)
            torch.testing.assert_close(h, h_plain)
            y = gru_feats
            for linear in trunk.post_linears:
                w, b = linear.weight, linear.bias
                if groups == 1:
                    y = torch.relu(y @ w.T + b)
                else:  # one weight set per agent (axis -2)
                    y = torch.relu(torch.einsum("...ni,noi->...no", y, torch.stack(list(w))) + torch.stack(list(b)))
            torch.testing.assert_close(feats, y)


def test_defaults_are_unchanged_and_checked():
    cfg = ModelConfig()
    assert cfg.rnn_layer_norm is True and cfg.post_rnn_sizes == []
    trunk = _trunk()
    assert trunk.gru_norm is not None and len(trunk.post_linears) == 0 and trunk.out_features == 6
    with pytest.raises(ConfigError, match="model.post_rnn_sizes"):
        make_config("env=games", "map=harl_example1", "model.post_rnn_sizes=[0]")


def test_an_update_with_jaxmarls_trunk_runs_and_the_heads_read_the_last_layer(tmp_path):
    from marlopt.runners.on_policy import OnPolicyRunner

    cfg = make_config("algo=mappo", "env=mpe", "map=simple_spread", "env.vector=inproc", "n_envs=2",
                      "rollout_length=20", "eval_episodes=1", "model.recurrent=true", "model.rnn_layer_norm=false",
                      "model.post_rnn_sizes=[16]", "model.sharing=separate")
    runner = OnPolicyRunner(cfg, tmp_path)
    try:
        actor, critic = runner.rule.actor, runner.rule.critic
        assert actor.trunk.out_features == critic.trunk.out_features == 16
        assert actor.head.weight[0].shape[-1] == critic.head.weight.shape[-1] == 16  # separate actors: a list
        before = [p.detach().clone() for p in actor.trunk.post_linears.parameters()]
        runner.collect()
        metrics = runner.rule.update(runner.batch)
    finally:
        runner.close()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, actor.trunk.post_linears.parameters()))
