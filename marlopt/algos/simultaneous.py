"""Simultaneous update (MAPPO and the ratio-objective family): all agents step together.

Per minibatch: one actor step on ``objective(logp, logp_old, A) - c_ent · H`` over active samples,
then one critic step. Which objective is used is the algorithm config's ``objective`` key, looked
up in :data:`ACTOR_OBJECTIVES`; a new ratio objective plugs in by adding one entry there and one
YAML, without touching the runner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from marlopt.algos.base import Chunks, MetricMeans, OnPolicyRule, clip_and_step
from marlopt.objectives import (
    additive_targets,
    mars_loss,
    multiplicative_targets,
    ppo_clip_loss,
    ratio_diagnostics,
    spo_loss,
)
from marlopt.objectives.ppo import diagnostic_log_ratio, log_ratio_extremes

#: ``loss_fn(logp, logp_old, adv, mask) -> scalar`` (``mask=None``: every sample counts) and the
#: nominal ratio region ``(low, high)``.
ObjectiveFn = Callable[[Tensor, Tensor, Tensor, Tensor | None], Tensor]


def clip_objective(cfg: Any) -> tuple[ObjectiveFn, tuple[float, float]]:
    """MAPPO's clipped surrogate, optionally asymmetric ``[1 - clip_low, 1 + clip_high]``."""
    low = cfg.clip if cfg.clip_low is None else cfg.clip_low
    high = cfg.clip if cfg.clip_high is None else cfg.clip_high

    def loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor | None) -> Tensor:
        return ppo_clip_loss(logp, logp_old, adv, clip=cfg.clip, mask=mask, clip_low=low, clip_high=high)

    return loss, (1.0 - low, 1.0 + high)


def spo_objective(cfg: Any) -> tuple[ObjectiveFn, tuple[float, float]]:
    """MASPO (optimum at ``1 ± eps``) or its asymmetric ablation (optimum at ``rho±``)."""

    def loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor | None) -> Tensor:
        return spo_loss(logp, logp_old, adv, eps=cfg.eps, mask=mask, rho_plus=cfg.rho_plus, rho_minus=cfg.rho_minus)

    if cfg.rho_plus is not None:
        return loss, (cfg.rho_minus, cfg.rho_plus)
    return loss, (1.0 - cfg.eps, 1.0 + cfg.eps)


def mars_targets(cfg: Any) -> tuple[float, float]:
    """``(ρ+, ρ-)`` for the three MARS target parameterisations (EQUATIONS.md, MARS)."""
    if cfg.targets == "additive":
        return additive_targets(cfg.eps)
    if cfg.targets == "multiplicative" or cfg.rho_minus is None:
        return multiplicative_targets(cfg.rho_plus)
    return cfg.rho_plus, cfg.rho_minus


def mars_objective(cfg: Any) -> tuple[ObjectiveFn, tuple[float, float]]:
    rho_plus, rho_minus = mars_targets(cfg)

    def loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor | None) -> Tensor:
        return mars_loss(logp, logp_old, adv, rho_plus=rho_plus, rho_minus=rho_minus, mask=mask)

    return loss, (rho_minus, rho_plus)


ACTOR_OBJECTIVES: dict[str, Callable[[Any], tuple[ObjectiveFn, tuple[float, float]]]] = {
    "clip": clip_objective,
    "spo": spo_objective,
    "mars": mars_objective,
}


class RatioDiagnostics:
    """Max/min per-sample ratio over an update, and the last minibatch's outside-fraction and KL.

    Each minibatch adds its extreme log-ratios as a tensor (no host sync per minibatch); the
    full :func:`ratio_diagnostics` runs once, on the last minibatch, in :meth:`metrics`. Samples
    outside the mask are ignored; a minibatch with none counted adds nothing.
    """

    def __init__(self, region: tuple[float, float]):
        self.low, self.high = region
        self.extremes: list[Tensor] = []  # per minibatch: [max log r, min log r] over counted samples
        self.last: tuple[Tensor, Tensor, Tensor | None] | None = None

    def observe(self, logp: Tensor, logp_old: Tensor, mask: Tensor | None) -> None:
        logp = logp.detach()
        lr = diagnostic_log_ratio(logp, logp_old)
        if mask is None:
            self.extremes.append(torch.stack([lr.max(), lr.min()]))
        else:
            self.extremes.append(log_ratio_extremes(lr, (mask != 0).expand_as(lr)))
        self.last = (logp, logp_old, mask)

    def metrics(self) -> dict[str, float]:
        last = {} if self.last is None else ratio_diagnostics(*self.last, low=self.low, high=self.high)
        r_max, r_min = 1.0, 1.0
        if self.extremes:
            extremes = torch.stack(self.extremes)
            top, bottom = extremes[:, 0].max(), extremes[:, 1].min()
            if torch.isfinite(top):  # some sample was counted
                r_max, r_min = top.exp().item(), bottom.exp().item()
        return {
            "ratio/max": r_max,
            "ratio/min": r_min,
            "ratio/frac_outside": last.get("ratio_frac_outside", 0.0),
            "ratio/approx_kl": last.get("approx_kl", 0.0),
        }


class SimultaneousRule(OnPolicyRule):
    """MAPPO-style update: every agent's policy and the critic step on each minibatch."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        objective = self.cfg.objective  # type: ignore[attr-defined]
        if objective not in ACTOR_OBJECTIVES:
            raise ValueError(f"algo.objective: unknown {objective!r}; choose from {', '.join(ACTOR_OBJECTIVES)}")
        self.objective, self.region = ACTOR_OBJECTIVES[objective](self.cfg)

    def actor_regulariser(self) -> Tensor | float:
        """An extra term of the actor loss (GRASP's ``-κ <θ, u*>``); none here."""
        return 0.0

    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        diag = RatioDiagnostics(self.region)
        means = MetricMeans()
        params = list(self.actor.parameters())
        for _ in range(self.cfg.ppo_epochs):
            for mb in self.minibatches(chunks):
                logp, entropy = self.evaluate_actions(mb)
                mask = mb.active_mask
                policy_loss = self.objective(logp, mb.logp, mb.advantages, mask)
                # terms that are zero stay out of the autograd graph (BenchMARL's MAPPO: no entropy bonus)
                loss = policy_loss
                if self.cfg.entropy_coef:
                    entropy_mean = self.entropy_term(entropy, mask)
                    loss = loss - self.cfg.entropy_coef * entropy_mean
                else:
                    entropy_mean = self.entropy_term(entropy.detach(), mask)
                regulariser = self.actor_regulariser()
                if isinstance(regulariser, Tensor) or regulariser != 0.0:
                    loss = loss + regulariser
                norm = clip_and_step(self.actor_optim, params, loss, self.cfg.max_grad_norm)
                diag.observe(logp.detach(), mb.logp, mask)
                means.add({"actor/policy_loss": policy_loss.item(), "actor/entropy": entropy_mean.item(),
                           "actor/grad_norm": norm, **self.critic_step(mb)})
        return {**means.means(), **diag.metrics()}
