"""Pure tensor objectives of marlopt (ARCHITECTURE.md "Public objective API").

Every loss takes per-sample tensors of one shape (any leading dims, e.g. ``[T, E, N]``) and an
optional ``mask`` (1 = counts; the mean is over counted elements) and returns a scalar to minimise.
No modules, optimisers or config; importing this package touches no simulator.
"""

from __future__ import annotations

from marlopt.objectives._masked import MAX_LOG_RATIO, masked_mean, masked_mean_std, ratio
from marlopt.objectives.gpvd import gpvd_weights, simhash
from marlopt.objectives.happo import a2c_loss, happo_loss
from marlopt.objectives.magpo import magpo_band_stats, magpo_guider_loss, magpo_learner_loss
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
from marlopt.returns import ValueNorm, gae, td_lambda_targets

from marlopt.objectives.grasp import (
    consensus_direction,
    grasp_qmix_directions,
    grasp_qmix_scales,
    kkt_residual,
    min_norm_coefficients,
    min_norm_coefficients_cvxpy,
    min_norm_coefficients_from_gram,
)
from marlopt.objectives.trpo import (
    conjugate_gradient,
    fisher_vector_product,
    flat_grad,
    flat_params,
    make_fisher_vector_product,
    trpo_step_size,
)

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
    # MAGPO (CTDS: delta=inf, rl_coef=0)
    "magpo_guider_loss",
    "magpo_learner_loss",
    "magpo_band_stats",
    # critic
    "value_loss",
    "huber",
    # returns (defined in marlopt.returns)
    "gae",
    "ValueNorm",
    "td_lambda_targets",
    # GRASP (min-norm consensus; GRASP-QMIX scaling)
    "min_norm_coefficients",
    "min_norm_coefficients_from_gram",
    "min_norm_coefficients_cvxpy",
    "consensus_direction",
    "kkt_residual",
    "grasp_qmix_scales",
    "grasp_qmix_directions",
    # GPVD (SimHash grouping, gradient-protection weights of the TD loss)
    "simhash",
    "gpvd_weights",
    # HATRPO's pure pieces (the line search, which writes parameters: marlopt.algos.trust_region)
    "flat_grad",
    "flat_params",
    "conjugate_gradient",
    "make_fisher_vector_product",
    "fisher_vector_product",
    "trpo_step_size",
]
