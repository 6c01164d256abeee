"""``algo.lr_schedule``: linear decay of every optimiser's learning rate, applied by the runner
before each update and carried through checkpoints."""

from __future__ import annotations

import pytest

from marlopt.config import ConfigError
from marlopt.runners.on_policy import OnPolicyRunner
from marlopt.train import run_training
from tests.helpers import make_config, read_metrics, run_cli

MPE = ["env=mpe", "map=simple_spread", "env.options.max_cycles=7", "env.vector=inproc", "n_envs=2",
       "rollout_length=20", "model.data_chunk_length=10", "eval_episodes=1", "progress=false"]


def _rule(tmp_path, *overrides: str):
    runner = OnPolicyRunner(make_config(*MPE, *overrides), tmp_path)
    runner.close()
    return runner.rule


@pytest.mark.parametrize("algo", ["mappo", "happo", "magpo"])
def test_linear_schedule_scales_every_optimiser_from_its_own_initial_rate(tmp_path, algo):
    rule = _rule(tmp_path, f"algo={algo}", "algo.lr_schedule=linear", "algo.lr=3e-3", "algo.critic_lr=1e-3")
    optimisers = rule.optimisers()
    assert "critic_optim" in optimisers and len(optimisers) >= 2
    initial = {k: [g["lr"] for g in o.param_groups] for k, o in optimisers.items()}
    actor = "actor_optim_0" if algo == "happo" else "actor_optim"
    assert initial["critic_optim"] == [1e-3] and initial[actor] == [3e-3]
    for frames, factor in ((0, 1.0), (250, 0.75), (1000, 0.0), (1200, 0.0)):
        rule.schedule_learning_rates(frames, 1000)
        for k, o in optimisers.items():
            assert [g["lr"] for g in o.param_groups] == pytest.approx([lr * factor for lr in initial[k]]), (k, frames)


def test_constant_schedule_leaves_the_rates_alone(tmp_path):
    rule = _rule(tmp_path, "algo=mappo", "algo.lr=3e-3")
    rule.schedule_learning_rates(500, 1000)
    assert [g["lr"] for g in rule.actor_optim.param_groups] == [3e-3]
    assert "initial_lr" not in rule.actor_optim.param_groups[0]


def test_lr_schedule_is_checked():
    with pytest.raises(ConfigError, match="algo.lr_schedule"):
        make_config(*MPE, "algo=mappo", "algo.lr_schedule=cosine")


def test_the_runner_anneals_and_a_resumed_run_continues_the_schedule(tmp_path):
    """The schedule reaches training (a linear run's losses differ from a constant one's after the
    first update, which both run at lr_0) and an interrupted run resumed from its checkpoint logs
    exactly what the uninterrupted run logs."""
    args = ["algo=mappo", *MPE, "total_steps=160", "eval_interval=0", "latest_interval=40", "save_interval=80"]
    constant = tmp_path / "constant"
    assert run_training(make_config(*args), constant) == "finished"
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli("marlopt.train", *args, "algo.lr_schedule=linear", f"hydra.run.dir={full}", cwd=tmp_path)
    run_cli("marlopt.train", *args, "algo.lr_schedule=linear", "max_iterations=2", f"hydra.run.dir={part}",
            cwd=tmp_path)
    run_cli("marlopt.train", f"resume={part}", cwd=tmp_path)
    assert read_metrics(part) == read_metrics(full)
    linear_rows, constant_rows = ([r for r in read_metrics(d) if "actor/policy_loss" in r] for d in (full, constant))
    assert len(linear_rows) == len(constant_rows) == 4
    assert linear_rows[0] == constant_rows[0]  # the first update runs at lr_0 in both
    assert linear_rows[-1]["actor/policy_loss"] != constant_rows[-1]["actor/policy_loss"]
