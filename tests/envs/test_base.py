"""The ``VectorEnv`` protocol and the step records (``marlopt.envs.base``)."""

from __future__ import annotations

import functools

import numpy as np

from marlopt.envs import ProcessVectorEnv, VecObs, VecStep, VectorEnv
from marlopt.envs.vector.wire import StepArrays
from tests.envs.faulty_env import ToyEnv

# What the runner (marlopt/runners/on_policy.py) and the evaluation (marlopt/evaluation.py) use.
PROTOCOL = {"spec", "num_envs", "restarts", "last_restore_reset", "reset", "step", "get_state",
            "set_state", "close"}  # fmt: skip


def test_protocol_members_are_exactly_what_the_runner_and_the_evaluation_use():
    members = {name for name in vars(VectorEnv) if not name.startswith("_")}
    members |= set(VectorEnv.__annotations__)
    assert members == PROTOCOL


def test_process_vector_env_implements_the_protocol_and_a_bare_object_does_not():
    with ProcessVectorEnv([functools.partial(ToyEnv)] * 2) as vec:
        assert isinstance(vec, VectorEnv)
    assert not isinstance(object(), VectorEnv)


def test_step_records():
    assert VecObs._fields == ("obs", "state", "avail", "active")
    assert StepArrays._fields + ("restarts",) == VecStep._fields  # the wire carries every array field
    arrays = StepArrays._make(np.full(2, k) for k in range(len(StepArrays._fields)))
    step = arrays.to_vec_step(restarts=7)
    assert step.restarts == 7
    for name in StepArrays._fields:
        assert getattr(step, name) is getattr(arrays, name)
