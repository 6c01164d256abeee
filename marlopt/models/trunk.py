"""The feature trunk shared by actors and critics: input LayerNorm → MLP → optional GRU → optional MLP."""

from __future__ import annotations

from torch import Tensor, nn

from marlopt.config import ModelConfig
from marlopt.models.layers import ACTIVATIONS, GroupedGRUCell, GroupedLayerNorm, GroupedLinear


class Trunk(nn.Module):
    """``x[L, B, N, in] -> features[L, B, N, out]`` with ``groups`` weight sets (1 or N).

    MAPPO's feature extractor: optional LayerNorm of the raw inputs ("feature normalisation"),
    ``Linear → activation → LayerNorm`` per hidden layer (orthogonal init, gain √2), then a GRU
    whose hidden state is zeroed at episode starts, followed by a LayerNorm (``model.rnn_layer_norm``)
    and, where ``model.post_rnn_sizes`` names any, more ``Linear → activation → LayerNorm`` layers
    (JaxMARL's MAPPO: one Dense(128) + relu after its GRU).
    """

    def __init__(self, groups: int, in_features: int, cfg: ModelConfig):
        super().__init__()
        self.groups = groups
        self.input_norm = GroupedLayerNorm(groups, in_features) if cfg.feature_norm else None
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        # (linear, norm or None) per hidden layer, a plain list: indexing ModuleLists per call costs
        # more than these layers' arithmetic in a rollout step (the modules stay registered in the lists)
        self._layers, width = _mlp_layers(groups, in_features, cfg.hidden_sizes, cfg.layer_norm,
                                          self.linears, self.norms)
        self.act = ACTIVATIONS[cfg.activation]
        self.recurrent = cfg.recurrent
        self.hidden_size = cfg.rnn_hidden if cfg.recurrent else 0
        self._post_layers: list[tuple[GroupedLinear, GroupedLayerNorm | None]] = []
        if cfg.recurrent:
            self.gru = GroupedGRUCell(groups, width, cfg.rnn_hidden)
            self.gru_norm = GroupedLayerNorm(groups, cfg.rnn_hidden) if cfg.rnn_layer_norm else None
            self.post_linears = nn.ModuleList()
            self.post_norms = nn.ModuleList()
            self._post_layers, width = _mlp_layers(groups, cfg.rnn_hidden, cfg.post_rnn_sizes, cfg.layer_norm,
                                                   self.post_linears, self.post_norms)
        self.out_features = width

    def hidden_layers(self, x: Tensor, group: int | None = None, preactivated: bool = False) -> Tensor:
        """The MLP: ``activation(W x + b)`` then LayerNorm, per hidden layer (no input norm, no GRU).
        ``preactivated``: ``x`` already is the first layer's ``W x + b`` (MAGPO's guider computes it
        by input blocks)."""
        return self._run(self._layers, x, group, preactivated)

    def _run(self, layers: list, x: Tensor, group: int | None, preactivated: bool = False) -> Tensor:
        """``activation(W x + b)`` then LayerNorm, per (linear, norm or None) pair of ``layers``."""
        act = self.act
        for k, (linear, norm) in enumerate(layers):
            x = act(x if preactivated and k == 0 else linear.forward(x, group))  # in place on a fresh output
            if norm is not None:
                x = norm.forward(x, group)
        return x

    def forward(
        self,
        x: Tensor,
        h: Tensor | None,
        starts: Tensor | None,
        hidden_sequence: list[Tensor] | None = None,
        group: int | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """``hidden_sequence`` (a list to fill): receives the GRU state after every step ``[L, B, N, H]``.

        ``group``: ``x[..., 1, in]`` holds agent ``group`` alone; per-agent layers apply only that
        agent's weights (sequential updates). Shared layers (``groups == 1``) ignore it.
        """
        # layers' forward() called directly: rollouts run this every env step, and the generic
        # nn.Module call machinery costs more than the arithmetic of these small layers
        lead = x.shape[:-1]
        if self.groups == 1:
            # one weight set: run the MLP on 2-d rows, so each layer's output is a plain tensor
            # and the in-place activation stays cheap in backward (in place on a view is not)
            x = x.reshape(-1, x.shape[-1])
        if self.input_norm is not None:
            x = self.input_norm.forward(x, group)
        x = self.hidden_layers(x, group)
        x = x.reshape(*lead, x.shape[-1])
        if not self.recurrent:
            return x, h
        assert h is not None, "a recurrent trunk needs its hidden state"
        out, h = self.gru(x, h, starts, group)
        if hidden_sequence is not None:
            hidden_sequence.append(out)  # the GRU's outputs are its states
        if self.gru_norm is not None:
            out = self.gru_norm(out, group)
        return self._run(self._post_layers, out, group), h


def _mlp_layers(
    groups: int, width: int, sizes: list[int], layer_norm: bool, linears: nn.ModuleList, norms: nn.ModuleList
) -> tuple[list[tuple[GroupedLinear, GroupedLayerNorm | None]], int]:
    """``Linear`` (orthogonal, gain √2) and, with ``layer_norm``, ``LayerNorm`` modules for ``sizes``,
    registered in ``linears`` / ``norms``; returns the (linear, norm or None) pairs and the output width."""
    layers = []
    for size in sizes:
        linear = GroupedLinear(groups, width, size)
        norm = GroupedLayerNorm(groups, size) if layer_norm else None
        linears.append(linear)
        if norm is not None:
            norms.append(norm)
        layers.append((linear, norm))
        width = size
    return layers, width
