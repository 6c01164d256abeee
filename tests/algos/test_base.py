"""Shared update machinery: minibatching against the plain way of doing it. (Adam and gradient
clipping, which live in marlopt.optim, are tested in tests/test_optim.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from marlopt.algos.base import Chunks, OnPolicyRule


def _chunks(length: int, sequences: int) -> Chunks:
    g = torch.Generator().manual_seed(1)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(length, sequences, *shape, generator=g)

    return Chunks(obs=r(3, 4), state=r(1, 6), avail=r(3, 2) > 0, actions=r(3), logp=r(3), values=r(1),
                  active=r(3) > 0, critic_active=r(1) > 0, starts=r(1), advantages=r(3), returns=r(1),
                  h_actor=torch.randn(sequences, 3, 8, generator=g), h_critic=None)


def test_minibatches_are_the_gathered_chunks_of_one_permutation():
    """Slices of the once-shuffled data = gathering each ``perm.chunk(k)`` separately (the plain way)."""
    rule = OnPolicyRule.__new__(OnPolicyRule)  # only the config is needed for minibatching
    rule.cfg = SimpleNamespace(num_minibatches=4)
    chunks = _chunks(length=5, sequences=22)  # 22 sequences -> minibatches of 6, 6, 6, 4
    torch.manual_seed(3)
    got = list(rule.minibatches(chunks))
    torch.manual_seed(3)
    expected = [chunks.select(i) for i in torch.randperm(22).chunk(4)]
    assert [mb.num_sequences for mb in got] == [6, 6, 6, 4]
    for mb, ref in zip(got, expected):
        for name in ("obs", "state", "avail", "actions", "advantages", "h_actor"):
            assert torch.equal(getattr(mb, name), getattr(ref, name)), name
        assert mb.h_critic is None
