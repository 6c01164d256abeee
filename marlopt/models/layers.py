"""Grouped layers: one set of weights per agent group, run as one batched computation.

Every tensor that flows through a model keeps the agent axis just before the features:
``x[..., N, features]``. A grouped layer holds ``G`` weight sets, with ``G = 1`` (all agents share
the weights) or ``G = N`` (agent ``i`` uses set ``i``). With ``G = N`` the weights are stacked and
applied with one batched matmul, never a Python loop over agents. Each group's weights are their
own ``nn.Parameter`` so that per-agent optimisers (HAPPO) and per-agent gradients (GRASP heads)
can address one agent's parameters directly (:meth:`group_parameters`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from marlopt.models.fast_gru import gru_sequence
from marlopt.optim import speed_kit_enabled, tanh_


class GroupedModule(nn.Module):
    """A module whose parameters are split into ``groups`` equal per-agent sets.

    ``forward(x, ..., group=i)`` applies group ``i``'s weights to an input holding that single
    agent (``x[..., 1, F]``): sequential updates (HAPPO) then evaluate one agent at the cost of one
    agent, not of all N. ``group`` is ignored by a shared layer (``groups == 1``).
    """

    groups: int

    def _one(self, params: nn.ParameterList, x: Tensor, group: int) -> Tensor:
        """Group ``group``'s weights for ``x[..., 1, F]``, the input of that agent alone."""
        if x.shape[-2] != 1:
            raise ValueError(f"group={group} needs one agent's input x[..., 1, F], got x of shape {tuple(x.shape)}")
        return params[group]  # type: ignore[return-value]

    def group_parameters(self, group: int) -> list[nn.Parameter]:
        """The parameters that belong to agent group ``group`` (for per-agent optimisers)."""
        if self.groups == 1:
            return list(self.parameters())
        return [p for name, p in self.named_parameters() if name.split(".")[-1] == str(group)]


def _grouped(tensors: list[Tensor]) -> nn.Parameter | nn.ParameterList:
    """One plain parameter when shared (fast attribute access in rollouts), else one per group."""
    if len(tensors) == 1:
        return nn.Parameter(tensors[0])
    return nn.ParameterList([nn.Parameter(t) for t in tensors])


def _stack(params: nn.ParameterList) -> Tensor:
    return params[0].unsqueeze(0) if len(params) == 1 else torch.stack(tuple(params))


class GroupedLinear(GroupedModule):
    """``y[..., n, :] = x[..., n, :] @ W[g(n)]ᵀ + b[g(n)]`` with orthogonal init of gain ``gain``.

    Each weight is stored ``[out, in]`` (``nn.Linear``'s layout). On CPU this matters: MKL's
    ``x @ W`` with ``W[in, out]`` is several times slower for narrow outputs (policy and value
    heads; measured in docs/benchmarks.md).
    """

    def __init__(self, groups: int, in_features: int, out_features: int, gain: float = math.sqrt(2)):
        super().__init__()
        self.groups, self.in_features, self.out_features = groups, in_features, out_features
        weights = []
        for _ in range(groups):
            w = torch.empty(out_features, in_features)
            nn.init.orthogonal_(w, gain=gain)
            weights.append(w)
        self.weight = _grouped(weights)
        self.bias = _grouped([torch.zeros(out_features) for _ in range(groups)])

    def forward(self, x: Tensor, group: int | None = None) -> Tensor:
        """``group``: ``x[..., 1, in]`` is agent ``group``'s input alone (its weights only)."""
        if self.groups == 1:  # the rollout's path: as few Python steps as possible
            return F.linear(x, self.weight, self.bias)  # type: ignore[arg-type]
        if group is not None:
            return F.linear(x, self._one(self.weight, x, group), self.bias[group])  # type: ignore[index]
        n = x.shape[-2]
        lead = x.shape[:-2]
        xs = x.reshape(-1, n, self.in_features).transpose(0, 1)  # [N, B, in]
        y = torch.baddbmm(_stack(self.bias).unsqueeze(1), xs, _stack(self.weight).transpose(1, 2))  # [N, B, out]
        return y.transpose(0, 1).reshape(*lead, n, self.out_features)


class GroupedLayerNorm(GroupedModule):
    """LayerNorm over the features with per-group affine parameters."""

    def __init__(self, groups: int, features: int, eps: float = 1e-5):
        super().__init__()
        self.groups, self.features, self.eps = groups, features, eps
        self.weight = _grouped([torch.ones(features) for _ in range(groups)])
        self.bias = _grouped([torch.zeros(features) for _ in range(groups)])

    def forward(self, x: Tensor, group: int | None = None) -> Tensor:
        """``group``: ``x[..., 1, F]`` is agent ``group``'s input alone (its weights only)."""
        if self.groups == 1:
            return F.layer_norm(x, (self.features,), self.weight, self.bias, self.eps)  # type: ignore[arg-type]
        if group is not None:
            weight, bias = self._one(self.weight, x, group), self.bias[group]  # type: ignore[index]
            return F.layer_norm(x, (self.features,), weight, bias, self.eps)
        return F.layer_norm(x, (self.features,), None, None, self.eps) * _stack(self.weight) + _stack(self.bias)


