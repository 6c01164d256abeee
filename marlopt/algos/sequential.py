"""Sequential heterogeneous-agent updates: HAPPO, HATRPO, HAA2C (HARL paper; docs/algorithms/happo.md,
hatrpo.md, haa2c.md).

Each iteration draws a random permutation ``i_1..i_n`` of the agents. ``M_1 = A``; agent ``i_m``
is updated alone with ``M_m``, then ``M_{m+1} = (π_new^{i_m}(a|o) / π_old^{i_m}(a|o)) · M_m``
(detached; the log-probability already sums over action dimensions, so the ratio is the product
over them). The critic is updated once, after all actors.

- HAPPO: ``L = -min(r M, clip(r, 1±ε) M)`` for ``ppo_epochs`` × ``num_minibatches`` steps.
- HAA2C: ``L = -r M`` for ``a2c_epochs`` × ``num_minibatches`` plain gradient steps.
- HATRPO: natural-gradient step ``β x`` with ``x ≈ H⁻¹ g`` (conjugate gradient on the Hessian at
  ``θ_old`` of the mean KL), ``β = sqrt(2δ / xᵀHx)``, and a backtracking line search that accepts
  only ``KL ≤ δ``, improvement > 0 and improvement / expected > ``accept_ratio``; otherwise the old
  parameters are restored bit for bit. The KL, in both places, is ``algo.kl_measure``: the true
  ``KL(π_old || π_θ)`` or HARL's code's discrete measure, which its tuned δ are calibrated to
  (``marlopt.objectives.trpo.policy_kl``).

Actors are per agent (``model.sharing=separate``) unless ``algo.share_actor=true``; each agent is
evaluated alone (``Actor.evaluate(..., agent=i)`` on its slice), so a sequential epoch costs what a
simultaneous one does.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import Tensor

from marlopt.algos.base import Chunks, MetricMeans, OnPolicyRule
from marlopt.algos.trust_region import backtracking_line_search
from marlopt.config import ConfigError
from marlopt.guard import admit
from marlopt.objectives import a2c_loss, happo_loss, masked_mean, ratio
from marlopt.objectives.trpo import (
    KL_MEASURES,
    conjugate_gradient,
    flat_grad,
    flat_params,
    make_fisher_vector_product,
    policy_kl,
    trpo_step_size,
)
from marlopt.optim import adam, clip_and_step

_AGENT_FIELDS = ("obs", "avail", "actions", "logp", "active", "advantages")


def agent_slice(chunks: Chunks, agent: int) -> Chunks:
    """Agent ``agent``'s samples (agent axis kept, size 1); critic fields untouched."""
    out = {f: getattr(chunks, f)[:, :, agent : agent + 1] for f in _AGENT_FIELDS}
    if chunks.h_actor is not None:
        out["h_actor"] = chunks.h_actor[:, agent : agent + 1]
    return dataclasses.replace(chunks, **out)


