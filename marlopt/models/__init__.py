"""Networks: grouped layers, actors (shared | separate | hybrid), critics, distributions."""

from marlopt.models.actor import Actor
from marlopt.models.critic import Critic
from marlopt.models.distributions import DiagGaussian, MaskedCategorical, UnavailableActionError

__all__ = ["Actor", "Critic", "DiagGaussian", "MaskedCategorical", "UnavailableActionError"]
