"""The value-decomposition rule (QMIX, VDN, GPVD, GRASP-QMIX) against per-episode loop references."""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch

from marlopt.algos.q_learning import QLearningRule, epsilon_greedy, mask_unavailable
from marlopt.envs.base import EnvSpec
from marlopt.objectives import gpvd_weights, simhash
from marlopt.objectives.grasp import consensus_direction
from marlopt.replay import EpisodeBatch
from tests.helpers import make_config

SPEC = EnvSpec(n_agents=2, obs_dim=3, state_dim=4, n_actions=3, episode_limit=4)
LENGTHS = (3, 4, 2)
TERMINATED = (True, False, True)  # episode 1 hit its time limit: its last target bootstraps


def make_rule(*overrides: str) -> QLearningRule:
    torch.manual_seed(0)
    cfg = make_config("algo=qmix", "env=games", "map=gpvd_matrix", "model.recurrent=true", "model.hidden_sizes=[8]",
                      "model.rnn_hidden=8", "algo.mixing_embed_dim=4", "algo.hypernet_embed=8",
                      "algo.mixer_state_norm=false", *overrides)  # the references read raw states
    return QLearningRule(SPEC, cfg.algo, cfg.model, torch.device("cpu"))


def make_batch(seed: int = 0) -> EpisodeBatch:
    """Three episodes padded to T=4, the padding filled with junk that must never count."""
    g = torch.Generator().manual_seed(seed)
    b, t, n, a = len(LENGTHS), SPEC.episode_limit, SPEC.n_agents, SPEC.n_actions
    avail = torch.rand(b, t + 1, n, a, generator=g) < 0.7
    avail[..., 0] = True
    actions = torch.zeros(b, t, n, dtype=torch.long)
    for i, j, k in itertools.product(range(b), range(t), range(n)):  # a taken action is an available one
        allowed = torch.nonzero(avail[i, j, k])[:, 0]
        actions[i, j, k] = allowed[torch.randint(len(allowed), (1,), generator=g)]
    filled = torch.zeros(b, t, dtype=torch.bool)
    terminated = torch.zeros(b, t, dtype=torch.bool)
    for i, (length, term) in enumerate(zip(LENGTHS, TERMINATED)):
        filled[i, :length] = True
        terminated[i, length - 1] = term
    reward = torch.randn(b, t, generator=g)
    reward[~filled] = 1e3  # junk
    return EpisodeBatch(obs=torch.randn(b, t + 1, n, 3, generator=g), state=torch.randn(b, t + 1, 1, 4, generator=g),
                        avail=avail, actions=actions, reward=reward, terminated=terminated, filled=filled)


def reference_targets(rule: QLearningRule, batch: EpisodeBatch, rewards: torch.Tensor | None = None):
    """Per episode, step by step: ``(Q_tot, y)`` lists over the filled steps (TD(λ) written as the
    λ-weighted average of n-step returns)."""
    cfg = rule.cfg
    q_tots, ys = [], []
    with torch.no_grad():
        for i, length in enumerate(LENGTHS):
            obs, state, avail = batch.obs[i, : length + 1], batch.state[i, : length + 1], batch.avail[i, : length + 1]
            acts = batch.actions[i, :length]
            last = torch.cat([torch.full((1, 2), -1), acts])
            h = rule.agent.initial_hidden(1)
            q, _ = rule.agent(obs.unsqueeze(1), last.unsqueeze(1), h)
            tq, _ = rule.target_agent(obs.unsqueeze(1), last.unsqueeze(1), h)
            q, tq = q[:, 0], tq[:, 0]
            next_values = []
            for t in range(length):
                allowed = avail[t + 1]
                if cfg.double_q:
                    pick = torch.where(allowed, q[t + 1], torch.tensor(-1e9)).argmax(-1)
                    nq = tq[t + 1].gather(-1, pick[:, None])[:, 0]
                else:
                    nq = torch.where(allowed, tq[t + 1], torch.tensor(-1e9)).max(-1).values
                next_values.append(rule.target_mixer(nq[None], state[t + 1].reshape(1, -1))[0])
            r = batch.reward[i, :length] if rewards is None else rewards[i, :length]
            term = bool(batch.terminated[i, length - 1])
            for t in range(length):
                chosen = q[t].gather(-1, acts[t][:, None])[:, 0]
                q_tots.append(rule.mixer(chosen[None], state[t].reshape(1, -1))[0])
                # n-step returns G^(n) for n = 1..length-t, bootstrapped unless the episode terminated
                returns = []
                for n in range(1, length - t + 1):
                    g_n = sum(cfg.gamma**k * r[t + k] for k in range(n))
                    if not (term and t + n == length):
                        g_n = g_n + cfg.gamma**n * next_values[t + n - 1]
                    returns.append(g_n)
                lam = cfg.td_lambda
                y = sum((1 - lam) * lam ** (n - 1) * returns[n - 1] for n in range(1, len(returns)))
                y = y + lam ** (len(returns) - 1) * returns[-1]
                ys.append(y)
    return torch.stack(q_tots), torch.stack([torch.as_tensor(y, dtype=torch.float32) for y in ys])


