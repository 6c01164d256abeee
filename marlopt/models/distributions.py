"""Action distributions: masked categorical (available actions) and diagonal Gaussian (Box), and
how a Gaussian's learnable std parameter gives its ``log σ`` (``gaussian_log_std``).

Both are small, allocation-light classes rather than ``torch.distributions`` objects: rollout
inference runs every env step, where the generic classes' argument validation dominates.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

#: Logit given to unavailable actions. Finite (not -inf), so a row whose actions are all masked
#: still gives finite log-probabilities instead of NaN (docs/algorithms/on_policy_machinery.md, "Masks").
MASKED_LOGIT = -1e10

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class UnavailableActionError(RuntimeError):
    """A sampled action is not available: a masking bug that SMAC would reject mid-run."""


class MaskedCategorical:
    """Categorical over ``logits[..., A]`` with unavailable actions given probability 0."""

    def __init__(self, logits: Tensor, avail: Tensor | None):
        self.avail = avail
        if avail is not None:
            logits = logits.masked_fill(~avail, MASKED_LOGIT)
        self.log_probs = torch.log_softmax(logits, dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Gumbel-max sampling: exact, and never picks a masked action while one is available."""
        u = torch.rand(self.log_probs.shape, device=self.log_probs.device, generator=generator)
        gumbel = u.clamp_(1e-20, 1.0 - 1e-7).log_().neg_().log_().neg_()  # -log(-log u), in place
        action = gumbel.add_(self.log_probs).argmax(dim=-1)
        self.check_available(action)
        return action

    def mode(self) -> Tensor:
        action = self.log_probs.argmax(dim=-1)
        self.check_available(action)
        return action

    def check_available(self, action: Tensor) -> None:
        if self.avail is None:
            return
        ok = self.avail.gather(-1, action.unsqueeze(-1))
        if not bool(ok.all()):
            bad = (~ok.squeeze(-1)).nonzero()[0].tolist()
            raise UnavailableActionError(
                f"sampled action {int(action[tuple(bad)])} at index {bad} is not available: every "
                "agent needs at least one available action (a dead agent must have no-op available)"
            )

    def log_prob(self, action: Tensor) -> Tensor:
        return self.log_probs.gather(-1, action.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> Tensor:
        return -(self.log_probs.exp() * self.log_probs).sum(-1)

    def probs(self) -> Tensor:
        return self.log_probs.exp()

    def detach(self) -> "MaskedCategorical":
        out = MaskedCategorical.__new__(MaskedCategorical)
        out.avail, out.log_probs = self.avail, self.log_probs.detach()
        return out

    def kl(self, other: "MaskedCategorical") -> Tensor:
        """``KL(self || other) = Σ_a p(a) (log p(a) - log q(a))`` (masked actions have p = 0)."""
        return (self.log_probs.exp() * (self.log_probs - other.log_probs)).sum(-1)


#: How the learnable std parameter ``p`` of a diagonal Gaussian gives its std (``model.std_param``).
STD_PARAMS = ("log", "harl")


def gaussian_log_std(param: Tensor, std_param: str = "log", x_coef: float = 1.0, y_coef: float = 0.5) -> Tensor:
    """``log σ`` from the learnable std parameter ``param``:

    - ``"log"`` (marlopt's default): ``σ = exp(p)``, so ``log σ = p`` (``param`` itself, untouched);
    - ``"harl"``: HARL's ``DiagGaussian`` (``harl/models/base/distributions.py``:
      ``action_std = sigmoid(log_std / std_x_coef) * std_y_coef``), ``σ = sigmoid(p / x) · y``, a std
      bounded by ``y``; computed as ``log σ = logsigmoid(p / x) + log y`` (the same value and
      gradient, finite for any ``p``).
    """
    if std_param == "log":
        return param
    if std_param == "harl":
        return torch.nn.functional.logsigmoid(param / x_coef) + math.log(y_coef)
    raise ValueError(f"std_param must be one of {STD_PARAMS}, got {std_param!r}")


class DiagGaussian:
    """Diagonal Gaussian over ``mean[..., D]``; ``dims_mask`` marks real action dims.

    ``log π(a) = Σ_d m_d · (-(a_d - μ_d)² / (2σ_d²) - log σ_d - ½ log 2π)`` — the product over
    action dimensions ("action aggregation = prod", HARL paper Table 4;
    docs/algorithms/on_policy_machinery.md), over real dims only.
    """

    def __init__(self, mean: Tensor, log_std: Tensor, dims_mask: Tensor | None):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)
        self.dims_mask = None if dims_mask is None else dims_mask.to(mean.dtype)

    def _reduce(self, x: Tensor) -> Tensor:
        if self.dims_mask is not None:
            x = x * self.dims_mask
        return x.sum(-1)

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        noise = torch.randn(self.mean.shape, device=self.mean.device, generator=generator)
        return self.mean + noise * self.log_std.exp()

    def mode(self) -> Tensor:
        return self.mean

    def log_prob(self, action: Tensor) -> Tensor:
        z = (action - self.mean) * torch.exp(-self.log_std)
        return self._reduce(-0.5 * z * z - self.log_std - _LOG_SQRT_2PI)

    def entropy(self) -> Tensor:
        return self._reduce(self.log_std + 0.5 + _LOG_SQRT_2PI)

    def detach(self) -> "DiagGaussian":
        return DiagGaussian(self.mean.detach(), self.log_std.detach(), self.dims_mask)

    def kl(self, other: "DiagGaussian") -> Tensor:
        """``KL(self || other)`` summed over real dims:
        ``log σ_q/σ_p + (σ_p² + (μ_p - μ_q)²) / (2σ_q²) - ½``."""
        var_p, var_q = torch.exp(2 * self.log_std), torch.exp(2 * other.log_std)
        return self._reduce(other.log_std - self.log_std + (var_p + (self.mean - other.mean) ** 2) / (2 * var_q) - 0.5)
