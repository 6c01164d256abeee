"""Grouped layers' explicit ``group`` argument: one agent's input through that agent's weights equals
that agent's column of the batched computation over all agents. (The fast tanh these layers use
lives in marlopt.optim: tests/test_optim.py.)"""

from __future__ import annotations

import pytest
import torch

from marlopt.models.layers import GroupedGRUCell, GroupedLayerNorm, GroupedLinear


@pytest.mark.parametrize("make", [lambda: GroupedLinear(3, 5, 4), lambda: GroupedLayerNorm(3, 5)],
                         ids=["linear", "layer_norm"])
def test_group_argument_runs_one_agents_weights(make):
    torch.manual_seed(0)
    layer = make()
    with torch.no_grad():  # LayerNorm's affine parameters start at 1 and 0: make the groups differ
        for p in layer.parameters():
            p.add_(torch.randn(p.shape))
    x = torch.randn(2, 6, 3, 5)
    full = layer(x)
    for i in range(3):
        one = layer.forward(x[..., i : i + 1, :], group=i)
        assert one.shape == (2, 6, 1, full.shape[-1])
        torch.testing.assert_close(one[..., 0, :], full[..., i, :])
    with pytest.raises(ValueError, match="one agent's input"):
        layer.forward(x, group=1)  # all agents' inputs with one agent's weights: a caller's bug


def test_group_argument_is_ignored_by_a_shared_layer():
    torch.manual_seed(0)
    shared = GroupedLinear(1, 5, 4)
    x = torch.randn(2, 6, 3, 5)
    assert torch.equal(shared.forward(x, group=2), shared.forward(x))


def test_grouped_gru_group_argument_runs_one_agents_weights():
    torch.manual_seed(0)
    cell = GroupedGRUCell(3, 5, 8)
    x, h = torch.randn(4, 2, 3, 5), torch.randn(2, 3, 8)
    starts = torch.zeros(4, 2, 1)
    starts[2, 1] = 1.0
    out, last = cell(x, h, starts)
    for i in range(3):
        one, one_last = cell(x[..., i : i + 1, :], h[:, i : i + 1], starts, group=i)
        torch.testing.assert_close(one[..., 0, :], out[..., i, :])
        torch.testing.assert_close(one_last[:, 0], last[:, i])
