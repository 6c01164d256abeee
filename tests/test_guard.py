"""The non-finite guard (marlopt.guard): a step with a NaN or infinite loss or gradient is skipped
(parameters and optimiser state bit-identical), counted, and ``nonfinite_patience`` of them in a row
stop the run with one line; every update rule's steps go through it, in unit tests and in short
in-process runs with a learning rate of 1e30."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from marlopt.algos.registry import runner_class
from marlopt.algos.sequential import agent_slice
from marlopt.config import ConfigError
from marlopt.guard import NonFiniteError, NonFiniteGuard, active_guard, admit, check_parameters
from marlopt import optim as optim_module
from marlopt.optim import LeanFusedAdam, adam, clip_and_step, set_speed_kit
from marlopt.returns import ValueNorm
from tests.algos.test_consensus import grasp_rule
from tests.algos.test_q_learning import make_batch
from tests.algos.test_q_learning import make_rule as make_q_rule
from tests.algos.test_sequential import SPEC, random_chunks, with_unit_factor
from tests.algos.test_sequential import make_rule as make_sequential_rule
from tests.helpers import make_config

NAN, INF = float("nan"), float("inf")


# -- helpers ---------------------------------------------------------------------------------------


@pytest.fixture(params=["speed kit", "plain torch"])
def kit(request):
    """Both Adam paths: the speed kit's (lean fused Adam where this torch has it) and plain torch's."""
    set_speed_kit(request.param == "speed kit")
    try:
        yield request.param
    finally:
        set_speed_kit(True)


def small_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))


def finite_loss(net: nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(16, 4, generator=torch.Generator().manual_seed(seed))
    return net(x).square().mean()


def snapshot(net: nn.Module, optim: torch.optim.Optimizer) -> tuple[dict, dict]:
    return copy.deepcopy(net.state_dict()), copy.deepcopy(optim.state_dict())


def assert_same_state(a: tuple[dict, dict], b: tuple[dict, dict]) -> None:
    """Parameters and optimiser state bit-identical (NaN-free tensors compared with ``torch.equal``)."""

    def same(x, y) -> bool:
        if isinstance(x, torch.Tensor):
            return isinstance(y, torch.Tensor) and x.dtype == y.dtype and torch.equal(x, y)
        if isinstance(x, dict):
            return isinstance(y, dict) and x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, (list, tuple)):
            return len(x) == len(y) and all(same(u, v) for u, v in zip(x, y))
        return x == y

    assert same(a[0], b[0]), "parameters changed"
    assert same(a[1], b[1]), "optimiser state changed"


def nan_loss(net: nn.Module) -> torch.Tensor:
    return finite_loss(net) * NAN


def inf_gradient_loss(net: nn.Module) -> torch.Tensor:
    """A finite loss whose gradient is infinite in one element (``d sqrt(u) / du`` at ``u = 0``)."""
    w = net[0].weight.reshape(-1)[0]
    return finite_loss(net) + torch.sqrt(w - w.detach())


# -- 1. One step -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [nan_loss, inf_gradient_loss], ids=["NaN loss", "inf gradient"])
def test_a_non_finite_step_leaves_parameters_and_adam_state_bit_identical_and_is_counted(kit, bad):
    net = small_net()
    optim = adam(net.parameters(), lr=1e-2, eps=1e-8)
    if kit == "plain torch":
        assert type(optim) is torch.optim.Adam
    elif optim_module._fused_adam_works(torch.device("cpu"), torch.float32):
        assert type(optim) is LeanFusedAdam
    params = list(net.parameters())
    guard = NonFiniteGuard(patience=5)
    with guard.watch():
        for seed in range(3):  # Adam's state exists (and the lean fused path is taken) before the bad step
            clip_and_step(optim, params, finite_loss(net, seed), 1.0, name="actor")
        if isinstance(optim, LeanFusedAdam):
            assert optim._lists is not None, "the lean path (the fused kernel called directly) is the one taken"
        before = snapshot(net, optim)
        norm = clip_and_step(optim, params, bad(net), 1.0, name="actor")
        assert not math.isfinite(norm)
        assert_same_state(before, snapshot(net, optim))
        assert all(p.grad is None for p in params), "the skipped step's gradients are zeroed"
        clip_and_step(optim, params, finite_loss(net, 7), 1.0, name="actor")  # and training goes on
    after = snapshot(net, optim)
    assert not torch.equal(after[0]["0.weight"], before[0]["0.weight"])
    assert guard.take_metrics() == {"train/nonfinite_steps": 1.0}
    assert guard.take_metrics() == {"train/nonfinite_steps": 0.0}, "counted per call, present when zero"
    assert guard.skipped_total == {"actor": 1}


def test_a_finite_step_resets_the_consecutive_count_and_patience_skips_in_a_row_raise_one_line():
    net = small_net()
    optim = adam(net.parameters(), lr=1e-2, eps=1e-8)
    params = list(net.parameters())
    guard = NonFiniteGuard(patience=3)
    with guard.watch():  # update 1
        clip_and_step(optim, params, finite_loss(net), 1.0, name="actor")
    with guard.watch():  # update 2
        for _ in range(2):
            clip_and_step(optim, params, nan_loss(net), 1.0, name="actor")
        clip_and_step(optim, params, finite_loss(net), 1.0, name="actor")  # resets the run of skips
        for _ in range(2):
            clip_and_step(optim, params, nan_loss(net), 1.0, name="actor")
    with guard.watch():  # update 3
        clip_and_step(optim, params, inf_gradient_loss(net), 1.0, name="critic")  # another name: its own count
        before = snapshot(net, optim)
        with pytest.raises(NonFiniteError) as err:
            clip_and_step(optim, params, nan_loss(net), 1.0, name="actor")
    assert_same_state(before, snapshot(net, optim))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("training diverged: 3 consecutive actor optimiser steps")
    assert "(the first at update 2: actor/loss=nan)" in message
    assert "lower algo.lr" in message and "nothing was saved after the divergence" in message
    assert guard.skipped_total == {"actor": 5, "critic": 1}


def test_the_first_non_finite_quantity_is_named_per_step_name():
    guard = NonFiniteGuard(patience=2)
    with guard.watch():
        assert admit("critic", loss=torch.tensor(1.0), grad_norm=torch.tensor(INF)) == (False, {"loss": 1.0,
                                                                                            "grad_norm": INF})
        assert admit("actor", loss=torch.tensor(0.5), grad_norm=torch.tensor(2.0))[0]  # does not reset critic's
        with pytest.raises(NonFiniteError, match=r"2 consecutive critic .*first at update 1: critic/grad_norm=inf"):
            admit("critic", loss=torch.tensor(NAN), grad_norm=torch.tensor(1.0))


def test_admit_reads_every_quantity_as_float_of_the_tensor():
    loss, norm = torch.tensor(0.1234567), torch.tensor(3.3333333)
    finite, values = admit("actor", loss=loss, grad_norm=norm, extra=2.5)
    assert finite and values == {"loss": float(loss), "grad_norm": float(norm), "extra": 2.5}
    finite, values = admit("actor", loss=torch.tensor(0.5, dtype=torch.float64), grad_norm=norm)
    assert finite and values["grad_norm"] == float(norm) and values["loss"] == 0.5


def test_without_a_guard_non_finite_steps_are_still_skipped(kit):
    assert active_guard() is None
    net = small_net()
    optim = adam(net.parameters(), lr=1e-2, eps=1e-8)
    params = list(net.parameters())
    clip_and_step(optim, params, finite_loss(net), 1.0)
    before = snapshot(net, optim)
    for _ in range(20):  # no guard: nothing raises, nothing is applied
        assert math.isnan(clip_and_step(optim, params, nan_loss(net), 1.0))
        assert not math.isfinite(clip_and_step(optim, params, inf_gradient_loss(net), 1.0))
    assert_same_state(before, snapshot(net, optim))


def test_watch_installs_the_guard_for_its_block_only():
    outer, inner = NonFiniteGuard(1), NonFiniteGuard(1)
    with outer.watch():
        assert active_guard() is outer
        with inner.watch():
            assert active_guard() is inner
        assert active_guard() is outer
    assert active_guard() is None
    assert outer.updates == 1 and inner.updates == 1
    with pytest.raises(ValueError):
        NonFiniteGuard(0)


# -- 2. Parameters after an update -----------------------------------------------------------------


def test_check_parameters_names_the_first_non_finite_tensor_and_accepts_huge_finite_ones():
    net, norm = small_net(), ValueNorm()
    check_parameters({"actor": net, "value_norm": norm}, "after update 1")
    with torch.no_grad():
        net[2].weight.fill_(3e38)  # finite, though its 2-norm overflows
    check_parameters({"actor": net}, "after update 1")
    check_parameters(net, "after update 1")
    with torch.no_grad():
        net[2].bias[1] = NAN
    with pytest.raises(NonFiniteError, match=r"^training diverged: actor\.2\.bias is non-finite after update 4"):
        check_parameters({"actor": net}, "after update 4")
    with pytest.raises(NonFiniteError, match=r"parameter 3 is non-finite"):
        check_parameters(list(net.parameters()), "here")
    masked = small_net()
    masked.register_buffer("mask", torch.full((3,), -INF), persistent=False)  # infinite on purpose: not state
    check_parameters({"actor": masked}, "after update 1")
    norm.running_mean.fill_(INF)  # persistent buffers are state the next update reads: checked too
    with pytest.raises(NonFiniteError, match=r"value_norm\.running_mean is non-finite"):
        check_parameters({"actor": small_net(), "value_norm": norm}, "after update 2")


# -- 3. The rules' own steps -----------------------------------------------------------------------


def test_hatrpo_step_with_a_non_finite_surrogate_is_skipped_and_counted():
    rule = make_sequential_rule("hatrpo")
    chunks = random_chunks(SPEC)
    chunks.advantages = chunks.advantages.clone()
    chunks.advantages[0, 0, 1] = NAN
    data = with_unit_factor(agent_slice(chunks, 1))
    before = copy.deepcopy(rule.actor.state_dict())
    guard = NonFiniteGuard(patience=2)
    with guard.watch():
        stats = rule.trpo_update(1, data)
    assert stats["trpo/accepted"] == 0.0
    assert all(torch.equal(v, before[k]) for k, v in rule.actor.state_dict().items())
    assert guard.skipped_total == {"actor_1": 1}
    with guard.watch(), pytest.raises(NonFiniteError, match="actor_1/loss=nan"):
        rule.trpo_update(1, data)


def test_grasp_with_non_finite_local_gradients_skips_instead_of_failing_in_the_solver():
    rule = grasp_rule("heads")
    chunks = random_chunks(SPEC, L=10, C=8)
    chunks.advantages = chunks.advantages.clone()
    chunks.advantages[0, 0, :] = NAN
    before = copy.deepcopy(rule.actor.state_dict())
    guard = NonFiniteGuard(patience=100)
    with guard.watch():
        metrics = rule.update_policy(chunks)
    assert math.isnan(metrics["grasp/u_norm"]) and rule.u is None
    assert all(torch.equal(v, before[k]) for k, v in rule.actor.state_dict().items())
    assert guard.skipped_total["actor"] == rule.cfg.ppo_epochs * rule.cfg.num_minibatches


@pytest.mark.parametrize("overrides", [[], ["algo.consensus=grasp"], ["algo.optimizer=rmsprop"]],
                         ids=["qmix", "grasp-qmix", "rmsprop"])
def test_q_learning_skips_a_non_finite_td_step_and_raises_after_patience(overrides):
    rule = make_q_rule(*overrides)
    batch = make_batch()
    rule.update(batch, episodes=0)  # optimiser state exists
    reward = batch.reward.clone()
    reward[0, 0] = NAN
    bad = batch._replace(reward=reward)
    networks = {k: copy.deepcopy(m.state_dict()) for k, m in rule.modules().items()}
    optim = copy.deepcopy(rule.optim.state_dict())
    guard = NonFiniteGuard(patience=2)
    with guard.watch():
        metrics = rule.update(bad, episodes=1000)  # a hard target update is due: it copies finite weights
    assert math.isnan(metrics["train/td_loss"])
    assert_same_state((networks["agent"], optim), (rule.agent.state_dict(), rule.optim.state_dict()))
    assert all(torch.equal(v, networks["mixer"][k]) for k, v in rule.mixer.state_dict().items())
    check_parameters(rule.modules(), "after update 2")
    assert guard.take_metrics() == {"train/nonfinite_steps": 1.0}
    with guard.watch(), pytest.raises(NonFiniteError, match=r"2 consecutive td .*update 1: td/loss=nan"):
        rule.update(bad, episodes=1000)


# -- 4. Config ----------------------------------------------------------------------------------------


def test_nonfinite_patience_is_a_validated_setting():
    assert make_config().nonfinite_patience == 10
    assert make_config("nonfinite_patience=3").nonfinite_patience == 3
    with pytest.raises(ConfigError, match="nonfinite_patience"):
        make_config("nonfinite_patience=0")


# -- 5. Whole runs: every rule, learning rate 1e30 -------------------------------------------------------


class RecordingLogger:
    """What a runner logs, kept in memory (no RunLogger, no files)."""

    def __init__(self) -> None:
        self.rows: list[dict[str, float]] = []

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.rows.append(dict(metrics))

    def message(self, text: str) -> None:
        pass


ON_POLICY_SMALL = ["env=games", "map=gpvd_matrix", "n_envs=2", "rollout_length=10", "eval_episodes=2"]
OFF_POLICY_SMALL = ["env=games", "map=gpvd_matrix", "n_envs=4", "eval_episodes=2", "algo.batch_size=8"]

#: algorithm -> (extra overrides, the step names that must have been skipped)
DIVERGING = {
    "mappo": (["algo.critic_lr=1e30"], {"actor", "critic"}),
    "mars": (["algo.critic_lr=1e30"], {"actor", "critic"}),
    "happo": (["algo.critic_lr=1e30"], {"actor_0", "actor_1", "critic"}),
    "haa2c": (["algo.critic_lr=1e30"], {"actor_0", "actor_1", "critic"}),
    "hatrpo": (["algo.critic_lr=1e30"], {"critic"}),  # TRPO has no lr: its own step, test_hatrpo_* above
    "grasp": (["algo.critic_lr=1e30"], {"actor", "critic"}),
    "magpo": (["algo.critic_lr=1e30"], {"guider", "learner", "critic"}),
    "ctds": (["algo.critic_lr=1e30"], {"guider", "learner", "critic"}),
    "qmix": ([], {"td"}),
    "vdn": ([], {"td"}),
    "gpvd": ([], {"td"}),
    "grasp_qmix": ([], {"td"}),
}


def diverging_run(tmp_path: Path, algo: str, *overrides: str):
    """A runner of ``algo`` with ``overrides``, a checkpoint after every iteration (its ``save``
    replaced by a spy that records the update count and checks the saved networks are finite)."""
    family = make_config(f"algo={algo}").algo.family
    small = ON_POLICY_SMALL if family == "on_policy" else OFF_POLICY_SMALL
    cfg = make_config(f"algo={algo}", *small, "total_steps=100000", "log_interval=1", "latest_interval=1",
                      "save_interval=1", *overrides)
    runner = runner_class(family)(cfg, tmp_path)
    saves: list[int] = []

    def save(path: Path) -> None:
        check_parameters(runner.rule.modules(), "at a save")
        saves.append(runner.guard.updates)

    runner.save = save
    return runner, saves


@pytest.mark.parametrize("algo", list(DIVERGING))
def test_a_huge_learning_rate_stops_every_rule_with_finite_parameters_and_no_checkpoint_after(tmp_path, algo):
    overrides, names = DIVERGING[algo]
    runner, saves = diverging_run(tmp_path, algo, "algo.lr=1e30", *overrides)
    logger = RecordingLogger()
    try:
        with pytest.raises(NonFiniteError, match=r"^training diverged: 10 consecutive \w+ optimiser steps") as err:
            runner.train(logger)
        assert "\n" not in str(err.value)
        check_parameters(runner.rule.modules(), "when it raised")  # every parameter is finite
        assert runner.guard.updates <= 20, "stops within a few updates"
        assert names <= set(runner.guard.skipped_total)
        logged = [row["train/nonfinite_steps"] for row in logger.rows if "train/nonfinite_steps" in row]
        pending = runner.guard.take_metrics()["train/nonfinite_steps"]  # the update that raised
        assert any(v > 0 for v in logged) or pending > 0
        assert all(np.isfinite(v) and v == int(v) for v in logged)
        assert saves and saves[-1] == runner.guard.updates - 1, "no checkpoint after the update that raised"
    finally:
        runner.close()


def test_nan_rewards_stop_hatrpo_through_its_trpo_step_and_value_norm_through_the_parameter_check(tmp_path):
    def nan_rewards(runner):
        step = runner.envs.step

        def poisoned(actions):
            out = step(actions)
            out.reward[:] = NAN
            return out

        runner.envs.step = poisoned

    runner, _ = diverging_run(tmp_path / "a", "hatrpo", "algo.use_valuenorm=false")
    nan_rewards(runner)
    try:
        with pytest.raises(NonFiniteError, match="critic/loss=nan"):
            runner.train(RecordingLogger())
        assert {"actor_0", "actor_1", "critic"} <= set(runner.guard.skipped_total)
        check_parameters(runner.rule.modules(), "when it raised")
    finally:
        runner.close()
    runner, saves = diverging_run(tmp_path / "b", "mappo")
    nan_rewards(runner)
    try:
        with pytest.raises(NonFiniteError, match=r"value_norm\.running_mean is non-finite after update 1"):
            runner.train(RecordingLogger())
        assert saves == []
    finally:
        runner.close()


def test_finite_runs_log_zero_nonfinite_steps(tmp_path):
    runner, _ = diverging_run(tmp_path, "mappo", "total_steps=40")
    logger = RecordingLogger()
    try:
        assert runner.train(logger) == "finished"
    finally:
        runner.close()
    updates = [row for row in logger.rows if "actor/grad_norm" in row]
    assert len(updates) == 2 and all(row["train/nonfinite_steps"] == 0.0 for row in updates)