class SequentialRule(OnPolicyRule):
    """HAPPO / HATRPO / HAA2C with one optimiser per agent and the detached factor ``M``."""

    def __init__(self, spec: Any, algo: Any, model: Any, device: torch.device):
        if algo.share_actor:
            model = dataclasses.replace(model, sharing="shared")
        elif model.sharing != "separate":
            raise ConfigError(
                f"algo={algo.name} updates agents one by one and needs per-agent actors: use "
                f"model.sharing=separate (its default), or algo.share_actor=true for a parameter-shared "
                f"actor (outside the theory); got model.sharing={model.sharing}"
            )
        super().__init__(spec, algo, model, device)

    def make_actor_optimiser(self) -> list[torch.optim.Optimizer]:  # type: ignore[override]
        """One Adam per agent over its own parameters (a single one when the actor is shared)."""
        groups = [list(self.actor.parameters())] if self.cfg.share_actor else [
            self.actor.agent_parameters(i) for i in range(self.spec.n_agents)
        ]
        return [adam(g, lr=self.cfg.lr, eps=self.cfg.adam_eps) for g in groups]

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        out = {f"actor_optim_{i}": o for i, o in enumerate(self.actor_optim)}
        out["critic_optim"] = self.critic_optim
        return out

    def agent_params(self, agent: int) -> list[torch.nn.Parameter]:
        return list(self.actor.parameters()) if self.cfg.share_actor else self.actor.agent_parameters(agent)

    def agent_optim(self, agent: int) -> torch.optim.Optimizer:
        return self.actor_optim[0 if self.cfg.share_actor else agent]

    def agent_order(self) -> list[int]:
        n = self.spec.n_agents
        return list(range(n)) if self.cfg.fixed_order else torch.randperm(n).tolist()

    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        order = self.agent_order()
        factor = torch.ones_like(chunks.logp[..., :1])  # M_m / A, per (t, env) sample: [L, C, 1]
        metrics: dict[str, float] = {}
        for position, agent in enumerate(order):
            mine = dataclasses.replace(agent_slice(chunks, agent), factor=factor)
            stats = self.update_agent(agent, mine)
            for k, v in stats.items():
                metrics[k] = metrics.get(k, 0.0) + v / len(order)
            with torch.no_grad():
                new_logp, _ = self.evaluate_actions(mine, agent=agent)
            agent_ratio, _ = ratio(new_logp, mine.logp, mine.active)  # 1 for inactive samples
            factor = factor * agent_ratio
            metrics[f"factor/std_after_{position + 1}"] = float(factor[chunks.active.any(-1, keepdim=True)].std())
        critic = MetricMeans()
        for _ in range(self.cfg.critic_epochs):
            for mb in self.minibatches(chunks):
                critic.add(self.critic_step(mb))
        metrics.update(critic.means())
        metrics["order/first_agent"] = float(order[0])
        return metrics

    # -- one agent -------------------------------------------------------------------------------
    def update_agent(self, agent: int, data: Chunks) -> dict[str, float]:
        if self.cfg.variant == "hatrpo":
            return self.trpo_update(agent, data)
        epochs = self.cfg.ppo_epochs if self.cfg.variant == "happo" else self.cfg.a2c_epochs
        params, optim = self.agent_params(agent), self.agent_optim(agent)
        means = MetricMeans()
        for _ in range(epochs):
            for mb in self.minibatches(data):
                logp, entropy = self.evaluate_actions(mb, agent=agent)
                mask = mb.active_mask
                if self.cfg.variant == "happo":
                    policy_loss = happo_loss(logp, mb.logp, mb.advantages, mb.factor, clip=self.cfg.clip, mask=mask)
                else:
                    policy_loss = a2c_loss(logp, mb.logp, mb.advantages, mb.factor, mask=mask)
                entropy_mean = self.entropy_term(entropy, mask)
                norm = clip_and_step(optim, params, policy_loss - self.cfg.entropy_coef * entropy_mean,
                                     self.cfg.max_grad_norm, name=f"actor_{agent}")
                means.add({"actor/policy_loss": policy_loss.item(), "actor/entropy": entropy_mean.item(),
                           "actor/grad_norm": norm})
        return means.means()

    def trpo_update(self, agent: int, data: Chunks) -> dict[str, float]:
        """One HATRPO step for ``agent`` on the whole batch (docs/algorithms/hatrpo.md)."""
        cfg = self.cfg
        params = self.agent_params(agent)
        weight = data.advantages * data.factor  # M = factor · A, detached

        def surrogate_and_dist() -> tuple[Tensor, Any]:
            dist = self.actor.dist(data.obs, data.avail, data.h_actor, data.starts, agent)
            r, _ = ratio(dist.log_prob(data.actions), data.logp)
            return masked_mean(r * weight, data.active), dist

        def mean_kl(old: Any, new: Any, measure: str = cfg.kl_measure) -> Tensor:
            return masked_mean(policy_kl(old, new, measure), data.active)

        surrogate, dist = surrogate_and_dist()
        old_dist = dist.detach()
        grad = flat_grad(surrogate, params, retain_graph=True)
        kl = mean_kl(old_dist, dist)  # its Hessian at θ_old: the Fisher of the chosen measure
        fvp = make_fisher_vector_product(kl, params, damping=cfg.cg_damping)
        step_dir = conjugate_gradient(fvp, grad, iters=cfg.cg_iters)
        hx = fvp(step_dir)
        # the non-finite guard (marlopt.guard): a NaN or infinite surrogate, gradient or natural-gradient
        # step (x^T H x is non-finite when x or Hx is) skips this agent's step, counted; one host sync
        finite, values = admit(f"actor_{agent}", loss=surrogate, grad_norm=torch.linalg.vector_norm(grad),
                               curvature=step_dir @ hx)
        if not finite or values["curvature"] <= 0:
            return {"trpo/accepted": 0.0, "trpo/kl": 0.0, "trpo/kl_true": 0.0, "trpo/kl_harl": 0.0,
                    "trpo/ls_iterations": 0.0, "trpo/step_fraction": 0.0}
        full_step = trpo_step_size(step_dir, hx, cfg.kl_threshold) * step_dir
        expected = float(grad @ full_step)
        old_surrogate = values["loss"]

        last: dict[str, Any] = {}

        @torch.no_grad()
        def evaluate() -> tuple[float, float]:
            new_surrogate, last["dist"] = surrogate_and_dist()
            return float(new_surrogate) - old_surrogate, float(mean_kl(old_dist, last["dist"]))

        result = backtracking_line_search(
            params, flat_params(params).detach().clone(), full_step, expected, evaluate, cfg.kl_threshold,
            accept_ratio=cfg.accept_ratio, backtrack_coeff=cfg.backtrack_coeff, max_backtracks=cfg.ls_steps,
        )
        # the accepted step's KL in both measures (trpo/kl is the constrained one); 0 when rejected
        both = {f"trpo/kl_{m}": 0.0 for m in KL_MEASURES}
        if result.accepted:  # the accepted candidate was the last one evaluated
            with torch.no_grad():
                for m in KL_MEASURES:
                    same = m == cfg.kl_measure
                    both[f"trpo/kl_{m}"] = result.kl if same else float(mean_kl(old_dist, last["dist"], m))
        return {"trpo/accepted": float(result.accepted), "trpo/kl": result.kl, **both,
                "trpo/ls_iterations": float(result.iterations), "trpo/step_fraction": result.step_fraction,
                "trpo/expected_improvement": expected}
