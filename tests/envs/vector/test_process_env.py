"""ProcessVectorEnv: inproc == subproc == hybrid, auto-reset bookkeeping, crash restarts, exact
checkpoint resume."""

from __future__ import annotations

import functools
import os
import signal
import time

import numpy as np
import pytest

from marlopt.envs import ProcessVectorEnv, VecObs, VecStep, VectorEnv, env_fn
from marlopt.envs.vector.wire import DEFAULT_SPIN
from tests.envs.faulty_env import ToyEnv

E = 4
MODES = ["inproc", "subproc", "hybrid"]
FIELDS = VecStep._fields


def toy_fns(n=E, special=None, **kw):
    """n ToyEnv factories; ``special`` = {index: extra kwargs} for faulty ones."""
    special = special or {}
    return [functools.partial(ToyEnv, **{**kw, **special.get(i, {})}) for i in range(n)]


def make_vec(fns, mode, **kw):
    if mode == "subproc":
        kw.setdefault("n_workers", 2)
    if mode == "hybrid":
        kw.setdefault("n_workers", 1)  # envs 0, 1 stepped here; 2, 3 in the worker
    return ProcessVectorEnv(fns, mode=mode, **kw)


def random_actions(spec, steps, seed=0, n=E):
    rng = np.random.default_rng(seed)
    if spec.continuous:
        return rng.uniform(0, 1, size=(steps, n, spec.n_agents, spec.n_actions))
    return rng.integers(spec.n_actions, size=(steps, n, spec.n_agents))


def rollout(vec, actions):
    return [vec.step(a) for a in actions]


def assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        for name, u, v in zip(x._fields, x, y, strict=True):
            assert np.array_equal(u, v), name


# --------------------------------------------------------------------------- equivalence
def test_inproc_and_subproc_trajectories_are_identical_and_match_single_envs():
    fns = toy_fns()
    acts = random_actions(ToyEnv().spec, 40)
    results = {}
    for mode in MODES:
        with make_vec(fns, mode) as vec:
            results[mode] = (vec.reset([10, 11, 12, 13]), rollout(vec, acts))
    for mode in MODES[1:]:
        assert_same([results["inproc"][0]], [results[mode][0]])
        assert_same(results["inproc"][1], results[mode][1])

    # Reference: the same envs stepped one by one, reset(None) after each episode.
    steps = results["inproc"][1]
    envs = [fn() for fn in fns]
    first = [env.reset(s) for env, s in zip(envs, [10, 11, 12, 13])]
    assert np.array_equal(results["inproc"][0].obs, np.stack([obs for obs, _, _ in first]))
    ret, length, ended = [0.0] * E, [0] * E, 0
    for t, out in enumerate(steps):
        assert out.reward.dtype == np.float32 and out.obs.dtype == np.float32
        for i, env in enumerate(envs):
            r = env.step(acts[t, i])
            ret[i] += r.reward
            length[i] += 1
            assert out.reward[i] == np.float32(r.reward)
            assert out.terminated[i] == r.terminated and out.truncated[i] == r.truncated
            assert not out.dropped[i]
            assert np.array_equal(out.final_state[i], r.state)  # the state at the last step
            assert np.array_equal(out.final_active[i], r.info["active"])
            assert np.array_equal(out.final_obs[i], r.obs) and np.array_equal(out.final_avail[i], r.avail)
            if r.terminated or r.truncated:
                ended += 1
                assert out.won[i] == r.info["won"]
                assert out.episode_length[i] == length[i]
                assert out.episode_return[i] == pytest.approx(ret[i], rel=1e-6)
                ret[i], length[i] = 0.0, 0
                obs, state, avail = env.reset(None)
                assert out.active[i].all()
            else:
                obs, state, avail = r.obs, r.state, r.avail
                assert np.array_equal(out.active[i], r.info["active"])
                assert out.episode_length[i] == 0 and out.episode_return[i] == 0
            assert np.array_equal(out.obs[i], obs) and np.array_equal(out.state[i], state)
            assert np.array_equal(out.avail[i], avail)
    assert ended >= 10  # both terminations and truncations happened
    assert any(s.terminated.any() for s in steps) and any(s.truncated.any() for s in steps)
    assert any((~s.final_active).any() for s in steps)  # agents died on the way