@pytest.mark.parametrize("overrides", [
    ["algo.double_q=true", "algo.td_lambda=0"],
    ["algo.double_q=false", "algo.td_lambda=0.6"],
    ["algo.mixer=vdn", "algo.double_q=true", "algo.td_lambda=1.0"],
    ["algo.double_q=false", "algo.td_lambda=0", "model.recurrent=false", "model.sharing=separate"],
], ids=lambda o: " ".join(o))
def test_td_loss_equals_a_per_episode_loop_reference(overrides):
    rule = make_rule(*overrides)
    rule.target_agent.load_state_dict({k: v + 0.05 * torch.randn_like(v) for k, v in rule.agent.state_dict().items()})
    batch = make_batch()
    q_tot, y = reference_targets(rule, batch)
    metrics = rule.update(batch, episodes=0)
    assert metrics["train/td_loss"] == pytest.approx(float(((q_tot - y) ** 2).mean()), rel=1e-5)
    assert metrics["train/target_mean"] == pytest.approx(float(y.mean()), rel=1e-5, abs=1e-6)


def test_time_limits_bootstrap_and_terminations_do_not():
    rule = make_rule("algo.td_lambda=0")
    batch = make_batch()
    base = rule_loss(rule, batch)
    for i, expect_change in ((0, False), (1, True)):  # episode 0 terminated, episode 1 was cut by its limit
        obs = batch.obs.clone()
        obs[i, LENGTHS[i]] += 5.0  # the final inputs
        state = batch.state.clone()
        state[i, LENGTHS[i]] += 5.0
        changed = rule_loss(rule, batch._replace(obs=obs, state=state)) != pytest.approx(base, rel=1e-6)
        assert changed == expect_change


def rule_loss(rule: QLearningRule, batch: EpisodeBatch) -> float:
    q_tot, y = reference_targets(rule, batch)
    snapshot = copy.deepcopy(rule.state_dict())
    loss = rule.update(batch, episodes=0)["train/td_loss"]
    rule.load_state_dict(snapshot)  # every call sees the same networks
    assert loss == pytest.approx(float(((q_tot - y) ** 2).mean()), rel=1e-5)
    return loss


