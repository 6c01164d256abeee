"""GRASP's rule: local gradients in both spaces, the consensus term, the run-time solver switch."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from marlopt.algos.base import Chunks
from marlopt.algos.registry import build_rule
from marlopt.algos.simultaneous import SimultaneousRule
from marlopt.config import ConfigError
from marlopt.envs.base import EnvSpec
from marlopt.objectives import masked_mean, ppo_clip_loss
from tests.algos.test_sequential import SPEC, random_chunks
from tests.helpers import make_config


def grasp_rule(space: str = "heads", spec: EnvSpec = SPEC, **algo):
    sharing = "hybrid" if space == "heads" else "shared"
    cfg = make_config("algo=grasp", "env=games", "map=harl_example1", f"algo.space={space}",
                      f"model.sharing={sharing}", *[f"algo.{k}={v}" for k, v in algo.items()])
    torch.manual_seed(0)
    return build_rule(spec, cfg.algo, cfg.model, torch.device("cpu"))


def set_consensus(rule, chunks) -> None:
    """``u*`` of ``chunks`` laid out like ``space_parameters()``, as ``update_policy`` holds it."""
    u, _ = rule.solve(rule.local_gradients(chunks).detach())
    shapes = [p.shape for p in rule.space_parameters()[0]]
    rule.u = [x.reshape(s) for x, s in zip(torch.split(u, [s.numel() for s in shapes]), shapes)]


def loop_gradients(rule, chunks) -> torch.Tensor:
    """Reference: one backward pass per agent."""
    rows = []
    for i, params in enumerate(rule.space_parameters() * (SPEC.n_agents if rule.cfg.space == "shared" else 1)):
        logp, _ = rule.evaluate_actions(chunks)
        j = masked_mean(logp[..., i] * chunks.advantages[..., i], chunks.active[..., i])
        g = torch.autograd.grad(j, params, allow_unused=True)
        rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).reshape(-1) for x, p in zip(g, params)]))
    return torch.stack(rows)


@pytest.mark.parametrize("space", ["heads", "shared"])
def test_local_gradients_equal_one_backward_per_agent(space):
    rule = grasp_rule(space)
    chunks = random_chunks(SPEC, L=10, C=8)
    fast = rule.local_gradients(chunks)
    torch.testing.assert_close(fast, loop_gradients(rule, chunks), rtol=1e-4, atol=1e-6)
    assert fast.shape[0] == SPEC.n_agents and fast.abs().sum() > 0


@pytest.mark.parametrize(("space", "kappa"), [("heads", 1.0), ("heads", 0.3), ("shared", 2.0)])
def test_consensus_term_adds_kappa_u_per_head_and_n_kappa_u_shared(space, kappa):
    """The regulariser alone: ``κ u*`` on every head (heads), ``n κ u*`` on the shared θ (the n
    per-agent updates of Alg. 1 summed); the backbone (heads space) gets nothing from it."""
    rule = grasp_rule(space, kappa=kappa)
    chunks = random_chunks(SPEC, L=10, C=8)
    set_consensus(rule, chunks)
    scale = kappa * (SPEC.n_agents if space == "shared" else 1)

    def grads_of(with_term: bool) -> list[torch.Tensor]:
        logp, _ = rule.evaluate_actions(chunks)
        loss = ppo_clip_loss(logp, chunks.logp, chunks.advantages, mask=chunks.active)
        if with_term:
            loss = loss + rule.actor_regulariser()
        return list(torch.autograd.grad(loss, list(rule.actor.parameters()), allow_unused=True))

    plain, hybrid = grads_of(False), grads_of(True)
    ids = {id(p): k for k, p in enumerate(rule.actor.parameters())}
    touched = set()
    for agent in rule.space_parameters():
        for p, u_p in zip(agent, rule.u):
            k = ids[id(p)]
            base = plain[k] if plain[k] is not None else torch.zeros_like(p)
            torch.testing.assert_close(hybrid[k] - base, -scale * u_p, rtol=1e-5, atol=1e-6)  # loss = -J
            touched.add(k)
    for k in set(range(len(plain))) - touched:  # the backbone (heads space) is untouched
        assert (plain[k] is None and hybrid[k] is None) or torch.equal(plain[k], hybrid[k])


def spread_chunks(spec: EnvSpec) -> Chunks:
    """A fixed minibatch with per-agent advantages, ~10% inactive samples and rollout log-probs far
    enough from the policy's that some ratios leave the clip region."""
    chunks = random_chunks(spec, L=10, C=8, seed=1)
    g = torch.Generator().manual_seed(2)
    return dataclasses.replace(chunks, advantages=torch.randn(chunks.advantages.shape, generator=g),
                               logp=chunks.logp + 0.3 * torch.randn(chunks.logp.shape, generator=g))