@pytest.mark.parametrize(
    "map_name, continuous", [("simple_spread", False), ("simple_speaker_listener", True)]
)
def test_mpe_inproc_equals_subproc(map_name, continuous):
    fns = [env_fn("mpe", map_name, {"continuous": continuous, "max_cycles": 6})] * E
    results = []
    for mode in MODES:
        with make_vec(fns, mode) as vec:
            vec.reset([0, 1, 2, 3])
            results.append(rollout(vec, random_actions(vec.spec, 14, seed=3)))
    for other in results[1:]:
        assert_same(results[0], other)
    assert results[0][5].truncated.all() and results[0][11].truncated.all()
    assert (results[0][5].episode_length == 6).all()
    ret = sum(s.reward.astype(np.float64) for s in results[0][:6])
    np.testing.assert_allclose(results[0][5].episode_return, ret, rtol=1e-5)


def test_hybrid_steps_a_share_of_the_envs_in_this_process():
    with ProcessVectorEnv(toy_fns(5), mode="hybrid", n_workers=2) as vec:
        assert vec.local_envs == 5 // 3 == 1 and len(vec.worker_pids) == 2
        assert [(w.lo, w.hi) for w in vec._workers] == [(1, 3), (3, 5)]
        assert vec.workers_have_module("numpy") == [True, True]
        vec.reset([0, 1, 2, 3, 4])
        local_env = vec._group.envs[0]
        before = local_env.get_state()
        vec.step(random_actions(vec.spec, 1, n=5)[0])
        assert local_env.get_state() != before  # env 0 lives (and stepped) in this process
    with pytest.raises(ValueError, match="hybrid.*at least 2 envs"):
        ProcessVectorEnv(toy_fns(1), mode="hybrid")


def test_spinning_is_on_only_when_every_spinner_has_a_core():
    cores = len(os.sched_getaffinity(0))
    for mode, workers in [("hybrid", 1), ("subproc", 2), ("subproc", 1)]:
        with ProcessVectorEnv(toy_fns(3), mode=mode, n_workers=workers) as vec:
            assert vec.spin == (DEFAULT_SPIN if workers + 1 <= cores else 0.0), (mode, workers)
            vec.reset([0, 1, 2])  # and it steps either way
            vec.step(random_actions(vec.spec, 1, n=3)[0])
    with ProcessVectorEnv(toy_fns(2), mode="inproc") as vec:
        assert vec.spin == 0.0
    with pytest.raises(ValueError, match="spin"):
        ProcessVectorEnv(toy_fns(2), mode="subproc", spin=-1.0)


def test_argument_checks():
    vec = ProcessVectorEnv(toy_fns(2))
    assert isinstance(vec, VectorEnv)  # implements the protocol
    with pytest.raises(RuntimeError, match="before reset"):
        vec.step(np.zeros((2, 3), np.int64))
    with pytest.raises(ValueError, match="seeds"):
        vec.reset([1])
    vec.reset([1, 2])
    with pytest.raises(ValueError, match="shape"):
        vec.step(np.zeros((3, 3), np.int64))
    vec.close()
    vec.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        vec.reset([1, 2])
    with pytest.raises(ValueError, match="mode"):
        ProcessVectorEnv(toy_fns(2), mode="threads")


# --------------------------------------------------------------------------- crashes
@pytest.mark.parametrize("mode", MODES)
def test_exception_in_step_restarts_the_env_and_drops_the_step(mode, tmp_path):
    spec = ToyEnv().spec
    acts = random_actions(spec, 6)
    with make_vec(toy_fns(), mode) as clean:
        clean.reset([0, 1, 2, 3])
        reference = rollout(clean, acts)
    faulty = {1: {"fail": "raise", "fail_at": 3, "once_path": str(tmp_path / "once")}}
    with make_vec(toy_fns(special=faulty), mode) as vec:
        vec.reset([0, 1, 2, 3])
        out = rollout(vec, acts)
    crashed = out[2]  # the env's third step raised
    assert crashed.dropped.tolist() == [False, True, False, False]
    assert not crashed.terminated[1] and not crashed.truncated[1] and crashed.reward[1] == 0
    assert crashed.restarts == 1 and out[-1].restarts == 1 and out[1].restarts == 0
    assert crashed.obs[1, :, 4].max() == 0  # obs[..., 4] is the time step: a fresh episode
    assert crashed.active[1].all()
    assert not any(s.dropped.any() for k, s in enumerate(out) if k != 2)
    for i in (0, 2, 3):  # the others never noticed
        for a, b in zip(out, reference):
            assert np.array_equal(a.obs[i], b.obs[i]) and a.reward[i] == b.reward[i]
    # the restarted env uses a seed derived from its own, not the original stream
    assert not np.array_equal(crashed.obs[1], reference[2].obs[1])


