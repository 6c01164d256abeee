"""The wire format of ``ProcessVectorEnv``: named layouts and the binary step block."""

from __future__ import annotations

import numpy as np

from marlopt.envs.base import EnvSpec
from marlopt.envs.vector.wire import BLOCK_TAG, StepArrays, action_layout, alloc, step_block, step_layout

SPEC = EnvSpec(n_agents=3, obs_dim=5, state_dim=4, n_actions=6, episode_limit=10, state_per_agent=True)


def test_layout_shapes_and_dtypes():
    layout = step_layout(SPEC)
    assert layout.obs == ((3, 5), np.float32) and layout.state == ((3, 4), np.float32)
    assert layout.avail == ((3, 6), np.bool_) and layout.active == ((3,), np.bool_)
    assert layout.episode_length == ((), np.int64) and layout.reward == ((), np.float32)
    arrays = alloc(2, layout)
    assert isinstance(arrays, StepArrays) and arrays.final_state.shape == (2, 3, 4)
    assert action_layout(SPEC) == ((3,), np.int64)
    cont = EnvSpec(n_agents=2, obs_dim=1, state_dim=1, n_actions=4, episode_limit=1, continuous=True)
    assert action_layout(cont) == ((2, 4), np.float64)


def test_step_block_views_share_one_aligned_buffer():
    block = step_block(2, step_layout(SPEC))
    assert block.buf[0] == BLOCK_TAG and len(block.buf) % 8 == 0
    block.restarts[0] = 5
    block.arrays.reward[:] = [1.5, -2.0]
    block.arrays.obs[1, 2, 4] = 9.0
    block.arrays.episode_length[:] = [3, 4]
    copy = step_block(2, step_layout(SPEC))
    copy.buf[:] = bytes(block.buf)  # what a reply carries
    assert copy.restarts[0] == 5 and copy.arrays.reward.tolist() == [1.5, -2.0]
    assert copy.arrays.obs[1, 2, 4] == 9.0 and copy.arrays.episode_length.tolist() == [3, 4]
    for name, view in zip(StepArrays._fields, block.arrays):
        assert view.ctypes.data % 8 == 0, name  # every field 8-byte aligned
