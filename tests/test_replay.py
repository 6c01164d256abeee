"""Episode replay: padding, masks, uniform distinct sampling, the ring, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from marlopt.envs.base import EnvSpec
from marlopt.replay import EpisodeBuffer, episode_bytes

SPEC = EnvSpec(n_agents=2, obs_dim=3, state_dim=4, n_actions=5, episode_limit=6)


def episode(length: int, tag: float, terminated: bool = True) -> dict[str, np.ndarray]:
    """An episode whose every entry carries ``tag`` (and its step), padded with junk (99)."""
    t = SPEC.episode_limit
    steps = np.arange(t + 1, dtype=np.float32)
    ep = {
        "obs": np.full((t + 1, 2, 3), 99.0, np.float32), "state": np.full((t + 1, 1, 4), 99.0, np.float32),
        "avail": np.ones((t + 1, 2, 5), bool), "actions": np.full((t, 2), 4), "reward": np.full(t, 99.0, np.float32),
        "terminated": np.ones(t, bool),
    }
    ep["obs"][: length + 1] = tag + steps[: length + 1, None, None]
    ep["state"][: length + 1] = tag + steps[: length + 1, None, None]
    ep["actions"][:length] = np.arange(length)[:, None] % 5
    ep["reward"][:length] = tag
    ep["terminated"][:length] = False
    ep["terminated"][length - 1] = terminated
    return ep


def test_insert_pads_with_zeros_and_sets_the_masks():
    buf = EpisodeBuffer(SPEC, 4)
    buf.insert(episode(3, 10.0, terminated=False), 3)  # a time-limit cut: nothing terminated
    d = buf.data
    assert d["filled"][0].tolist() == [True, True, True, False, False, False]
    assert not d["terminated"][0].any()
    assert torch.equal(d["obs"][0, :4, 0, 0], torch.tensor([10.0, 11.0, 12.0, 13.0]))  # the final inputs at len
    assert (d["obs"][0, 4:] == 0).all() and (d["reward"][0, 3:] == 0).all() and (d["actions"][0, 3:] == 0).all()
    assert not d["avail"][0, 4:].any()
    buf.insert(episode(2, 20.0), 2)
    assert d["terminated"][1].tolist() == [False, True, False, False, False, False]


def test_sample_is_uniform_distinct_and_cut_to_the_longest_episode():
    buf = EpisodeBuffer(SPEC, 8)
    for k in range(8):
        buf.insert(episode(1 + k % 3, float(k)), 1 + k % 3)
    torch.manual_seed(0)
    counts = np.zeros(8)
    for _ in range(2000):
        batch = buf.sample(3)
        tags = batch.reward[:, 0].long().tolist()
        assert len(set(tags)) == 3  # distinct episodes
        counts[tags] += 1
        assert batch.reward.shape[1] == batch.filled.sum(1).max() and batch.obs.shape[1] == batch.reward.shape[1] + 1
        assert batch.actions.dtype == torch.int64
    assert counts.min() > 0.85 * 750 and counts.max() < 1.15 * 750  # 2000 * 3 / 8 each


def test_ring_overwrites_the_oldest_and_state_dict_round_trips():
    buf = EpisodeBuffer(SPEC, 3)
    for k in range(5):
        buf.insert(episode(2, float(k)), 2)
    assert buf.size == 3 and buf.inserted == 5 and sorted(buf.data["reward"][:, 0].tolist()) == [2.0, 3.0, 4.0]
    other = EpisodeBuffer(SPEC, 3)
    other.load_state_dict(buf.state_dict())
    for key in buf.data:
        assert torch.equal(buf.data[key], other.data[key])
    assert (other.size, other.next, other.inserted) == (3, buf.next, 5)
    other.insert(episode(1, 7.0), 1)  # continues the ring where it was
    assert other.data["reward"][buf.next, 0] == 7.0


def test_bad_lengths_and_continuous_actions_are_refused():
    buf = EpisodeBuffer(SPEC, 2)
    with pytest.raises(ValueError, match="outside 1..episode_limit"):
        buf.insert(episode(6, 0.0), 7)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        buf.sample(1)
    with pytest.raises(ValueError, match="continuous"):
        EpisodeBuffer(EnvSpec(2, 3, 4, 2, 6, continuous=True), 2)


def test_memory_per_episode_is_the_sum_of_its_fields():
    t, n = SPEC.episode_limit, SPEC.n_agents
    expected = (t + 1) * (n * 3 * 4 + 4 * 4 + n * 5) + t * (n * 2 + 4 + 1 + 1)
    assert episode_bytes(SPEC) == expected
    assert EpisodeBuffer(SPEC, 10).nbytes() == 10 * expected
