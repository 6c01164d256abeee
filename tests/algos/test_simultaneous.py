"""The simultaneous rule's ratio diagnostics over an update, against per-minibatch references."""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.algos.simultaneous import RatioDiagnostics
from marlopt.objectives import ratio_diagnostics


def test_ratio_diagnostics_over_an_update_equal_the_per_minibatch_reference():
    g = torch.Generator().manual_seed(0)
    diag = RatioDiagnostics((0.8, 1.2))
    refs = []
    for k in range(5):
        logp, old = torch.randn(1, 40, 3, generator=g), torch.randn(1, 40, 3, generator=g)
        mask = torch.rand(1, 40, 3, generator=g) > 0.3
        logp[~mask] = 50.0  # huge ratios where nothing counts: must not show up
        diag.observe(logp, old, mask)
        refs.append(ratio_diagnostics(logp, old, mask=mask, low=0.8, high=1.2))
    out = diag.metrics()
    assert out["ratio/max"] == pytest.approx(max(r["ratio_max"] for r in refs), rel=1e-12)
    assert out["ratio/min"] == pytest.approx(min(r["ratio_min"] for r in refs), rel=1e-12)
    assert out["ratio/frac_outside"] == refs[-1]["ratio_frac_outside"]  # the last minibatch's
    assert out["ratio/approx_kl"] == refs[-1]["approx_kl"]
    assert out["ratio/max"] < math.exp(10)


def test_minibatches_with_nothing_counted_add_nothing():
    diag = RatioDiagnostics((0.8, 1.2))
    nothing = torch.zeros(1, 4, 3, dtype=torch.bool)
    diag.observe(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), nothing)
    assert diag.metrics() == {"ratio/max": 1.0, "ratio/min": 1.0, "ratio/frac_outside": 0.0, "ratio/approx_kl": 0.0}
    logp = torch.full((1, 4, 3), 0.5)
    diag.observe(logp, torch.zeros(1, 4, 3), torch.ones(1, 4, 3, dtype=torch.bool))  # every ratio e^0.5
    diag.observe(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), nothing)
    out = diag.metrics()
    assert out["ratio/max"] == pytest.approx(math.exp(0.5)) and out["ratio/min"] == pytest.approx(math.exp(0.5))
    assert RatioDiagnostics((0.8, 1.2)).metrics()["ratio/max"] == 1.0  # no minibatch at all


# -- masks that change nothing are left out of the update --------------------------------------

def _rule_and_chunks(algo: str, continuous: bool, all_active: bool):
    import dataclasses

    from marlopt.algos.registry import build_rule
    from marlopt.envs.base import EnvSpec
    from tests.algos.test_sequential import random_chunks
    from tests.helpers import make_config

    spec = EnvSpec(n_agents=3, obs_dim=4, state_dim=6, n_actions=3, episode_limit=5, continuous=continuous,
                   action_low=(0.0,) * 3 if continuous else (), action_high=(1.0,) * 3 if continuous else ())
    cfg = make_config(f"algo={algo}", "env=games", "map=harl_example1", "model.recurrent=false",
                      "algo.num_minibatches=4", "algo.ppo_epochs=2")
    torch.manual_seed(0)
    rule = build_rule(spec, cfg.algo, cfg.model, torch.device("cpu"))
    chunks = random_chunks(spec)
    if continuous:
        g = torch.Generator().manual_seed(1)
        chunks = dataclasses.replace(chunks, actions=torch.rand(*chunks.logp.shape, 3, generator=g),
                                     avail=torch.ones(*chunks.logp.shape, 3, dtype=torch.bool))
    if all_active:
        chunks = dataclasses.replace(chunks, active=torch.ones_like(chunks.active),
                                     critic_active=torch.ones_like(chunks.critic_active))
    with torch.no_grad():
        logp = rule.actor.evaluate(chunks.obs, chunks.avail, chunks.actions, None, None)[0]
    return rule, dataclasses.replace(chunks, logp=logp + 0.05 * torch.randn(logp.shape, generator=torch.Generator().manual_seed(2)))


