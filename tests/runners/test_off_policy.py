"""The off-policy runner: what it stores, masking, crashes, exact resume; learning tests."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

import marlopt.runners.common as runner_common
from marlopt.cli import choices
from marlopt.logger import RunLogger
from marlopt.runners.off_policy import OffPolicyRunner
from marlopt.train import run_training
from tests.envs.faulty_env import make
from tests.helpers import make_config, read_metrics, run_cli

OFF_POLICY = [a for a in choices("algo") if make_config(f"algo={a}").algo.family == "off_policy"]
SMALL = ["env=games", "map=gpvd_matrix", "n_envs=4", "total_steps=96", "eval_episodes=2", "algo.batch_size=8",
         "log_interval=1"]


@pytest.mark.parametrize("algo", OFF_POLICY)
def test_every_off_policy_algorithm_config_runs(tmp_path, algo):
    cfg = make_config(f"algo={algo}", *SMALL)
    assert run_training(cfg, tmp_path) == "finished"
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [4 * k for k in range(1, 25)] + [96]  # one round = 4 one-step episodes
    assert all(np.isfinite(v) for r in rows for v in r.values())
    assert "train/td_loss" not in rows[0] and "train/td_loss" in rows[2]  # learning starts at batch_size episodes


@pytest.fixture
def toy_runner(monkeypatch, tmp_path):
    """An off-policy runner on ToyEnv: avail masks that change, deaths, terminations and time limits."""

    def build(algo="qmix", n_envs=3, *overrides, **toy):
        monkeypatch.setattr(runner_common, "env_fn", lambda name, map_name, options: functools.partial(make, "toy", **toy))
        cfg = make_config(f"algo={algo}", "env=games", "map=gpvd_matrix", f"n_envs={n_envs}", "total_steps=600",
                          "eval_episodes=4", "algo.batch_size=4", "model.recurrent=true", *overrides)
        cfg.env.vector = "inproc"
        return OffPolicyRunner(cfg, tmp_path)

    return build


def test_stored_episodes_are_what_the_envs_returned(toy_runner):
    runner = toy_runner()
    steps, inputs = [], []
    original = runner.envs.step

    def record(actions):
        inputs.append({k: runner.carry[k].numpy().copy() for k in ("obs", "state", "avail")})
        step = original(actions)
        steps.append((actions.copy(), step))
        return step

    runner.envs.step = record
    for _ in range(5):
        runner.collect_round()
    # rebuild every finished episode from the recorded steps, env by env
    episodes = []
    current = {e: [] for e in range(3)}
    for (actions, step), before in zip(steps, inputs):
        for e in range(3):
            current[e].append((before, actions[e], step, e))
            if step.terminated[e] or step.truncated[e]:
                episodes.append(current[e])
                current[e] = []
    buf = runner.buffer
    assert buf.size == len(episodes) >= 6
    terminated_seen = truncated_seen = False
    for slot, episode in enumerate(episodes):
        length = len(episode)
        assert int(buf.lengths[slot]) == length and buf.data["filled"][slot].sum() == length
        for t, (before, actions, step, e) in enumerate(episode):
            assert np.array_equal(buf.data["obs"][slot, t].numpy(), before["obs"][e])
            assert np.array_equal(buf.data["avail"][slot, t].numpy(), before["avail"][e])
            assert np.array_equal(buf.data["actions"][slot, t].numpy(), actions)
            assert buf.data["reward"][slot, t] == step.reward[e]
        last = episode[-1][2]
        e = episode[-1][3]
        assert buf.data["terminated"][slot, : length - 1].sum() == 0
        assert bool(buf.data["terminated"][slot, length - 1]) == bool(last.terminated[e])
        terminated_seen |= bool(last.terminated[e])
        truncated_seen |= bool(last.truncated[e])
        # the final inputs (before the auto-reset) sit at index len: a time limit bootstraps from them
        assert np.array_equal(buf.data["obs"][slot, length].numpy(), last.final_obs[e])
        assert np.array_equal(buf.data["state"][slot, length].numpy(), last.final_state[e])
        assert np.array_equal(buf.data["avail"][slot, length].numpy(), last.final_avail[e])
    assert terminated_seen and truncated_seen
    runner.close()


@pytest.mark.parametrize("epsilon", [1.0, 0.0])
def test_no_unavailable_action_is_ever_taken(toy_runner, epsilon):
    runner = toy_runner("qmix", 3, f"algo.epsilon_start={epsilon}", f"algo.epsilon_finish={epsilon}")
    for _ in range(10):
        runner.collect_round()
        runner.learn()
    envs = runner.envs._group.envs
    assert sum(env.life_steps for env in envs) > 100
    assert sum(env.unavailable_taken for env in envs) == 0
    runner.close()


def test_a_crashed_env_loses_its_episode_and_nothing_is_stored(toy_runner, tmp_path):
    runner = toy_runner("qmix", 2, fail="raise", fail_at=4, once_path=str(tmp_path / "once"))
    for _ in range(3):
        runner.collect_round()
    assert runner.envs.restarts == 1
    lengths = runner.buffer.lengths[: runner.buffer.size]
    assert runner.buffer.size == runner.episodes == 6  # three rounds of two finished episodes: none fabricated
    assert (lengths >= 1).all() and (runner.buffer.data["filled"][: runner.buffer.size].sum(1) == lengths).all()
    runner.close()


@pytest.mark.parametrize("algo", ["qmix", "gpvd"])
def test_resume_equals_uninterrupted(tmp_path, algo):
    """Networks, targets, optimiser, GPVD's count table, the replay buffer, episodes in flight,
    envs and RNGs all come back: a resumed run logs exactly what an uninterrupted one does."""
    args = [f"algo={algo}", "env=mpe", "n_envs=2", "total_steps=1000", "algo.batch_size=4", "log_interval=2",
            "eval_interval=400", "eval_episodes=2", "progress=false", "env.vector=inproc"]
    full, part = tmp_path / "full", tmp_path / "part"
    run_cli("marlopt.train", *args, f"hydra.run.dir={full}", cwd=tmp_path)
    run_cli("marlopt.train", *args, "max_iterations=7", f"hydra.run.dir={part}", cwd=tmp_path)
    run_cli("marlopt.train", f"resume={part}", cwd=tmp_path)
    assert read_metrics(part) == read_metrics(full)
    rows = read_metrics(full)
    assert any("eval/return_mean" in r for r in rows[:-1]) and any("train/td_loss" in r for r in rows)


def test_a_buffer_too_big_for_the_checkpoint_restarts_empty_and_says_so(tmp_path, capsys):
    cfg = make_config("algo=qmix", *SMALL, "algo.buffer_checkpoint_mb=0", "max_iterations=5")
    assert run_training(cfg, tmp_path) == "max_iterations reached"
    payload = torch.load(tmp_path / "checkpoints" / "latest.pt", weights_only=True)
    assert payload["buffer"] is None
    runner = OffPolicyRunner(cfg, tmp_path, payload)
    assert runner.buffer.size == 0 and runner.frames == 20
    out = capsys.readouterr().out
    assert "replay buffer" in out and "algo.buffer_checkpoint_mb=0" in out and "restarts empty" in out
    runner.close()


def test_same_seed_same_metrics(tmp_path):
    for name in ("a", "b", "c"):
        seed = 1 if name == "c" else 0
        cfg = make_config("algo=qmix", *SMALL, f"seed={seed}", "algo.epsilon_anneal_steps=50")
        run_training(cfg, tmp_path / name)
    a, b, c = (read_metrics(tmp_path / n) for n in "abc")
    assert a == b and a != c


# -- learning tests (the matrix-game protocol: uniform exploration, EQUATIONS.md) ------------------
def _greedy_joint_return(algo: str, seed: int, tmp_path, map_name: str = "gpvd_matrix", frames: int = 20000) -> float:
    cfg = make_config(f"algo={algo}", "env=games", f"map={map_name}", "algo.epsilon_start=1", "algo.epsilon_finish=1",
                      f"total_steps={frames}", f"seed={seed}", "eval_episodes=4", "torch_threads=1")
    run = tmp_path / f"{algo}_{seed}"
    run.mkdir()
    runner = OffPolicyRunner(cfg, run)
    logger = RunLogger(run, runner.total_frames, progress=False, tensorboard=False)
    assert runner.train(logger) == "finished"
    logger.close()
    return read_metrics(run)[-1]["eval/return_mean"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_gpvd_finds_the_optimum_of_the_gpvd_matrix_game(tmp_path, seed):
    """GPVD paper, Fig. 3: GPVD's greedy joint action is (a1, b1) = 8 within 20k steps."""
    assert _greedy_joint_return("gpvd", seed, tmp_path) == 8.0