@pytest.mark.parametrize("seed", [2, 7, 8])
def test_gpvd_weights_and_count_bonus_follow_their_definitions(seed):
    rule = make_rule("algo=gpvd", "algo.td_lambda=0", "algo.count_bonus=0.5", "algo.count_offset=0.1",
                     "algo.gpvd_alpha=0.2", "algo.hash_bits=1")  # 1 bit: two groups, so interference happens
    batch = make_batch(seed)
    for i, length in enumerate(LENGTHS):  # the runner counts every stored episode's states
        rule.observe({"state": batch.state[i].numpy()}, length)
    codes = simhash(batch.state[:, :-1].flatten(-2), rule.projection)
    counts = {}
    for i, length in enumerate(LENGTHS):
        for c in codes[i, :length].tolist():
            counts[c] = counts.get(c, 0) + 1
    r_int = torch.tensor([[0.5 / np.sqrt(counts.get(c, 1)) + 0.1 for c in row] for row in codes.tolist()])
    q_tot, y = reference_targets(rule, batch, rewards=batch.reward + r_int)
    # greedy values by brute force over the available joint actions (the monotonic shortcut is not assumed)
    greedy = []
    with torch.no_grad():
        for i, length in enumerate(LENGTHS):
            last = torch.cat([torch.full((1, 2), -1), batch.actions[i, :length]])
            q, _ = rule.agent(batch.obs[i, : length + 1].unsqueeze(1), last.unsqueeze(1), rule.agent.initial_hidden(1))
            for t in range(length):
                best = max(float(rule.mixer(torch.stack([q[t, 0, 0, a0], q[t, 0, 1, a1]])[None],
                                            batch.state[i, t].reshape(1, -1))[0])
                           for a0, a1 in itertools.product(range(3), repeat=2)
                           if batch.avail[i, t, 0, a0] and batch.avail[i, t, 1, a1])
                greedy.append(best)
    flat_codes = torch.cat([codes[i, :length] for i, length in enumerate(LENGTHS)])
    joint = torch.cat([batch.actions[i, :length] for i, length in enumerate(LENGTHS)])
    td = q_tot - y
    w = gpvd_weights(flat_codes, joint, y, td, torch.tensor(greedy), alpha=0.2)
    assert (w < 1).any()  # the batch exercises the protection
    metrics = rule.update(batch, episodes=0)
    assert metrics["train/td_loss"] == pytest.approx(float((w * td**2).mean()), rel=1e-5)
    assert metrics["gpvd/frac_downweighted"] == pytest.approx(float((w < 1).float().mean()))
    assert metrics["gpvd/frac_candidates"] == pytest.approx(float((y > torch.tensor(greedy)).float().mean()))
    assert metrics["gpvd/r_int_mean"] == pytest.approx(float(torch.cat([r_int[i, :n] for i, n in enumerate(LENGTHS)]).mean()), rel=1e-5)


def test_grasp_qmix_sets_the_realigned_agent_gradient_and_the_plain_mixer_gradient():
    rule = make_rule("algo=grasp_qmix", "algo.max_grad_norm=1e9", "algo.lr=1e-12")
    batch = make_batch()
    grads = []
    for i in range(SPEC.n_agents):  # g_i: the TD loss with only agent i's utilities differentiable
        rule.optim.zero_grad(set_to_none=True)
        loss_i(rule, batch, agent=i).backward()
        grads.append(torch.cat([p.grad.reshape(-1) for p in rule.agent_params]))
    g = torch.stack(grads)
    u, _ = consensus_direction(g)
    gamma = ((u @ u) + g @ u) / ((g * g).sum(1) + u @ u)
    expected_agent = (gamma[:, None] * (g + u)).sum(0)
    rule.optim.zero_grad(set_to_none=True)
    loss_i(rule, batch, agent=None).backward()
    expected_mixer = [p.grad.clone() for p in rule.mixer.parameters()]
    metrics = rule.update(batch, episodes=0)
    got = torch.cat([p.grad.reshape(-1) for p in rule.agent_params])
    torch.testing.assert_close(got, expected_agent, rtol=1e-4, atol=1e-7)
    for p, e in zip(rule.mixer.parameters(), expected_mixer):
        torch.testing.assert_close(p.grad, e)
    assert metrics["grasp/gamma_mean"] == pytest.approx(float(gamma.mean()), rel=1e-4)
    assert 0 <= metrics["grasp/gamma_min"] <= 1