def own_surrogate(rule, chunks, i: int, clip: float = 0.2) -> torch.Tensor:
    """``J_i``: agent ``i``'s clipped surrogate, mean over ITS active samples (written out here, not
    the rule's code), and its own mean entropy ``H_i``."""
    logp, entropy = rule.evaluate_actions(chunks)
    r = torch.exp(logp[..., i] - chunks.logp[..., i])
    a = chunks.advantages[..., i]
    m = chunks.active[..., i].to(r.dtype)
    assert 0 < m.sum() < m.numel()
    surrogate = torch.min(r * a, r.clamp(1 - clip, 1 + clip) * a)
    return (surrogate * m).sum() / m.sum(), (entropy[..., i] * m).sum() / m.sum()


def flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
@pytest.mark.parametrize("n", [3, 10])
def test_each_head_steps_along_its_own_surrogate_gradient_plus_kappa_u(n, entropy_coef):
    """Heads space: the actor loss's gradient w.r.t. head i is ``-(∇J_i + c_ent ∇H_i + κ u*)`` with
    ``J_i`` agent i's own mean surrogate; the backbone gets ``-Σ_i (∇J_i + c_ent ∇H_i)``. MAPPO's
    mean over all agents' samples gave head i only ~``∇J_i / n`` (0.33 at n = 3, 0.10 at n = 10)."""
    spec = EnvSpec(n_agents=n, obs_dim=4, state_dim=6, n_actions=3, episode_limit=5)
    kappa = 0.7
    rule = grasp_rule("heads", spec, kappa=kappa, entropy_coef=entropy_coef)
    chunks = spread_chunks(spec)
    set_consensus(rule, chunks)
    loss = rule.actor_loss(chunks)[0]
    heads = rule.space_parameters()
    backbone = [p for p in rule.actor.parameters() if all(p is not q for h in heads for q in h)]
    got = torch.autograd.grad(loss, [p for h in heads for p in h] + backbone)
    k = len(heads[0])
    want_backbone = torch.zeros(sum(p.numel() for p in backbone))
    for i, head in enumerate(heads):
        j, h = own_surrogate(rule, chunks, i)
        objective = j + entropy_coef * h
        own = torch.autograd.grad(objective, head + backbone)
        torch.testing.assert_close(flat(got[i * k : (i + 1) * k]), -(flat(own[:k]) + kappa * flat(rule.u)),
                                   rtol=1e-4, atol=1e-7)
        want_backbone += flat(own[k:])
    torch.testing.assert_close(flat(got[len(heads) * k :]), -want_backbone, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n", [3, 10])
def test_shared_parameters_step_along_the_sum_of_own_surrogate_gradients_plus_n_kappa_u(n):
    """Shared space: ``-(Σ_i ∇J_i + n κ u*)`` (Alg. 1's per-agent updates summed into θ), the same
    κ as in the heads space."""
    spec = EnvSpec(n_agents=n, obs_dim=4, state_dim=6, n_actions=3, episode_limit=5)
    kappa = 0.7
    rule = grasp_rule("shared", spec, kappa=kappa, entropy_coef=0.0)
    chunks = spread_chunks(spec)
    set_consensus(rule, chunks)
    params = rule.space_parameters()[0]
    got = flat(torch.autograd.grad(rule.actor_loss(chunks)[0], params))
    want = sum(flat(torch.autograd.grad(own_surrogate(rule, chunks, i)[0], params)) for i in range(n))
    torch.testing.assert_close(got, -(want + n * kappa * flat(rule.u)), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("n", [3, 10])
def test_ppo_gradient_reaching_a_head_is_its_own_surrogate_gradient_not_a_1_over_n_share(n):
    """The measurement of the issue: projection of the PPO part of head i's gradient on ``∇J_i``
    is 1 for GRASP; MAPPO's loss (the mean over all agents' samples) gives ~1/n."""
    spec = EnvSpec(n_agents=n, obs_dim=4, state_dim=6, n_actions=3, episode_limit=5)
    rule = grasp_rule("heads", spec, entropy_coef=0.0)
    chunks = spread_chunks(spec)
    logp, _ = rule.evaluate_actions(chunks)
    grasp_loss = rule.policy_loss(logp, chunks)
    mappo_loss = SimultaneousRule.policy_loss(rule, logp, chunks)
    for i, head in enumerate(rule.space_parameters()):
        own = flat(torch.autograd.grad(own_surrogate(rule, chunks, i)[0], head))
        grasp = -flat(torch.autograd.grad(grasp_loss, head, retain_graph=True))
        mappo = -flat(torch.autograd.grad(mappo_loss, head, retain_graph=True))
        assert float(grasp @ own / (own @ own)) == pytest.approx(1.0, rel=1e-4)
        share = chunks.active[..., i].sum() / chunks.active.sum()  # exactly count_i / count_all
        assert float(mappo @ own / (own @ own)) == pytest.approx(float(share), rel=1e-4)
        assert float(share) == pytest.approx(1 / n, rel=0.25)


def test_consensus_improves_every_agent_and_cvxpy_agrees():
    rule = grasp_rule("heads")
    grads = rule.local_gradients(random_chunks(SPEC, L=10, C=8)).detach()
    u, c = rule.solve(grads)
    assert torch.all(grads @ u >= u @ u - 1e-6)  # KKT: g_j·u* ≥ ||u*||² for every agent
    ref = grasp_rule("heads", solver="cvxpy")
    u_ref, c_ref = ref.solve(grads)
    torch.testing.assert_close(u_ref, u, rtol=1e-3, atol=1e-5)


def test_update_logs_the_consensus_quantities():
    rule = grasp_rule("heads")
    metrics = rule.update_policy(random_chunks(SPEC, L=10, C=8))
    for key in ("grasp/c_entropy", "grasp/c_max", "grasp/u_norm", "grasp/min_cos", "grasp/qp_ms", "grasp/grad_ms"):
        assert key in metrics
    assert 0 <= metrics["grasp/c_entropy"] <= torch.log(torch.tensor(3.0)).item() + 1e-6
    assert 1 / 3 - 1e-6 <= metrics["grasp/c_max"] <= 1 + 1e-6
    assert metrics["grasp/min_cos"] >= -1e-6  # u* never opposes an agent's gradient
    assert rule.u is None, "u* is held only during the iteration's PPO epochs"


def test_space_must_match_the_actor_sharing():
    cfg = make_config("algo=grasp", "env=games", "map=harl_example1", "model.sharing=shared")
    with pytest.raises(ConfigError, match="algo.space=heads needs model.sharing=hybrid"):
        build_rule(SPEC, cfg.algo, cfg.model, torch.device("cpu"))


def test_shared_space_fallback_without_batched_backward_gives_the_same_gradients(monkeypatch):
    rule = grasp_rule("shared")
    chunks = random_chunks(SPEC, L=10, C=8)
    batched = rule.local_gradients(chunks)
    original = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("no batching rule")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    torch.testing.assert_close(rule.local_gradients(chunks), batched, rtol=1e-4, atol=1e-6)