@pytest.mark.parametrize("algo", ["mappo", "maspo", "mars", "happo"])
@pytest.mark.parametrize("continuous", [False, True])
def test_leaving_out_all_true_masks_gives_the_same_update(algo, continuous):
    """With every sample active and every action available, the update without the masks equals
    the masked one: same parameters, same metrics."""
    import dataclasses

    results = []
    for skip in (False, True):
        rule, chunks = _rule_and_chunks(algo, continuous, all_active=True)
        initial = [p.detach().clone() for p in rule.actor.parameters()]
        chunks = dataclasses.replace(chunks, all_active=skip, all_avail=skip)
        torch.manual_seed(3)
        metrics = rule.update_policy(chunks)
        results.append((metrics, [p.detach().clone() for p in (*rule.actor.parameters(), *rule.critic.parameters())]))
    (m_masked, p_masked), (m_plain, p_plain) = results
    for a, b in zip(p_masked, p_plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert m_masked.keys() == m_plain.keys()
    for k in m_masked:
        assert m_masked[k] == pytest.approx(m_plain[k], rel=1e-5, abs=1e-6), k
    assert any(not torch.equal(a, b) for a, b in zip(p_masked, initial)), "the update moved the actor"


def test_prepare_finds_whether_the_masks_matter(tmp_path):
    """``prepare`` flags a rollout whose masks are all true; one inactive sample or one unavailable
    action keeps the corresponding mask in the update."""
    from marlopt.runners.on_policy import OnPolicyRunner
    from tests.helpers import make_config

    cfg = make_config("env=mpe", "map=simple_spread", "env.options.max_cycles=5", "n_envs=2", "rollout_length=10",
                      "env.vector=inproc", "model.recurrent=false")
    runner = OnPolicyRunner(cfg, tmp_path)
    try:
        runner.collect()
        batch = runner.buffer.batch
        chunks = runner.rule.prepare(batch)
        assert chunks.all_active and chunks.all_avail  # MPE: nobody dies, every action available
        assert chunks.active_mask is None and chunks.critic_mask is None and chunks.avail_mask is None
        sub = chunks.select(slice(0, 3))
        assert sub.all_active and sub.all_avail and sub.obs.shape[1] == 3
        batch.active[4, 1, 2] = False
        batch.avail[7, 0, 1, 3] = False
        chunks = runner.rule.prepare(batch)
        assert not chunks.all_active and not chunks.all_avail
        assert chunks.active_mask is chunks.active and chunks.critic_mask is chunks.critic_active
        assert chunks.avail_mask is chunks.avail
    finally:
        runner.close()


# -- the critic's step beside the actor's (marlopt.optim.side_by_side) -----------------------------

@pytest.mark.parametrize("recurrent", [True, False])
def test_a_recurrent_cpu_update_steps_the_critic_beside_the_actor_bit_for_bit(tmp_path, monkeypatch, recurrent):
    """With two intra-op threads a recurrent update runs each critic step on the side thread and
    equals, bit for bit, the sequential update with one intra-op thread (parameters, optimiser
    state, metrics); an MLP update stays on the calling thread (its matmuls use both threads)."""
    import copy
    import threading

    from marlopt.algos.base import OnPolicyRule
    from marlopt.runners.on_policy import OnPolicyRunner
    from tests.helpers import make_config

    cfg = make_config("env=mpe", "map=simple_spread", "env.options.max_cycles=10", "n_envs=2", "rollout_length=16",
                      "env.vector=inproc", f"model.recurrent={str(recurrent).lower()}", "model.data_chunk_length=8",
                      "algo.num_minibatches=2", "algo.ppo_epochs=2")
    runner = OnPolicyRunner(cfg, tmp_path)
    threads_seen = []
    step = OnPolicyRule.critic_step
    monkeypatch.setattr(OnPolicyRule, "critic_step",
                        lambda self, mb: threads_seen.append(threading.current_thread().name) or step(self, mb))
    try:
        runner.collect()
        start = copy.deepcopy(runner.rule.state_dict())
        results = []
        for threads in (1, 2):
            runner.rule.load_state_dict(copy.deepcopy(start))
            torch.set_num_threads(threads)
            torch.manual_seed(0)
            metrics = runner.rule.update(copy.copy(runner.batch))
            results.append((metrics, copy.deepcopy(runner.rule.state_dict())))
    finally:
        torch.set_num_threads(1)
        runner.close()
    assert len(threads_seen) == 8
    main = threading.current_thread().name
    assert threads_seen[:4] == [main] * 4  # one intra-op thread: sequential
    beside = [t.startswith("marlopt-side") for t in threads_seen[4:]]
    assert all(beside) if recurrent else not any(beside)
    if not recurrent:
        return  # two intra-op threads round some sums differently from one: no bit-equality to check
    (m1, s1), (m2, s2) = results
    assert m1 == m2
    for key in ("actor", "critic"):
        for name, value in s1[key].items():
            assert torch.equal(value, s2[key][name]), (key, name)
    for key in ("actor_optim", "critic_optim"):
        for i, st in s1[key]["state"].items():
            for name, value in st.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(s2[key]["state"][i][name])), (key, i, name)