def loss_i(rule: QLearningRule, batch: EpisodeBatch, agent: int | None) -> torch.Tensor:
    """The TD loss (one-step, double Q) with only ``agent``'s utilities differentiable (all: None)."""
    obs, state, avail = (x.transpose(0, 1) for x in (batch.obs, batch.state, batch.avail))
    actions = batch.actions.transpose(0, 1)
    _, y = reference_targets(rule, batch)
    last = torch.cat([torch.full_like(actions[:1], -1), actions])
    q, _ = rule.agent(obs, last, rule.agent.initial_hidden(obs.shape[1]))
    chosen = q[:-1].gather(-1, actions.unsqueeze(-1)).squeeze(-1)
    if agent is not None:
        keep = torch.zeros(SPEC.n_agents, dtype=torch.bool)
        keep[agent] = True
        chosen = torch.where(keep, chosen, chosen.detach())
    q_tot = rule.mixer(chosen, state[:-1].flatten(-2))
    q_tot = torch.cat([q_tot[:n, i] for i, n in enumerate(LENGTHS)])
    return ((q_tot - y) ** 2).mean()


def test_target_networks_hard_and_soft_updates():
    rule = make_rule("algo.target_update_interval=10")
    batch = make_batch()
    rule.update(batch, episodes=9)
    online, target = rule.agent.state_dict(), rule.target_agent.state_dict()
    assert any(not torch.equal(online[k], target[k]) for k in online)  # not yet: 9 < 10 episodes
    rule.update(batch, episodes=10)
    assert all(torch.equal(v, rule.target_agent.state_dict()[k]) for k, v in rule.agent.state_dict().items())
    soft = make_rule("algo.target_tau=0.25")
    before = {k: v.clone() for k, v in soft.target_mixer.state_dict().items()}
    soft.update(batch, episodes=0)
    for k, v in soft.mixer.state_dict().items():
        torch.testing.assert_close(soft.target_mixer.state_dict()[k], before[k] + 0.25 * (v - before[k]))


def test_a_nan_loss_is_never_applied():
    """The step goes through the non-finite guard (marlopt.guard; counting and stopping: tests/test_guard.py)."""
    rule = make_rule()
    batch = make_batch()
    reward = batch.reward.clone()
    reward[0, 0] = float("nan")
    before = [p.detach().clone() for p in rule.params]
    metrics = rule.update(batch._replace(reward=reward), episodes=0)
    assert np.isnan(metrics["train/td_loss"])
    assert all(torch.equal(p, q) for p, q in zip(rule.params, before))
    assert not rule.optim.state, "the optimiser never stepped"


def test_epsilon_greedy_never_takes_an_unavailable_action_and_explores_uniformly():
    torch.manual_seed(0)
    q = torch.randn(4000, 2, 5)
    avail = torch.rand(4000, 2, 5) < 0.5
    avail[:, :, 2] = True
    q[..., 4] = 100.0  # the best action, unavailable wherever masked
    for eps in (0.0, 0.3, 1.0):
        actions = epsilon_greedy(q, avail, eps)
        assert avail.gather(-1, actions.unsqueeze(-1)).all()
    greedy = epsilon_greedy(q, avail, 0.0)
    torch.testing.assert_close(greedy, mask_unavailable(q, avail).argmax(-1))
    random = epsilon_greedy(q, avail, 1.0)
    rows = avail.all(-1)  # where every action is available, each is drawn with probability 1/5
    freq = torch.bincount(random[rows], minlength=5).float() / rows.sum()
    assert (freq - 0.2).abs().max() < 0.05
    unmasked = epsilon_greedy(q, None, 1.0)
    assert (torch.bincount(unmasked.reshape(-1), minlength=5).float() / unmasked.numel() - 0.2).abs().max() < 0.02
    nothing = torch.zeros(3, 5, dtype=torch.bool)  # padding: no action available -> no NaN, no -inf argmax trap
    assert torch.isfinite(mask_unavailable(torch.randn(3, 5), nothing)).all()


def test_epsilon_anneals_linearly_in_frames():
    rule = make_rule("algo.epsilon_start=1.0", "algo.epsilon_finish=0.1", "algo.epsilon_anneal_steps=1000")
    assert [rule.epsilon(f) for f in (0, 500, 1000, 5000)] == pytest.approx([1.0, 0.55, 0.1, 0.1])


