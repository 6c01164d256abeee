"""The batched ``SmaxVectorEnv`` against ``ProcessVectorEnv`` of single SMAX envs (bit for bit,
checkpoints both ways), its zero-copy outputs and truncation; the runner and the CLI on it.

Each SMAX configuration compiles its JAX functions once per process, so the tests use ``3m``, the
configuration ``test_env.py`` compiles too.
"""

from __future__ import annotations

import numpy as np
import pytest

from marlopt.envs import ProcessVectorEnv, VecObs, VectorEnv
from marlopt.envs.registry import env_fn
from marlopt.envs.smax import SmaxVectorEnv, make_vector
from tests.envs.smax.helpers import STOP, needs_smax, random_actions
from tests.helpers import make_config, read_metrics, run_cli


# ------------------------------------------------------------------ the batched vector env
FIELDS_EXACT = ("obs", "state", "avail", "active", "reward", "terminated", "truncated", "dropped",
                "final_state", "final_active", "final_obs", "final_avail", "won", "episode_return", "episode_length")  # fmt: skip


def _assert_same_step(a, b) -> None:
    for name in FIELDS_EXACT:
        x, y = getattr(a, name), getattr(b, name)
        assert x.shape == y.shape and x.dtype == y.dtype, name
        np.testing.assert_array_equal(x, y, err_msg=name)
    assert a.restarts == b.restarts == 0


@needs_smax
def test_batched_vector_env_equals_vector_env_of_single_envs():
    e, seeds = 3, [5, 2**33 + 1, 99]
    ref = ProcessVectorEnv([env_fn("smax", "3m", {}) for _ in range(e)], mode="inproc")
    vec = make_vector("3m", e)
    assert isinstance(vec, SmaxVectorEnv) and vec.spec == ref.spec and vec.num_envs == e
    assert isinstance(vec, VectorEnv) and isinstance(ref, VectorEnv)  # the protocol, both kinds
    a, b = ref.reset(seeds), vec.reset(seeds)
    for name in VecObs._fields:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):
        actions = random_actions(rng, a.avail)
        a, b = ref.step(actions), vec.step(actions)
        _assert_same_step(a, b)
        ended += int((a.terminated | a.truncated).sum())
    assert ended >= 6, "the comparison should cross several auto-resets"
    # Checkpoints are interchangeable: ProcessVectorEnv -> SmaxVectorEnv and back, same future.
    state_ref, state_vec = ref.get_state(), vec.get_state()
    other_vec, other_ref = make_vector("3m", e), ProcessVectorEnv([env_fn("smax", "3m", {}) for _ in range(e)])
    from_ref, from_vec = other_vec.set_state(state_ref), other_ref.set_state(state_vec)
    for name in VecObs._fields:  # both continue from the last step's inputs
        np.testing.assert_array_equal(getattr(from_ref, name), getattr(a, name), err_msg=name)
        np.testing.assert_array_equal(getattr(from_vec, name), getattr(a, name), err_msg=name)
    assert not other_vec.last_restore_reset.any() and not other_ref.last_restore_reset.any()
    for _ in range(40):
        actions = random_actions(rng, a.avail)
        a = ref.step(actions)
        for other in (vec, other_vec, other_ref):
            _assert_same_step(a, other.step(actions))
    for env in (ref, vec, other_vec, other_ref):
        env.close()
    with pytest.raises(RuntimeError, match="closed"):
        vec.step(actions)


@needs_smax
def test_batched_vector_env_outputs_are_zero_copy_views():
    vec = make_vector("3m", 2)
    vec.reset([0, 1])
    step = vec.step(np.full((2, 3), STOP))
    for name in ("obs", "state", "avail", "active", "final_state", "final_active", "final_obs", "final_avail"):
        assert not getattr(step, name).flags.writeable, name  # views of JAX's buffers, no copy
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.full((3, 3), STOP))
    with pytest.raises(ValueError, match="action ids"):
        vec.step(np.full((2, 3), 8))


@needs_smax
def test_batched_truncation_and_final_state():
    vec = make_vector("3m", 2, max_steps=5)
    first = vec.reset([0, 1])
    for t in range(1, 6):
        step = vec.step(np.full((2, 3), STOP))
        assert not step.terminated.any()
        assert step.truncated.tolist() == [t == 5] * 2
    assert step.episode_length.tolist() == [5, 5] and not step.won.any()
    assert not np.array_equal(step.final_state, step.state)  # final: before the auto-reset
    assert not np.array_equal(step.obs, first.obs)  # a new episode, a new draw of the start


@needs_smax
@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # runner's from_numpy
def test_the_runner_trains_and_resumes_on_the_batched_vector_env(tmp_path, monkeypatch):
    """``env.vector=batched`` (SMAX's default) makes the runner train and resume on SmaxVectorEnv."""
    from marlopt.runners import common as runner_common
    from marlopt.train import run_training

    overrides = ["algo=mappo", "env=smax", "map=smacv2_5_units", "env.state_type=EP", "n_envs=3",
                 "rollout_length=20", "eval_episodes=2", "model.hidden_sizes=[32]", "model.rnn_hidden=32"]
    cfg = make_config(*overrides, "total_steps=120", "max_iterations=1")
    cfg.env.map_name = "3m"  # the configuration the tests above compiled already (same process)
    built = []

    assert cfg.env.vector == "batched"

    def batched(env_name, map_name, options, n_envs):
        built.append(make_vector(map_name, n_envs, **dict(options)))
        return built[-1]

    monkeypatch.setattr(runner_common, "make_vector_env", batched)
    run = tmp_path / "run"
    assert run_training(cfg, run) == "max_iterations reached"
    cfg.max_iterations = None
    assert run_training(cfg, run, resume=True) == "finished"  # checkpoint -> SmaxVectorEnv.set_state
    assert len(built) == 2 and all(isinstance(v, SmaxVectorEnv) for v in built)
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "train/return_mean" in r or "actor/entropy" in r][-1] == 120
    assert any("eval/win_rate" in r for r in rows)


# ------------------------------------------------------------------ training through the CLI
@needs_smax
@pytest.mark.slow
def test_short_training_run_through_the_cli(tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", "algo=mappo", "env=smax", "map=smacv2_10_units", "n_envs=2", "rollout_length=20",
            "total_steps=80", f"hydra.run.dir={run}", "progress=false", "eval_episodes=2", cwd=tmp_path)
    rows = read_metrics(run)
    final = [r for r in rows if "eval/win_rate" in r]
    assert final and final[-1]["step"] == 80
    assert 0.0 <= final[-1]["eval/win_rate"] <= 1.0 and final[-1]["eval/episodes"] == 2
    assert any("train/return_mean" in r for r in rows)
