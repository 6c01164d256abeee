"""GRASP's rule: local gradients in both spaces, the consensus term, the run-time solver switch."""

from __future__ import annotations

import pytest
import torch

from marlopt.algos.registry import build_rule
from marlopt.config import ConfigError
from marlopt.objectives import masked_mean, ppo_clip_loss
from tests.algos.test_sequential import SPEC, random_chunks
from tests.helpers import make_config


def grasp_rule(space: str = "heads", **algo):
    sharing = "hybrid" if space == "heads" else "shared"
    cfg = make_config("algo=grasp", "env=games", "map=harl_example1", f"algo.space={space}",
                      f"model.sharing={sharing}", *[f"algo.{k}={v}" for k, v in algo.items()])
    torch.manual_seed(0)
    return build_rule(SPEC, cfg.algo, cfg.model, torch.device("cpu"))


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
def test_consensus_term_adds_exactly_kappa_u_to_the_ppo_gradient(space, kappa):
    rule = grasp_rule(space, kappa=kappa)
    chunks = random_chunks(SPEC, L=10, C=8)
    grads = rule.local_gradients(chunks).detach()
    u, _ = rule.solve(grads)
    shapes = [p.shape for p in rule.space_parameters()[0]]
    rule.u = [x.reshape(s) for x, s in zip(torch.split(u, [s.numel() for s in shapes]), shapes)]

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
            torch.testing.assert_close(hybrid[k] - base, -kappa * u_p, rtol=1e-5, atol=1e-6)  # loss = -J
            touched.add(k)
    for k in set(range(len(plain))) - touched:  # the backbone (heads space) is untouched
        assert (plain[k] is None and hybrid[k] is None) or torch.equal(plain[k], hybrid[k])


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