def test_state_dict_round_trip_keeps_everything_that_steers_learning():
    rule = make_rule("algo=gpvd", "algo.standardise_rewards=true", "algo.mixer_state_norm=true")
    batch = make_batch()
    rule.observe({"state": batch.state[0].numpy()}, 3)
    rule.update(batch, episodes=300)
    other = make_rule("algo=gpvd", "algo.standardise_rewards=true", "algo.mixer_state_norm=true")
    other.load_state_dict(rule.state_dict())
    assert torch.equal(other.projection, rule.projection) and other.counts.counts == rule.counts.counts
    assert other.reward_stats.count == rule.reward_stats.count and torch.equal(other.state_stats.m2, rule.state_stats.m2)
    a, b = rule.update(batch, episodes=301), other.update(batch, episodes=301)
    assert a["train/td_loss"] == b["train/td_loss"]


@pytest.mark.parametrize("overrides", [[], ["model.recurrent=false", "algo.obs_last_action=false"]])
def test_acting_sees_what_the_learner_sees(overrides):
    """Acting step by step (GRU state and previous action carried in the policy's state) chooses
    the argmax of the utilities the learner recomputes over the whole episode from its start."""
    rule = make_rule(*overrides)
    policy = rule.eval_policy()
    obs = make_batch().obs[:, :6].transpose(0, 1)  # [T, B, N, O]
    state = policy.initial_state(3)
    assert (state is None) == (overrides != [])
    taken = []
    with torch.no_grad():
        for t in range(obs.shape[0]):
            actions, state = policy.step(obs[t], None, state, epsilon=0.0)
            taken.append(actions)
        taken = torch.stack(taken)
        last = torch.cat([torch.full_like(taken[:1], -1), taken[:-1]])
        h0 = rule.agent.initial_hidden(3) if rule.agent.hidden_size else None
        q_seq, _ = rule.agent(obs, last, h0)
    torch.testing.assert_close(taken, q_seq.argmax(-1))


def test_mixer_state_norm_feeds_the_mixers_standardised_states():
    """With ``mixer_state_norm`` (a fresh rule: the statistics are this batch's taken steps), the
    loss is the reference loss on states standardised by the batch's mean and std."""
    normed = make_rule("algo.mixer_state_norm=true", "algo.td_lambda=0")
    plain = make_rule("algo.mixer_state_norm=false", "algo.td_lambda=0")
    plain.load_state_dict(copy.deepcopy(normed.state_dict()))
    batch = make_batch()
    state = batch.state * 7.0 + 3.0  # far from standardised
    taken = state[:, :-1][batch.filled].reshape(-1, 4).double()
    mean, std = taken.mean(0), taken.std(0, unbiased=False).clamp_min(0.01)
    standardised = ((state.double() - mean) / std).clamp(-10, 10).float()
    q_tot, y = reference_targets(plain, batch._replace(state=standardised))
    loss = normed.update(batch._replace(state=state), episodes=0)["train/td_loss"]
    assert loss == pytest.approx(float(((q_tot - y) ** 2).mean()), rel=1e-4)
    assert normed.state_stats.count == batch.filled.sum()


def test_the_mixer_is_in_the_optimiser_and_learns():
    """ray #5003: a QMIX whose mixer parameters were never optimised."""
    rule = make_rule()
    in_optim = {id(p) for group in rule.optim.param_groups for p in group["params"]}
    assert all(id(p) in in_optim for p in [*rule.agent.parameters(), *rule.mixer.parameters()])
    assert not any(id(p) in in_optim for p in [*rule.target_agent.parameters(), *rule.target_mixer.parameters()])
    before = [p.clone() for p in rule.mixer.parameters()]
    rule.update(make_batch(), episodes=0)
    assert all(not torch.equal(b, p) for b, p in zip(before, rule.mixer.parameters()))