@pytest.mark.parametrize("mode", MODES)
def test_exception_in_auto_reset_keeps_the_finished_episode(mode, tmp_path):
    faulty = {0: {"fail": "raise_reset", "fail_at": 2, "once_path": str(tmp_path / "once")}}
    with make_vec(toy_fns(special=faulty), mode) as vec:
        vec.reset([5, 6, 7, 8])
        out = rollout(vec, random_actions(vec.spec, 3))
    s = out[1]
    assert s.terminated[0] or s.truncated[0]  # the episode ended normally ...
    assert not s.dropped[0] and s.restarts == 1  # ... the crash in its reset was absorbed
    assert s.obs[0, :, 4].max() == 0


@pytest.mark.parametrize("mode", MODES)
def test_gives_up_after_max_restarts(mode):
    with make_vec(toy_fns(special={2: {"fail": "raise", "fail_at": 1}}), mode, max_restarts=2) as vec:
        vec.reset([0, 1, 2, 3])
        acts = random_actions(vec.spec, 3)
        assert vec.step(acts[0]).restarts == 1  # every rebuilt env fails at its first step again
        assert vec.step(acts[1]).restarts == 2
        with pytest.raises(RuntimeError, match="gave up.*max_restarts=2"):
            vec.step(acts[2])


def _dead(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_killed_worker_is_respawned_and_its_envs_dropped():
    with make_vec(toy_fns(), "subproc") as vec:
        vec.reset([0, 1, 2, 3])
        acts = random_actions(vec.spec, 8)
        for k in range(3):
            vec.step(acts[k])
        pids = vec.worker_pids
        os.kill(pids[0], signal.SIGKILL)
        out = vec.step(acts[3])
        assert out.dropped.tolist() == [True, True, False, False]
        assert not (out.terminated[:2] | out.truncated[:2]).any() and out.restarts == 1
        assert out.obs[:2, :, 4].max() == 0  # fresh episodes
        new = vec.worker_pids
        assert new[0] != pids[0] and new[1] == pids[1]
        for k in range(4, 8):  # the run goes on
            assert not vec.step(acts[k]).dropped.any()


def test_worker_that_dies_inside_env_step_is_respawned(tmp_path):
    faulty = {3: {"fail": "exit", "fail_at": 2, "once_path": str(tmp_path / "once")}}
    with make_vec(toy_fns(special=faulty), "subproc") as vec:
        vec.reset([0, 1, 2, 3])
        out = rollout(vec, random_actions(vec.spec, 3))
    assert out[1].dropped.tolist() == [False, False, True, True] and out[1].restarts == 1
    assert not out[2].dropped.any()


def test_hung_worker_is_respawned_after_step_timeout(tmp_path):
    faulty = {0: {"fail": "hang", "fail_at": 2, "once_path": str(tmp_path / "once")}}
    with make_vec(toy_fns(special=faulty), "subproc", step_timeout=1.5) as vec:
        vec.reset([0, 1, 2, 3])
        acts = random_actions(vec.spec, 4)
        vec.step(acts[0])
        old = vec.worker_pids[0]
        start = time.monotonic()
        out = vec.step(acts[1])
        assert time.monotonic() - start >= 1.5
        assert out.dropped.tolist() == [True, True, False, False] and out.restarts == 1
        assert vec.worker_pids[0] != old
        assert not vec.step(acts[2]).dropped.any()
    assert _dead(old)


def test_interrupted_step_does_not_desynchronise_the_workers(tmp_path):
    """Ctrl-C while waiting for a worker: the late reply is drained, the next step is all dropped."""
    faulty = {0: {"fail": "slow", "fail_at": 2, "once_path": str(tmp_path / "once")}}
    with make_vec(toy_fns(special=faulty), "subproc") as vec, make_vec(toy_fns(), "inproc") as ref:
        vec.reset([0, 1, 2, 3])
        ref.reset([0, 1, 2, 3])
        acts = random_actions(vec.spec, 5)
        vec.step(acts[0])
        ref.step(acts[0])

        def interrupt(*_):
            raise KeyboardInterrupt

        old = signal.signal(signal.SIGALRM, interrupt)
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.2)
            with pytest.raises(KeyboardInterrupt):
                vec.step(acts[1])  # interrupted while worker 0 sleeps
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
        ref.step(acts[1])  # the envs did take that step
        out = vec.step(acts[2])
        assert out.dropped.all() and out.restarts == 0
        expected = ref.step(acts[2])
        assert np.array_equal(out.obs, expected.obs)  # the data is not shifted by one reply
        out, expected = vec.step(acts[3]), ref.step(acts[3])
        assert not out.dropped.any() and np.array_equal(out.obs, expected.obs)


