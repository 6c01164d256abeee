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
        width = in_features
        for size in cfg.hidden_sizes:
            self.linears.append(GroupedLinear(groups, width, size))
            if cfg.layer_norm:
                self.norms.append(GroupedLayerNorm(groups, size))
            width = size
        # (linear, norm or None) per hidden layer, a plain list: indexing ModuleLists per call costs
        # more than these layers' arithmetic in a rollout step (the modules stay registered above)
        self._layers = [(lin, self.norms[k] if cfg.layer_norm else None) for k, lin in enumerate(self.linears)]
        self.act = ACTIVATIONS[cfg.activation]
        self.recurrent = cfg.recurrent
        self.hidden_size = cfg.rnn_hidden if cfg.recurrent else 0
        self._post_layers: list[tuple[GroupedLinear, GroupedLayerNorm | None]] = []
        if cfg.recurrent:
            self.gru = GroupedGRUCell(groups, width, cfg.rnn_hidden)
            self.gru_norm = GroupedLayerNorm(groups, cfg.rnn_hidden) if cfg.rnn_layer_norm else None
            width = cfg.rnn_hidden
            self.post_linears = nn.ModuleList()
            self.post_norms = nn.ModuleList()
            for size in cfg.post_rnn_sizes:
                linear = GroupedLinear(groups, width, size)
                norm = GroupedLayerNorm(groups, size) if cfg.layer_norm else None
                self.post_linears.append(linear)
                if norm is not None:
                    self.post_norms.append(norm)
                self._post_layers.append((linear, norm))
                width = size
        self.out_features = width

    def hidden_layers(self, x: Tensor, group: int | None = None, preactivated: bool = False) -> Tensor:
        """The MLP: ``activation(W x + b)`` then LayerNorm, per hidden layer (no input norm, no GRU).
        ``preactivated``: ``x`` already is the first layer's ``W x + b`` (MAGPO's guider computes it
        by input blocks)."""
        act = self.act
        for k, (linear, norm) in enumerate(self._layers):
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
        for linear, norm in self._post_layers:
            out = self.act(linear.forward(out, group))
            if norm is not None:
                out = norm.forward(out, group)
        return out, h
