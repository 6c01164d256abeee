"""Pure tensor objectives of marlopt (ARCHITECTURE.md "Public objective API").

Every loss takes per-sample tensors of one shape (any leading dims, e.g. ``[T, E, N]``) and an
optional ``mask`` (1 = counts; the mean is over counted elements) and returns a scalar to minimise.
No modules, optimisers or config; importing this package touches no simulator.
"""

from __future__ import annotations

from marlopt.objectives._masked import MAX_LOG_RATIO, masked_mean, masked_mean_std, ratio
from marlopt.objectives.happo import a2c_loss, happo_loss
from marlopt.objectives.mars import (
    additive_targets,
    mars_loss,
    mars_penalty,
    mars_weight,
    multiplicative_targets,
)
from marlopt.objectives.ppo import ppo_clip_loss, ratio_diagnostics
from marlopt.objectives.spo import spo_loss
from marlopt.objectives.value import huber, value_loss
from marlopt.returns import ValueNorm, gae

# --- added by the lead (keep this block and extend __all__ below) -------------------------------
# from marlopt.objectives.trpo import ...
# from marlopt.objectives.grasp import consensus_direction, min_norm_coefficients
# ----------------------------------------------------------------------------------------------

__all__ = [
    # helpers
    "MAX_LOG_RATIO",
    "masked_mean",
    "masked_mean_std",
    "ratio",
    # MAPPO (+ asymmetric ablation) and diagnostics
    "ppo_clip_loss",
    "ratio_diagnostics",
    # MASPO (+ asymmetric ablation)
    "spo_loss",
    # MARS
    "mars_loss",
    "mars_penalty",
    "mars_weight",
    "additive_targets",
    "multiplicative_targets",
    # HAPPO / HAA2C
    "happo_loss",
    "a2c_loss",
    # critic
    "value_loss",
    "huber",
    # returns (defined in marlopt.returns)
    "gae",
    "ValueNorm",
    # grasp / trpo names: added by the lead
]