# --------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize(
    "env, save_mode, load_mode",
    [
        ("toy", "inproc", "inproc"),
        ("toy", "subproc", "subproc"),
        ("mpe", "subproc", "inproc"),  # a checkpoint loads in either mode
        ("mpe", "inproc", "subproc"),
        ("toy", "hybrid", "hybrid"),
        ("mpe", "hybrid", "inproc"),
        ("toy", "subproc", "hybrid"),
    ],
)
def test_get_set_state_reproduces_the_future(env, save_mode, load_mode):
    if env == "toy":
        fns = toy_fns()
    else:
        fns = [env_fn("mpe", "simple_spread", {"max_cycles": 5, "continuous": True})] * E
    with make_vec(fns, save_mode) as vec:
        vec.reset([3, 4, 5, 6])
        acts = random_actions(vec.spec, 16, seed=9)
        before = rollout(vec, acts[:4])
        snapshot = vec.get_state()
        future = rollout(vec, acts[4:])
    assert any(s.truncated.any() or s.terminated.any() for s in future)  # crosses auto-resets
    with make_vec(fns, load_mode) as other:
        other.reset([0, 0, 0, 0])  # a different trajectory, replaced by the snapshot
        other.step(acts[0])
        restored = other.set_state(snapshot)
        assert not other.last_restore_reset.any()
        for name in VecObs._fields:  # continue from the same observations
            assert np.array_equal(getattr(restored, name), getattr(before[-1], name)), name
        replay = rollout(other, acts[4:])
    for a, b in zip(future, replay):
        for name, u, v in zip(FIELDS, a, b):
            if name != "restarts":
                assert np.array_equal(u, v), name


class _NoStateToy(ToyEnv):
    def get_state(self):
        return None


@pytest.mark.parametrize("mode", MODES)
def test_unpicklable_envs_are_reset_on_restore(mode):
    fns = [functools.partial(_NoStateToy) if i == 2 else functools.partial(ToyEnv) for i in range(E)]
    with make_vec(fns, mode) as vec:
        vec.reset([1, 2, 3, 4])
        acts = random_actions(vec.spec, 3)
        rollout(vec, acts[:2])
        snap = vec.get_state()
        assert snap["envs"][2] is None
        assert all(isinstance(b, bytes) for i, b in enumerate(snap["envs"]) if i != 2)
        restored = vec.set_state(snap)
        assert vec.last_restore_reset.tolist() == [False, False, True, False]
        assert restored.obs[2, :, 4].max() == 0 and restored.active[2].all()
        assert np.array_equal(restored.obs[0], VecObs._make(snap["last"]).obs[0])


def test_workers_do_not_import_torch_and_close_cleanly():
    vec = make_vec([env_fn("mpe", "simple_spread")] * E, "subproc")
    assert vec.workers_have_module("numpy") == [True, True]  # the probe works ...
    assert vec.workers_have_module("mpe2") == [True, True]
    assert vec.workers_have_module("torch") == [False, False]  # ... and torch is absent
    pids = vec.worker_pids
    assert len(pids) == 2 and not any(_dead(p) for p in pids)
    vec.close()
    vec.close()  # idempotent
    assert all(_dead(p) for p in pids)