@pytest.mark.parametrize("algo", ["qmix", "vdn", "qmix_pymarl2"])
def test_qmix_and_vdn_settle_below_the_optimum_of_the_gpvd_matrix_game(tmp_path, algo):
    """Value factorisation under uniform exploration settles on a suboptimal joint action."""
    assert _greedy_joint_return(algo, 0, tmp_path) < 8.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_qmix_finds_the_optimum_of_pymarl2s_matrix_game(tmp_path, seed):
    """PyMARL2's one-step game [[12, -0.1, -0.1], [-0.1, 0, 0], [-0.1, 0, 0]]: QMIX's greedy joint
    action is (0, 0) = 12 within 10k steps."""
    assert _greedy_joint_return("qmix", seed, tmp_path, "pymarl2_matrix", frames=10000) == 12.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("algo", ["qmix", "gpvd", "grasp_qmix"])
def test_off_policy_trains_on_cuda_like_on_the_cpu(tmp_path, algo):
    """``device=cuda``: acting from the agent's CPU copy, replay sampled on the CPU and moved, the
    update on the GPU; the first update's TD loss matches the CPU run's to float tolerance."""
    rows = {}
    for device in ("cpu", "cuda"):
        cfg = make_config(f"algo={algo}", *SMALL, f"device={device}", "algo.epsilon_anneal_steps=0")
        assert run_training(cfg, tmp_path / device) == "finished"
        rows[device] = [r for r in read_metrics(tmp_path / device) if "train/td_loss" in r]
    assert rows["cuda"][0]["train/td_loss"] == pytest.approx(rows["cpu"][0]["train/td_loss"], rel=1e-3, abs=1e-5)
