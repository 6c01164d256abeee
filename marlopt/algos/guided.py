"""Guided update (MAGPO, and CTDS as its special case): a centralised guider, decentralised learners.

One iteration (docs/algorithms/magpo.md; MAGPO paper §4, Eq. 9–12):

1. the **guider** ``μ_φ`` (:class:`marlopt.models.guider.Guider`, autoregressive over agents)
   collects the rollout; its log-probs of the taken actions are stored per step;
2. value estimation: the centralised critic's values (GAE on the guider's data), and the
   **learner** ``π_θ`` (marlopt's decentralised :class:`~marlopt.models.Actor`) run once over the
   whole rollout with the parameters it acted beside: its log-probs of the taken actions and its
   hidden states, the numbers a step-by-step pass gives (it does not choose actions, so its
   memory depends on the observations alone);
3. per minibatch, from the same pre-update parameters (as the authors' code), one step of each:
   - guider: :func:`magpo_guider_loss` (double clip, KL(μ‖π) switched on only where μ/π leaves
     ``(1/δ, δ)``, π detached) ``- c_ent · H(μ)``,
   - learner: :func:`magpo_learner_loss` (KL(π‖μ) with μ detached, ``- λ`` PPO on ``π / μ_old``)
     ``- c_ent_learner · H(π)``,
   - critic: the clipped value loss, as every on-policy rule.

``algo=ctds`` is the same rule with ``delta=.inf`` (the guider's loss becomes PPO's clip with no KL
term) and ``rl_coef=0`` (pure distillation). The learner is what evaluation, ``marlopt.evaluate``
and ``marlopt.load_policy`` use; with ``eval_guider`` the guider is evaluated too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from marlopt.algos.base import Chunks, MetricMeans, OnPolicyRule, chunk_starts, states_before_steps, to_chunks
from marlopt.buffers import RolloutBatch, RolloutTail
from marlopt.models.guider import Guider
from marlopt.objectives import masked_mean
from marlopt.objectives.magpo import magpo_band_stats, magpo_guider_loss, magpo_learner_loss
from marlopt.optim import adam, clip_and_step
from marlopt.policy import ActorPolicy


@dataclass
class GuidedChunks(Chunks):
    """:class:`Chunks` plus the learner's rollout log-probs and its hidden states at chunk starts
    (``logp`` and ``h_actor`` are the guider's)."""

    learner_logp: Tensor | None = None  # [L, C, N]
    h_learner: Tensor | None = None  # [C, N, H]


class GuiderPolicy(ActorPolicy):
    """The guider as a :class:`~marlopt.policy.Policy`: ``centralised`` tells
    :func:`marlopt.evaluation.evaluate_policy` to pass the env state (its input where
    ``guider_input=state``)."""

    centralised = True


class GuidedRule(OnPolicyRule):
    """MAGPO: ``self.actor`` is the learner, ``self.guider`` acts in rollouts."""

    def __init__(self, spec: Any, algo: Any, model: Any, device: torch.device):
        super().__init__(spec, algo, model, device)
        self.guider = Guider(spec, model, algo.guider_input).to(device)
        self.guider_optim = adam(self.guider.parameters(), lr=algo.guider_lr or algo.lr, eps=algo.adam_eps)

    # -- what the runner uses ------------------------------------------------------------------
    @property
    def rollout_actor(self) -> Guider:  # type: ignore[override]
        return self.guider

    def extra_eval_policies(self) -> dict[str, Any]:
        return {"guider_": GuiderPolicy(self.guider)} if self.cfg.eval_guider else {}

    def initial_value_state(self, n_envs: int) -> Tensor:
        """The critic's memory and the learner's, packed per env: ``[E, R·Hc + N·Hl]``."""
        return torch.cat([self.critic.initial_hidden(n_envs).flatten(1),
                          self.actor.initial_hidden(n_envs).flatten(1)], dim=1)

    def _unpack(self, value_state: Tensor) -> tuple[Tensor, Tensor]:
        e = value_state.shape[0]
        split = self.critic.rows * self.critic.hidden_size
        return (value_state[:, :split].reshape(e, self.critic.rows, self.critic.hidden_size),
                value_state[:, split:].reshape(e, self.spec.n_agents, self.actor.hidden_size))

    @torch.no_grad()
    def estimate_values(self, batch: RolloutBatch, value_state: Tensor, tail: RolloutTail) -> Tensor:
        """The critic's values (:meth:`OnPolicyRule.estimate_values`) and the learner's pass over the
        rollout: ``batch.extras["learner_logp"]`` ``[T, E, N]`` and ``batch.extras["h_learner"]``
        (its state before each step, zeroed at episode starts)."""
        critic_state, learner_state = self._unpack(value_state)
        next_critic = super().estimate_values(batch, critic_state, tail)
        device = batch.obs.device
        h0 = learner_state.to(device) if self.actor.hidden_size else None
        sequence: list[Tensor] = []
        avail = None if bool(batch.avail.all()) else batch.avail
        feats, _ = self.actor.features(batch.obs, h0, batch.starts, hidden_sequence=sequence)
        batch.extras["learner_logp"] = self.actor.distribution(feats, avail).log_prob(batch.actions)
        next_learner = learner_state
        if sequence:
            h_after = sequence[0]
            batch.extras["h_learner"] = states_before_steps(h0, h_after, batch.starts)
            next_learner = (h_after[-1] * (1.0 - tail.next_starts.to(device)).unsqueeze(-1)).cpu()
        return torch.cat([next_critic.flatten(1), next_learner.flatten(1)], dim=1)

    def prepare(self, batch: RolloutBatch) -> GuidedChunks:
        chunks = super().prepare(batch)
        length = self.chunk_length
        h = batch.extras.get("h_learner")
        return GuidedChunks(
            **{f.name: getattr(chunks, f.name) for f in dataclasses.fields(chunks)},
            learner_logp=to_chunks(batch.extras["learner_logp"], length),
            h_learner=None if h is None else chunk_starts(h, length),
        )

    def update(self, batch: RolloutBatch) -> dict[str, float]:
        self.guider.train()
        return super().update(batch)

    # -- the update ----------------------------------------------------------------------------
    def update_policy(self, chunks: Chunks) -> dict[str, float]:
        assert isinstance(chunks, GuidedChunks)
        cfg = self.cfg
        mask_all = chunks.active_mask
        rollout_band = magpo_band_stats(chunks.logp, chunks.learner_logp, cfg.delta, mask_all)
        means = MetricMeans()
        guider_params, learner_params = list(self.guider.parameters()), list(self.actor.parameters())
        for _ in range(cfg.ppo_epochs):
            for mb in self.minibatches(chunks):
                assert isinstance(mb, GuidedChunks)
                mask = mb.active_mask
                mu = self.guider.dist(mb.obs, mb.avail_mask, mb.actions, mb.h_actor, mb.starts, mb.state)
                pi = self.actor.dist(mb.obs, mb.avail_mask, mb.h_learner, mb.starts)
                mu_logp, pi_logp = mu.log_prob(mb.actions), pi.log_prob(mb.actions)
                mu_entropy, pi_entropy = masked_mean(mu.entropy(), mask), masked_mean(pi.entropy(), mask)
                # each network's loss sees the other's pre-update distribution, detached
                kl_mu_pi = mu.kl(pi.detach())
                kl_pi_mu = pi.kl(mu.detach())
                guider_loss = magpo_guider_loss(mu_logp, mb.logp, pi_logp.detach(), mb.advantages, kl_mu_pi,
                                                clip=cfg.clip, delta=cfg.delta, mask=mask)
                learner_loss = magpo_learner_loss(pi_logp, mb.logp, mb.advantages, kl_pi_mu,
                                                  clip=cfg.clip, rl_coef=cfg.rl_coef, mask=mask)
                g_norm = clip_and_step(self.guider_optim, guider_params,
                                       guider_loss - cfg.entropy_coef * mu_entropy, cfg.max_grad_norm, name="guider")
                l_norm = clip_and_step(self.actor_optim, learner_params,
                                       learner_loss - cfg.learner_entropy_coef * pi_entropy, cfg.max_grad_norm,
                                       name="learner")
                band = magpo_band_stats(mu_logp.detach(), pi_logp.detach(), cfg.delta, mask)
                means.add({
                    "guider/loss": guider_loss.item(), "guider/entropy": mu_entropy.item(),
                    "guider/grad_norm": g_norm, "guider/kl_on_frac": band["kl_on_frac"].item(),
                    "guider/kl_to_learner": masked_mean(kl_mu_pi.detach(), mask).item(),
                    "learner/loss": learner_loss.item(), "learner/entropy": pi_entropy.item(),
                    "learner/grad_norm": l_norm, "learner/kl_to_guider": masked_mean(kl_pi_mu.detach(), mask).item(),
                    **self.critic_step(mb),
                })
        return {
            **means.means(),
            # |log μ/π| of the taken actions on the rollout batch (guider and learner as they acted)
            "magpo/abs_log_ratio_mean": rollout_band["abs_log_ratio_mean"].item(),
            "magpo/abs_log_ratio_max": rollout_band["abs_log_ratio_max"].item(),
            "magpo/kl_on_frac": rollout_band["kl_on_frac"].item(),
        }

    # -- checkpoints ---------------------------------------------------------------------------
    def modules(self) -> dict[str, nn.Module]:
        return {**super().modules(), "guider": self.guider}

    def optimisers(self) -> dict[str, torch.optim.Optimizer]:
        return {**super().optimisers(), "guider_optim": self.guider_optim}
