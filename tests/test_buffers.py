"""The rollout buffer: step writes land in step t only, from tensors or arrays, without graphs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlopt.buffers import RolloutBuffer
from marlopt.envs.base import EnvSpec

SPEC = EnvSpec(n_agents=2, obs_dim=3, state_dim=4, n_actions=5, episode_limit=10)


def make_buffer() -> RolloutBuffer:
    return RolloutBuffer(SPEC, n_envs=3, length=4, actor_hidden=6, device="cpu")


def test_insert_writes_step_t_only_from_tensors_and_arrays():
    buf = make_buffer()
    obs = torch.randn(3, 2, 3)
    reward = np.array([1.5, -2.0, 0.25], dtype=np.float32)[:, None]
    avail = np.ones((3, 2, 5), dtype=bool)
    avail[1, 0, 3] = False
    buf.insert(2, obs=obs, rewards=reward, avail=avail, actions=np.array([[0, 4], [1, 2], [3, 3]]))
    b = buf.batch
    assert torch.equal(b.obs[2], obs) and not b.obs[[0, 1, 3]].any()
    assert torch.equal(b.rewards[2], torch.from_numpy(reward)) and not b.rewards[[0, 1, 3]].any()
    assert torch.equal(b.avail[2], torch.from_numpy(avail)) and not b.avail[3].any()
    assert b.actions.dtype == torch.long and b.actions[2].tolist() == [[0, 4], [1, 2], [3, 3]]
    obs[0, 0, 0] = 99.0  # the buffer holds a copy
    assert b.obs[2, 0, 0, 0] != 99.0


def test_insert_casts_like_copy_and_stores_no_graph():
    buf = make_buffer()
    w = torch.ones(1, requires_grad=True)
    logp = torch.randn(3, 2) * w  # carries a graph
    buf.insert(0, logp=logp, rewards=np.full((3, 1), 0.1, dtype=np.float64))
    b = buf.batch
    assert not b.logp.requires_grad and b.logp.grad_fn is None
    torch.testing.assert_close(b.logp[0], logp.detach(), rtol=0, atol=0)
    assert b.rewards.dtype == torch.float32 and torch.equal(b.rewards[0], torch.full((3, 1), 0.1))


def test_value_fields_are_left_to_the_update_rule():
    b = make_buffer().batch
    assert b.values is None and b.bootstrap_values is None and b.h_critic is None
    assert b.to("cpu").values is None


def test_insert_rejects_a_wrong_shape():
    with pytest.raises((ValueError, RuntimeError)):
        make_buffer().insert(0, obs=np.zeros((3, 2, 7), dtype=np.float32))