class GroupedGRUCell(GroupedModule):
    """GRU cell (PyTorch's gate equations) with per-group weights.

    ``r = σ(x W_ir + h W_hr + b_r)``, ``z = σ(x W_iz + h W_hz + b_z)``,
    ``n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))``, ``h' = (1 - z) ⊙ n + z ⊙ h``.

    Over a sequence (``L > 1``) the speed kit runs the recurrence as one fused autograd node with a
    hand-written backward (:mod:`marlopt.models.fast_gru`); ``speed_kit=false`` and single steps
    (rollouts) run the cell loop below.
    """

    def __init__(self, groups: int, in_features: int, hidden: int):
        super().__init__()
        self.groups, self.hidden = groups, hidden
        self.input_map = GroupedLinear(groups, in_features, 3 * hidden, gain=1.0)
        self.hidden_map = GroupedLinear(groups, hidden, 3 * hidden, gain=1.0)

    def step(self, gates_x: Tensor, h: Tensor, group: int | None = None) -> Tensor:
        """One step given the precomputed input gates ``x W_i + b_i``."""
        gates_h = self.hidden_map.forward(h, group)
        xr, xz, xn = gates_x.chunk(3, dim=-1)
        hr, hz, hn = gates_h.chunk(3, dim=-1)
        r = torch.sigmoid(xr + hr)
        z = torch.sigmoid(xz + hz)
        n = tanh_(xn + r * hn)
        return n + z * (h - n)

    def forward(
        self, x: Tensor, h: Tensor, starts: Tensor | None = None, group: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Run over a sequence.

        x: ``[L, B, N, in]``; h: ``[B, N, H]`` (state before step 0); starts: ``[L, B, N]`` or
        ``[L, B, 1]``, 1 where an episode starts at that step (the hidden state is zeroed *before*
        the step, so a chunk never carries memory across an episode boundary); group: ``N = 1``
        and the input is agent ``group``'s alone (its weights only).
        Returns outputs ``[L, B, N, H]`` and the final hidden state.
        """
        gates_x = self.input_map.forward(x, group)
        if x.shape[0] > 1 and speed_kit_enabled():
            return self._fused(gates_x, h, starts, group)
        outs = []
        # unbind, not gates_x[t]: each indexing's backward fills a zero tensor of the whole
        # sequence (quadratic in its length); unbind's backward is one stack (same gradients)
        resets = [None] * x.shape[0] if starts is None else starts.unbind(0)
        for gates_t, reset in zip(gates_x.unbind(0), resets):
            if reset is not None:
                h = h * (1.0 - reset.unsqueeze(-1))
            h = self.step(gates_t, h, group)
            outs.append(h)
        return torch.stack(outs), h

    def _fused(self, gates_x: Tensor, h: Tensor, starts: Tensor | None, group: int | None) -> tuple[Tensor, Tensor]:
        """The speed kit's sequence: ``forward``'s result through one fused autograd node
        (:mod:`marlopt.models.fast_gru`; equal to the loop within float rounding, measured faster
        for sequences longer than one step in scripts/bench_gru.py). Rollouts (``L = 1``) keep the loop."""
        steps, batch, n = gates_x.shape[:3]
        keep = None if starts is None else (1.0 - starts).to(gates_x.dtype).expand(steps, batch, n).unsqueeze(-1)
        weight, bias = self.hidden_map.weight, self.hidden_map.bias
        if self.groups == 1 or group is not None:  # one weight set: all B·N rows in one group
            if group is not None and self.groups > 1:
                weight, bias = self.hidden_map._one(weight, h, group), bias[group]  # type: ignore[index,arg-type]
            gx = gates_x.reshape(steps, 1, batch * n, -1)
            out, last = gru_sequence(gx, h.reshape(1, batch * n, -1), weight.unsqueeze(0),  # type: ignore[union-attr]
                                     bias.unsqueeze(0), None if keep is None else keep.reshape(steps, 1, batch * n, 1))  # type: ignore[union-attr]
            return out.view(steps, batch, n, -1), last.view(batch, n, -1)
        # one group per agent: the agent axis becomes the batch axis of baddbmm
        gx = gates_x.transpose(1, 2).contiguous()  # [L, N, B, 3H]
        out, last = gru_sequence(gx, h.transpose(0, 1).contiguous(), _stack(weight), _stack(bias),  # type: ignore[arg-type]
                                 None if keep is None else keep.transpose(1, 2).contiguous())
        return out.transpose(1, 2), last.transpose(0, 1)


#: Activations applied *in place* to a layer's fresh output (``Trunk``).
ACTIVATIONS = {"relu": torch.relu_, "tanh": tanh_}
