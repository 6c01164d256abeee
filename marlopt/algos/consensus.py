"""GRASP: gradient realignment via min-norm consensus, on top of MAPPO (GRASP §3.2, Alg. 1–2).

Once per iteration, on the whole batch at ``θ_old``:

1. local gradients ``g_i = ∇ E_i[log π_i(a|o) A]`` over agent ``i``'s active samples — in the
   ``heads`` space (hybrid actor: shared backbone, per-agent heads of identical shape, ``g_i`` the
   gradient of agent ``i``'s head, heads stacked as vectors of one space) or the ``shared`` space
   (full parameter sharing, ``g_i`` in the shared parameter space);
2. ``c* = argmin_{c ∈ simplex} ½ ||Σ c_i g_i||²`` on the Gram matrix, ``u* = Σ c*_i g_i``
   (KKT: ``g_j · u* ≥ ||u*||²`` for every agent: ``u*`` improves every agent's objective);
3. PPO epochs on ``Σ_i J_i^clip(θ) + κ <θ, u*>`` per agent with ``u*`` held fixed (Eqs. (7)–(8),
   Alg. 1 lines 23–26): ``J_i^clip`` is agent ``i``'s OWN clipped surrogate (the YAML's
   ``objective`` over agent ``i``'s active samples; its entropy bonus likewise its own), so the
   ascent direction of each agent is ``∇J_i + κ u*``:

   - ``heads``: head ``i`` receives ``∇J_i`` (only agent ``i``'s objective reaches it) plus
     ``κ u*`` (the loss gets ``-κ Σ_i <θ_i, u*>``);
   - ``shared``: Alg. 1's per-agent loop sums the n per-agent updates into the shared ``θ``:
     ``Σ_i ∇J_i + n κ u*`` (the loss gets ``-n κ <θ, u*>``).

   So ``κ`` means the same in both spaces: the weight of ``u*`` next to ONE agent's own surrogate
   gradient (κ = 1: the paper). MAPPO's loss (a mean over all agents' samples) would give head
   ``i`` only ``∇J_i / n`` next to ``κ u*``: ``κ`` n times too strong (docs/algorithms/grasp.md).

Cost: the ``heads`` gradients come from ONE backward pass (agent ``i``'s objective reaches only its
own head); the ``shared`` gradients from one batched backward over the N per-agent objectives
(``torch.autograd.grad(..., is_grads_batched=True)``, i.e. ``vmap`` over the N cotangents),
falling back to N backward passes where an op has no batching rule.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import Tensor, nn

from marlopt.algos.base import Chunks
from marlopt.algos.simultaneous import SimultaneousRule
from marlopt.config import ConfigError
from marlopt.objectives import masked_mean
from marlopt.objectives.grasp import consensus_direction, min_norm_coefficients_cvxpy
from marlopt.objectives.trpo import flat_grad


class ConsensusRule(SimultaneousRule):
    """MAPPO's update on each agent's own surrogate, plus GRASP's consensus term ``κ <θ, u*>``."""

    def __init__(self, spec: Any, algo: Any, model: Any, device: torch.device):
        need = {"heads": "hybrid", "shared": "shared"}[algo.space]
        if model.sharing != need:
            raise ConfigError(f"algo.space={algo.space} needs model.sharing={need} (got {model.sharing})")
        super().__init__(spec, algo, model, device)
        self.u: list[Tensor] | None = None  # u* laid out like space_parameters()

    def space_parameters(self) -> list[list[nn.Parameter]]:
        """Per agent, the parameters spanning its gradient space (heads) — or the shared ones once."""
        if self.cfg.space == "heads":
            return [self.actor.agent_parameters(i) for i in range(self.spec.n_agents)]
        return [list(self.actor.parameters())]

    def local_objectives(self, chunks: Chunks) -> Tensor:
        """``J_i = E_i[log π_i(a|o) A]`` over agent ``i``'s active samples: ``[N]``."""
        logp, _ = self.evaluate_actions(chunks)
        n = self.spec.n_agents
        return torch.stack([masked_mean(logp[..., i] * chunks.advantages[..., i], chunks.active[..., i])
                            for i in range(n)])

    def local_gradients(self, chunks: Chunks) -> Tensor:
        """``G[n, p]``: row ``i`` is agent ``i``'s local gradient ``g_i`` in the chosen space."""
        objectives = self.local_objectives(chunks)
        if self.cfg.space == "heads":
            params = self.space_parameters()
            flat = [p for agent in params for p in agent]
            grads = torch.autograd.grad(objectives.sum(), flat, allow_unused=True)
            grads = [torch.zeros_like(p) if g is None else g for g, p in zip(grads, flat)]
            k = len(params[0])
            return torch.stack([torch.cat([g.reshape(-1) for g in grads[i * k : (i + 1) * k]])
                                for i in range(len(params))])
        shared = self.space_parameters()[0]
        eye = torch.eye(objectives.shape[0], device=objectives.device)
        try:
            grads = torch.autograd.grad(objectives, shared, grad_outputs=eye, is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # an op without a batching rule: one backward per agent
            return torch.stack([flat_grad(objectives[i], shared, retain_graph=True) for i in range(objectives.shape[0])])
        return torch.cat([(g if g is not None else torch.zeros(eye.shape[0], *p.shape)).reshape(eye.shape[0], -1)
                          for g, p in zip(grads, shared)], dim=1)

    def solve(self, grads: Tensor) -> tuple[Tensor, Tensor]:
        if self.cfg.solver == "cvxpy":
            c = torch.as_tensor(min_norm_coefficients_cvxpy(grads.detach()), dtype=grads.dtype, device=grads.device)
            return c @ grads, c
        return consensus_direction(grads)

    def policy_loss(self, logp: Tensor, mb: Chunks) -> Tensor:
        """``-Σ_i J_i^clip``: the sum over agents of each agent's own objective, each over its own
        active samples (an agent with none in the minibatch adds 0)."""
        mask = mb.active_mask
        return torch.stack([
            self.objective(logp[..., i : i + 1], mb.logp[..., i : i + 1], mb.advantages[..., i : i + 1],
                           mask=None if mask is None else mask[..., i : i + 1])
            for i in range(self.spec.n_agents)
        ]).sum()

    def entropy_term(self, entropy: Tensor, mask: Tensor | None) -> Tensor:
        """``Σ_i H_i``, each agent's mean entropy over its own active samples (as ``policy_loss``)."""
        return torch.stack([masked_mean(entropy[..., i], None if mask is None else mask[..., i])
                            for i in range(self.spec.n_agents)]).sum()

    def actor_regulariser(self) -> Tensor | float:
        """``-κ Σ_i <θ_i, u*>`` over the agents' heads (heads space: each head gets ``κ u*``), or
        ``-n κ <θ, u*>`` (shared space: the n per-agent updates of Alg. 1 summed into ``θ``)."""
        if self.u is None or self.cfg.kappa == 0:
            return 0.0
        total = sum((p * u).sum() for agent in self.space_parameters() for p, u in zip(agent, self.u))
        scale = self.cfg.kappa * (self.spec.n_agents if self.cfg.space == "shared" else 1)
        return -scale * total

    def per_agent_means(self, metrics: dict[str, float]) -> dict[str, float]:
        """The logged policy loss and entropy as means over agents (comparable with MAPPO's), not
        the sums the loss uses."""
        for key in ("actor/policy_loss", "actor/entropy"):
            if key in metrics:
                metrics[key] /= self.spec.n_agents
        return metrics

    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        t0 = time.perf_counter()
        grads = self.local_gradients(chunks).detach()
        t1 = time.perf_counter()
        if not bool(torch.isfinite(grads).all()):
            # diverged (non-finite advantages or parameters): no consensus term this update, and no
            # solve (the solvers refuse non-finite gradients); the PPO steps on the same data go
            # through the non-finite guard (marlopt.guard), which skips and counts them
            metrics = self.per_agent_means(super().update_policy(chunks))
            metrics.update({"grasp/c_entropy": math.nan, "grasp/c_max": math.nan, "grasp/u_norm": math.nan,
                            "grasp/min_cos": math.nan, "grasp/qp_ms": 0.0, "grasp/grad_ms": 1e3 * (t1 - t0)})
            return metrics
        u, c = self.solve(grads)
        t2 = time.perf_counter()
        shapes = [p.shape for p in self.space_parameters()[0]]
        self.u = [chunk.reshape(shape) for chunk, shape in zip(torch.split(u, [s.numel() for s in shapes]), shapes)]
        metrics = super().update_policy(chunks)
        self.u = None
        self.per_agent_means(metrics)
        u_norm = float(u.norm())
        cos = grads @ u / (grads.norm(dim=1) * u.norm()).clamp_min(1e-12)
        entropy = float(-(c * torch.log(c.clamp_min(1e-12))).sum())
        metrics.update({"grasp/c_entropy": entropy, "grasp/c_max": float(c.max()), "grasp/u_norm": u_norm,
                        "grasp/min_cos": float(cos.min()) if u_norm > 0 else 0.0,
                        "grasp/qp_ms": 1e3 * (t2 - t1), "grasp/grad_ms": 1e3 * (t1 - t0)})
        return metrics
