"""Simultaneous update (MAPPO and the ratio-objective family): all agents step together.

Per minibatch: one actor step on ``objective(logp, logp_old, A, mask) - c_ent · H`` over active
samples, then one critic step. The objective is the algorithm YAML's ``objective`` — any
importable loss with the signature of :func:`marlopt.objectives.ppo_clip_loss`
(docs/architecture.md, "Add an algorithm"); MAPPO, MASPO, MARS and their ablations are YAMLs
over marlopt's own losses. A subclass changes one minibatch's actor loss (:meth:`actor_loss`)
through ``policy_loss``, ``entropy_term`` and ``actor_regulariser`` (GRASP: each agent's own
surrogate and entropy, summed over agents, plus its consensus term).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from marlopt.algos.base import Chunks, MetricMeans, OnPolicyRule
from marlopt.algos.registry import objective_fn, ratio_region
from marlopt.objectives import ratio_diagnostics
from marlopt.objectives.ppo import diagnostic_log_ratio, log_ratio_extremes
from marlopt.optim import clip_and_step, side_by_side


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
        self.objective = objective_fn(self.cfg)  # type: ignore[arg-type]
        self.region = ratio_region(self.cfg, self.objective)  # type: ignore[arg-type]

    def actor_regulariser(self) -> Tensor | float:
        """An extra term of the actor loss (GRASP's ``-κ <θ, u*>``); none here."""
        return 0.0

    def policy_loss(self, logp: Tensor, mb: Chunks) -> Tensor:
        """The surrogate loss of a minibatch: the objective over all agents' active samples (MAPPO)."""
        return self.objective(logp, mb.logp, mb.advantages, mask=mb.active_mask)

    def actor_loss(self, mb: Chunks) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One minibatch's actor loss ``policy_loss - c_ent · H + regulariser``, with the policy
        loss, the entropy term (logged) and the log-probabilities (ratio diagnostics)."""
        logp, entropy = self.evaluate_actions(mb)
        mask = mb.active_mask
        policy_loss = self.policy_loss(logp, mb)
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
        return loss, policy_loss, entropy_mean, logp

    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        """Per minibatch the actor's step, then the critic's; a recurrent update on the CPU runs the
        critic's beside the actor's on a second thread (:func:`marlopt.optim.side_by_side`)."""
        diag = RatioDiagnostics(self.region)
        means = MetricMeans()
        params = list(self.actor.parameters())
        with side_by_side(self.critic_beside_actor) as beside:
            for _ in range(self.cfg.ppo_epochs):
                for mb in self.minibatches(chunks):
                    critic_stats = beside(self.critic_step, mb)
                    loss, policy_loss, entropy_mean, logp = self.actor_loss(mb)
                    norm = clip_and_step(self.actor_optim, params, loss, self.cfg.max_grad_norm, name="actor")
                    diag.observe(logp.detach(), mb.logp, mb.active_mask)
                    means.add({"actor/policy_loss": policy_loss.item(), "actor/entropy": entropy_mean.item(),
                               "actor/grad_norm": norm, **critic_stats()})
        return {**means.means(), **diag.metrics()}
