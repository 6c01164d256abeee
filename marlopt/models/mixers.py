"""Mixers: the joint value ``Q_tot`` from the chosen agents' utilities (docs/algorithms/qmix.md).

- :class:`VDNMixer`: ``Q_tot = Σ_i Q_i``.
- :class:`QMixer`: QMIX's monotonic mixing network, whose weights are produced from the state by
  hypernetworks and made non-negative with ``|·|``, so ``∂Q_tot/∂Q_i ≥ 0``::

      hidden = ELU(Q[1, N] @ |W1(s)|[N, E] + b1(s))      W1: Linear(D, H) → ReLU → Linear(H, N·E)
      Q_tot  = hidden @ |W2(s)|[E, 1] + V(s)            W2: Linear(D, H) → ReLU → Linear(H, E)
                                                        b1: Linear(D, E);  V: Linear(D, E) → ReLU → Linear(E, 1)

  with ``E = algo.mixing_embed_dim`` (32) and ``H = algo.hypernet_embed`` (64), PyMARL's QMIX
  with two-layer hypernetworks and PyTorch's default initialisation. The state is the env's
  (flattened over its rows where the env gives one row per agent).

Both take ``qs[..., N]`` and ``state[..., D']`` and return ``Q_tot[...]``.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F


class VDNMixer(nn.Module):
    def forward(self, qs: Tensor, state: Tensor) -> Tensor:
        return qs.sum(-1)


class QMixer(nn.Module):
    def __init__(self, n_agents: int, state_dim: int, embed: int = 32, hypernet_embed: int = 64):
        super().__init__()
        self.n_agents, self.embed = n_agents, embed
        self.hyper_w1 = nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(),
                                      nn.Linear(hypernet_embed, embed * n_agents))
        self.hyper_w2 = nn.Sequential(nn.Linear(state_dim, hypernet_embed), nn.ReLU(), nn.Linear(hypernet_embed, embed))
        self.hyper_b1 = nn.Linear(state_dim, embed)
        self.value = nn.Sequential(nn.Linear(state_dim, embed), nn.ReLU(), nn.Linear(embed, 1))

    def forward(self, qs: Tensor, state: Tensor) -> Tensor:
        lead = qs.shape[:-1]
        s = state.reshape(-1, state.shape[-1])
        q = qs.reshape(-1, self.n_agents, 1)
        w1 = self.hyper_w1(s).abs().view(-1, self.n_agents, self.embed)
        # broadcast-and-sum, not bmm: for these [1, N] @ [N, E] products per sample it is ~3x faster
        # on a CPU, forward and backward (docs/benchmarks.md)
        hidden = F.elu((q * w1).sum(1) + self.hyper_b1(s))  # [B, E]
        out = (hidden * self.hyper_w2(s).abs()).sum(-1) + self.value(s).view(-1)
        return out.view(lead)


def make_mixer(kind: str, n_agents: int, state_dim: int, embed: int, hypernet_embed: int) -> nn.Module:
    """``vdn`` or ``qmix`` (``algo.mixer``)."""
    if kind == "vdn":
        return VDNMixer()
    if kind == "qmix":
        return QMixer(n_agents, state_dim, embed, hypernet_embed)
    raise ValueError(f"unknown mixer {kind!r}; use vdn or qmix")
