"""The critic's own layers (``model.critic_hidden_sizes``, ``model.critic_recurrent``): GRASP's
feed-forward 64x3 critic (App. H Table 4) beside its recurrent actor, and nothing changed by default."""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.config import ConfigError, ModelConfig
from marlopt.runners.on_policy import OnPolicyRunner
from tests.helpers import make_config


def _linear_widths(module: torch.nn.Module) -> list[int]:
    return [m.weight.shape[-2] if m.weight.dim() == 3 else m.weight.shape[0]
            for m in module.trunk.modules() if hasattr(m, "weight") and m.weight is not None and m.weight.dim() >= 2]


def test_grasp_tuned_critic_is_a_feed_forward_64x3_beside_a_recurrent_actor(tmp_path):
    cfg = make_config("algo=grasp", "env=mpe", "map=simple_spread", "n_envs=2", "rollout_length=20",
                      "total_steps=80", "env.vector=inproc", "eval_episodes=1")
    assert cfg.model.critic_hidden_sizes == [64, 64, 64] and cfg.model.critic_recurrent is False
    assert cfg.model.recurrent is True
    runner = OnPolicyRunner(cfg, tmp_path, None)
    critic, actor = runner.rule.critic, runner.rule.actor
    assert critic.hidden_size == 0 and not critic.trunk.recurrent
    assert actor.hidden_size == 64
    assert _linear_widths(critic) == [64, 64, 64]
    from marlopt.logger import RunLogger

    logger = RunLogger(tmp_path, runner.total_frames, progress=False, tensorboard=False)
    try:
        assert runner.train(logger) == "finished"
    finally:
        logger.close()
        runner.close()
    for p in critic.parameters():
        assert torch.isfinite(p).all()
    assert math.isfinite(runner.final_eval["return_mean"])


def test_by_default_the_critic_has_the_actors_layers():
    cfg = ModelConfig(hidden_sizes=[32, 16], recurrent=True)
    assert cfg.critic_config() == ModelConfig(hidden_sizes=[32, 16], recurrent=True)
    own = ModelConfig(hidden_sizes=[32], critic_hidden_sizes=[8, 8], critic_recurrent=False).critic_config()
    assert own.hidden_sizes == [8, 8] and own.recurrent is False


def test_a_recurrent_critic_needs_a_recurrent_actor():
    with pytest.raises(ConfigError, match="model.critic_recurrent: a recurrent critic needs model.recurrent=true"):
        ModelConfig(recurrent=False, critic_recurrent=True)
    with pytest.raises(ConfigError, match="model.critic_hidden_sizes"):
        ModelConfig(critic_hidden_sizes=[])
