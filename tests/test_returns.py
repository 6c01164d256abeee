"""gae (with terminated / truncated), ValueNorm, and td_lambda_targets."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlopt.returns import ValueNorm, gae, td_lambda_targets

F64 = torch.float64


def _ref_gae(rewards, values, boot, term, trunc, gamma, lam):
    """Plain-Python loop over each (e, n) column, straight from the docstring's recursion."""
    T = rewards.shape[0]
    r, v, b = rewards.reshape(T, -1), values.reshape(T, -1), boot.reshape(T, -1)
    te, tr = term.reshape(T, -1), trunc.reshape(T, -1)
    adv = torch.zeros_like(v)
    for c in range(v.shape[1]):
        nxt = 0.0
        for t in reversed(range(T)):
            terminal = bool(te[t, c])
            done = terminal or bool(tr[t, c])
            delta = float(r[t, c]) + (0.0 if terminal else gamma * float(b[t, c])) - float(v[t, c])
            nxt = delta + (0.0 if done else gamma * lam * nxt)
            adv[t, c] = nxt
    return adv.reshape(values.shape), (adv + v).reshape(values.shape)


def _episodes(seed: int, T=24, E=3, N=2):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, E, N, generator=g, dtype=F64)
    values = torch.randn(T, E, N, generator=g, dtype=F64)
    # consistent bootstrap: V(s_{t+1}), replaced by an independent "final observation" value at dones
    boot = torch.cat([values[1:], torch.randn(1, E, N, generator=g, dtype=F64)])
    u = torch.rand(T, E, 1, generator=g)
    term = (u < 0.1).expand(T, E, N)
    trunc = ((u >= 0.1) & (u < 0.2)).expand(T, E, N)
    trunc = trunc.clone()
    trunc[5, 0] = True
    term = term.clone()
    term[5, 0] = True  # both flags: counts as terminated
    final_obs_v = torch.randn(T, E, N, generator=g, dtype=F64)
    boot = torch.where(term | trunc, final_obs_v, boot)
    assert term.any() and trunc.any() and (trunc & ~term).any()
    return rewards, values, boot, term, trunc


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.95), (0.9, 0.5), (1.0, 1.0), (0.97, 0.0)])
def test_matches_loop_reference_with_mixed_flags(gamma, lam):
    rewards, values, boot, term, trunc = _episodes(0)
    adv, ret = gae(rewards, values, boot, term, trunc, gamma, lam)
    ref_adv, ref_ret = _ref_gae(rewards, values, boot, term, trunc, gamma, lam)
    torch.testing.assert_close(adv, ref_adv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ret, ref_ret, rtol=1e-12, atol=1e-12)
    # float flags give the same result as bool flags
    adv_f, _ = gae(rewards, values, boot, term.double(), trunc.float(), gamma, lam)
    torch.testing.assert_close(adv_f, adv)


def test_truncation_bootstraps_termination_does_not_and_recursion_stops():
    T = 6
    rewards = torch.ones(T, dtype=F64)
    values = torch.zeros(T, dtype=F64)
    boot = torch.zeros(T, dtype=F64)
    term = torch.zeros(T, dtype=torch.bool)
    trunc = torch.zeros(T, dtype=torch.bool)
    term[1] = True
    trunc[3] = True
    base, _ = gae(rewards, values, boot, term, trunc, 0.9, 0.8)

    b = boot.clone()
    b[1] = float("nan")  # the bootstrap value after a termination is never read
    same, _ = gae(rewards, values, b, term, trunc, 0.9, 0.8)
    torch.testing.assert_close(same, base)

    b = boot.clone()
    b[3] = 10.0  # the final observation's value at a time limit is bootstrapped...
    trunc_adv, _ = gae(rewards, values, b, term, trunc, 0.9, 0.8)
    assert trunc_adv[3] - base[3] == pytest.approx(9.0)
    # ...and flows back within the episode (steps 2, 3) but not across the boundary at t=1
    assert trunc_adv[2] - base[2] == pytest.approx(9.0 * 0.9 * 0.8)
    torch.testing.assert_close(trunc_adv[:2], base[:2])
    torch.testing.assert_close(trunc_adv[4:], base[4:])

    r = rewards.clone()
    r[4] = 100.0  # a reward after a truncation does not leak into the previous episode
    leak, _ = gae(r, values, boot, term, trunc, 0.9, 0.8)
    torch.testing.assert_close(leak[:4], base[:4])
    r = rewards.clone()
    r[2] = 100.0  # nor across a termination
    leak, _ = gae(r, values, boot, term, trunc, 0.9, 0.8)
    torch.testing.assert_close(leak[:2], base[:2])


def test_closed_forms():
    g = torch.Generator().manual_seed(3)
    T, E = 15, 4
    rewards = torch.randn(T, E, generator=g, dtype=F64)
    values = torch.randn(T, E, generator=g, dtype=F64)
    v_last = torch.randn(1, E, generator=g, dtype=F64)
    boot = torch.cat([values[1:], v_last])
    no = torch.zeros(T, E, dtype=torch.bool)
    gamma = 0.95
    # lam = 1: discounted return (bootstrapped at the end of the rollout) minus value
    adv, ret = gae(rewards, values, boot, no, no, gamma, 1.0)
    disc = torch.zeros(T, E, dtype=F64)
    for t in range(T):
        disc[t] = sum(gamma**k * rewards[t + k] for k in range(T - t)) + gamma ** (T - t) * v_last[0]
    torch.testing.assert_close(adv, disc - values)
    torch.testing.assert_close(ret, disc)
    # lam = 0: one-step TD error
    adv0, _ = gae(rewards, values, boot, no, no, gamma, 0.0)
    torch.testing.assert_close(adv0, rewards + gamma * boot - values)


def test_broadcast_team_reward_dtype_and_no_grad():
    rewards, values, boot, term, trunc = _episodes(1)
    team_r = rewards[..., :1]
    values = values.float().requires_grad_()
    adv, ret = gae(team_r, values, boot.float(), term[..., :1], trunc[..., :1], 0.99, 0.95)
    ref, _ = _ref_gae(team_r.expand_as(values), values.detach().double(), boot, term, trunc, 0.99, 0.95)
    assert adv.shape == values.shape and adv.dtype == torch.float32
    assert not adv.requires_grad and not ret.requires_grad
    torch.testing.assert_close(adv.double(), ref, rtol=1e-5, atol=1e-5)


def test_gae_input_validation():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="dim 0"):
        gae(torch.zeros(1, 2), x, x, x, x, 0.99, 0.95)  # a length-1 time dim must not broadcast
    with pytest.raises(ValueError):
        gae(x, x, x, x, x, 1.5, 0.95)


# ---------------------------------------------------------------- ValueNorm


def test_valuenorm_converges_to_data_statistics():
    g = torch.Generator().manual_seed(0)
    vn = ValueNorm()
    mu, sigma = 3.0, 2.5
    for _ in range(200):
        vn.update(mu + sigma * torch.randn(16, 8, 4, generator=g))
    mean, std = vn.mean_std()
    assert mean.item() == pytest.approx(mu, abs=0.05)
    assert std.item() == pytest.approx(sigma, rel=0.03)
    x = mu + sigma * torch.randn(1000, generator=g)
    z = vn.normalize(x)
    assert z.mean().item() == pytest.approx(0.0, abs=0.15) and z.std().item() == pytest.approx(1.0, abs=0.1)


def test_valuenorm_matches_mappo_reference_update():
    """The MAPPO reference's EMA with debiasing and the 1e-2 variance floor, by hand."""
    beta, eps = 0.9, 1e-5
    vn = ValueNorm(beta=beta, epsilon=eps)
    m = s = d = 0.0
    for k, batch in enumerate([[1.0, 2.0, 3.0], [0.5, 0.5], [10.0, -4.0, 2.0, 2.0]]):
        vn.update(torch.tensor(batch))
        mb, qb = sum(batch) / len(batch), sum(x * x for x in batch) / len(batch)
        m, s, d = beta * m + (1 - beta) * mb, beta * s + (1 - beta) * qb, beta * d + (1 - beta)
        mean = m / max(d, eps)
        var = max(s / max(d, eps) - mean**2, 1e-2)
        got_mean, got_std = vn.mean_std()
        assert got_mean.item() == pytest.approx(mean, rel=1e-12)
        assert got_std.item() == pytest.approx(math.sqrt(var), rel=1e-12)
    # variance floor
    vn = ValueNorm(beta=0.5)
    vn.update(torch.full((10,), 7.0))
    assert vn.mean_std()[1].item() == pytest.approx(0.1)


def test_valuenorm_roundtrip_and_gradients():
    vn = ValueNorm()
    vn.update(torch.randn(100, dtype=F64) * 4 + 1)
    x = torch.randn(6, 5, requires_grad=True)
    y = vn.denormalize(vn.normalize(x))
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(vn.normalize(vn.denormalize(x)), x)
    assert vn.normalize(x).dtype == torch.float32
    vn.normalize(x).sum().backward()
    _, std = vn.mean_std()
    torch.testing.assert_close(x.grad, torch.full_like(x, 1 / std.item()))
    assert all(not b.requires_grad for b in vn.buffers())
    assert list(vn.parameters()) == []


def test_valuenorm_masked_update_ignores_masked_entries():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 3, generator=g) * 2 + 1
    mask = torch.rand(10, 3, generator=g) > 0.4
    dirty = torch.where(mask, x, torch.full_like(x, float("nan")))
    a, b = ValueNorm(beta=0.9), ValueNorm(beta=0.9)
    a.update(dirty, mask)
    b.update(x[mask])
    for name in ("running_mean", "running_mean_sq", "debiasing_term"):
        torch.testing.assert_close(getattr(a, name), getattr(b, name))
    before = {k: v.clone() for k, v in a.state_dict().items()}
    a.update(dirty, torch.zeros(10, 1))  # counts nothing: no-op
    for k, v in a.state_dict().items():
        torch.testing.assert_close(v, before[k])


def test_valuenorm_state_dict_roundtrip_and_shapes():
    vn = ValueNorm(1)
    vn.update(torch.randn(7, 5, 1) * 3 - 2)
    vn.update(torch.randn(7, 5, 1) * 3 - 2)
    sd = vn.state_dict()
    assert set(sd) == {"running_mean", "running_mean_sq", "debiasing_term"}
    fresh = ValueNorm(1)
    fresh.load_state_dict(sd)
    x = torch.randn(4, 1)
    torch.testing.assert_close(fresh.normalize(x), vn.normalize(x))
    with pytest.raises(ValueError):
        vn.update(torch.randn(7, 5))  # shape (1,) needs a trailing dim of size 1
    # per-feature statistics
    pf = ValueNorm((2,), beta=0.5)
    pf.update(torch.stack([torch.full((50,), 1.0), torch.full((50,), -3.0)], dim=-1))
    assert pf.mean_std()[0].tolist() == pytest.approx([1.0, -3.0])


def test_valuenorm_per_element_update_weight():
    vn = ValueNorm(beta=0.99, per_element_update=True)
    vn.update(torch.ones(10), torch.tensor([1.0] * 4 + [0.0] * 6))
    assert vn.debiasing_term.item() == pytest.approx(1 - 0.99**4)



# ---------------------------------------------------------------- td_lambda_targets


def _n_step(r, nv, term, t, n, gamma):
    """G_t^(n): n discounted rewards from t, then gamma^n nv[t+n-1] unless step t+n-1 terminated."""
    g = sum(gamma**i * r[t + i] for i in range(n))
    last = t + n - 1
    return g + (0.0 if term[last] else gamma**n * nv[last])


def _ref_lambda_column(r, nv, term, ends, gamma, lam):
    """Forward view, one column: G_t = (1 - lam) sum_{n<L} lam^(n-1) G^(n) + lam^(L-1) G^(L), with
    L = e - t + 1 and e the first end (terminated, ends, or the last step) at or after t: the
    explicit lambda-weighted average of the n-step returns within the episode."""
    T = len(r)
    out = []
    for t in range(T):
        e = t
        while not (term[e] or ends[e] or e == T - 1):
            e += 1
        L = e - t + 1
        g = sum((1 - lam) * lam ** (n - 1) * _n_step(r, nv, term, t, n, gamma) for n in range(1, L))
        out.append(g + lam ** (L - 1) * _n_step(r, nv, term, t, L, gamma))
    return out


def _ref_lambda(rewards, next_values, terminated, ends, gamma, lam):
    T = rewards.shape[0]
    cols = [x.reshape(T, -1).T.tolist() for x in (rewards, next_values, terminated.bool(), ends.bool())]
    out = [_ref_lambda_column(*c, gamma, lam) for c in zip(*cols)]
    return torch.tensor(out, dtype=F64).T.reshape(rewards.shape)


def _sequences(seed: int, T=12, B=5, p_term=0.15, p_trunc=0.15):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(T, B, generator=g, dtype=F64)
    next_values = torch.randn(T, B, generator=g, dtype=F64)
    u = torch.rand(T, B, generator=g)
    term = u < p_term
    trunc = (u >= p_term) & (u < p_term + p_trunc)
    ends = term | trunc
    ends[-1] = True
    return rewards, next_values, term, ends


@pytest.mark.parametrize(
    "gamma,lam", [(0.99, 0.6), (0.9, 0.3), (1.0, 1.0), (0.97, 0.0), (0.5, 1.0), (1.0, 0.8)]
)
def test_td_lambda_matches_forward_view_reference(gamma, lam):
    rewards, nv, term, ends = _sequences(0)
    assert term.any() and (ends & ~term).any()
    out = td_lambda_targets(rewards, nv, term, ends, gamma, lam)
    torch.testing.assert_close(out, _ref_lambda(rewards, nv, term, ends, gamma, lam), rtol=1e-12, atol=1e-12)
    # float flags, and terminated steps left out of ends, give the same result
    out_f = td_lambda_targets(rewards, nv, term.double(), (ends & ~term).float(), gamma, lam)
    torch.testing.assert_close(out_f, out, rtol=0, atol=0)


@settings(max_examples=150, deadline=None)
@given(
    T=st.integers(1, 9),
    trailing=st.lists(st.integers(1, 3), min_size=0, max_size=2),
    gamma=st.floats(0.0, 1.0),
    lam=st.floats(0.0, 1.0) | st.sampled_from([0.0, 1.0]),
    p=st.floats(0.0, 0.6),
    seed=st.integers(0, 2**31 - 1),
)
def test_td_lambda_property_against_reference(T, trailing, gamma, lam, p, seed):
    g = torch.Generator().manual_seed(seed)
    shape = (T, *trailing)
    rewards = torch.randn(shape, generator=g, dtype=F64)
    nv = torch.randn(shape, generator=g, dtype=F64) * 3
    u = torch.rand(shape, generator=g)
    term, ends = u < p / 2, u < p  # ends here need not include the last step
    out = td_lambda_targets(rewards, nv, term, ends, gamma, lam)
    assert out.shape == shape and out.dtype == F64
    torch.testing.assert_close(out, _ref_lambda(rewards, nv, term, ends, gamma, lam), rtol=1e-10, atol=1e-10)


def test_td_lambda_zero_is_one_step_and_one_is_monte_carlo_bootstrapped_at_truncation():
    rewards, nv, term, ends = _sequences(1, T=15, B=6)
    gamma = 0.93
    one_step = td_lambda_targets(rewards, nv, term, ends, gamma, 0.0)
    torch.testing.assert_close(one_step, rewards + gamma * (~term).double() * nv)

    mc = td_lambda_targets(rewards, nv, term, ends, gamma, 1.0)
    T, B = rewards.shape
    expected = torch.zeros(T, B, dtype=F64)
    for b in range(B):
        for t in range(T):
            e = t
            while not ends[e, b]:
                e += 1
            disc = sum(gamma ** (i - t) * rewards[i, b].item() for i in range(t, e + 1))
            boot = 0.0 if term[e, b] else gamma ** (e - t + 1) * nv[e, b].item()
            expected[t, b] = disc + boot
    torch.testing.assert_close(mc, expected, rtol=1e-12, atol=1e-12)


def test_td_lambda_termination_blocks_bootstrap_and_ends_stop_the_recursion():
    T = 6
    rewards = torch.ones(T, dtype=F64)
    nv = torch.full((T,), 2.0, dtype=F64)
    term = torch.zeros(T, dtype=torch.bool)
    ends = torch.zeros(T, dtype=torch.bool)
    term[1] = True   # episode 1: steps 0-1, terminated
    ends[3] = True   # episode 2: steps 2-3, truncated (bootstraps nv[3]); episode 3: steps 4-5
    gamma, lam = 0.9, 0.5
    base = td_lambda_targets(rewards, nv, term, ends, gamma, lam)
    assert base[1].item() == pytest.approx(1.0)  # r only
    assert base[3].item() == pytest.approx(1.0 + 0.9 * 2.0)  # truncation bootstraps
    assert base[5].item() == pytest.approx(1.0 + 0.9 * 2.0)  # the last stored step bootstraps

    v = nv.clone()
    v[1] = float("nan")  # never read after a termination
    torch.testing.assert_close(td_lambda_targets(rewards, v, term, ends, gamma, lam), base)
    v = nv.clone()
    v[3] = 12.0  # the final observation's value flows back within its episode only
    moved = td_lambda_targets(rewards, v, term, ends, gamma, lam)
    assert moved[3] - base[3] == pytest.approx(0.9 * 10.0)
    assert moved[2] - base[2] == pytest.approx(0.9 * 0.5 * 0.9 * 10.0)
    torch.testing.assert_close(moved[:2], base[:2])
    torch.testing.assert_close(moved[4:], base[4:])
    r = rewards.clone()
    r[4] = 100.0  # nothing crosses an end backwards
    torch.testing.assert_close(td_lambda_targets(r, nv, term, ends, gamma, lam)[:4], base[:4])
    r = rewards.clone()
    r[2] = 100.0  # nor a termination
    torch.testing.assert_close(td_lambda_targets(r, nv, term, ends, gamma, lam)[:2], base[:2])


def test_td_lambda_padding_does_not_leak_and_nan_is_not_hidden():
    # one episode per column, terminated (col 0) or truncated (col 1) at step 2, then padding whose
    # next values are -inf (a max over no available action)
    T = 6
    rewards = torch.tensor([[1.0, 1.0], [0.5, 0.5], [2.0, 2.0], [0, 0], [0, 0], [0, 0]], dtype=F64)
    nv = torch.tensor([[3.0, 3.0], [4.0, 4.0], [-float("inf"), 5.0]] + [[-float("inf")] * 2] * 3, dtype=F64)
    term = torch.zeros(T, 2, dtype=torch.bool)
    term[2, 0] = True
    ends = term.clone()
    ends[2, 1] = True
    ends[-1] = True
    out = td_lambda_targets(rewards, nv, term, ends, 0.9, 0.7)
    ref = _ref_lambda(rewards[:3], nv[:3].nan_to_num(neginf=0.0), term[:3], ends[:3], 0.9, 0.7)
    torch.testing.assert_close(out[:3], ref)  # the -inf after the termination and the padding never leak
    nv[1, 1] = float("nan")  # a NaN on a valid, non-terminated step is surfaced, not read as 0
    out = td_lambda_targets(rewards, nv, term, ends, 0.9, 0.7)
    assert torch.isnan(out[:2, 1]).all() and torch.isfinite(out[:3, 0]).all()


def _pymarl2_build_td_lambda_targets(rewards, terminated, mask, target_qs, n_agents, gamma, td_lambda):
    """Port of PyMARL2's build_td_lambda_targets (hijkzzz/pymarl2, src/utils/rl_utils.py, commit
    8ccac7c5): rewards, terminated, mask [B, T, 1]; target_qs [B, T + 1, 1]; returns [B, T, 1]."""
    ret = target_qs.new_zeros(*target_qs.shape)
    ret[:, -1] = target_qs[:, -1] * (1 - torch.sum(terminated, dim=1))
    for t in range(ret.shape[1] - 2, -1, -1):
        ret[:, t] = td_lambda * gamma * ret[:, t + 1] + mask[:, t] * (
            rewards[:, t] + (1 - td_lambda) * gamma * target_qs[:, t + 1] * (1 - terminated[:, t])
        )
    return ret[:, 0:-1]


def _pymarl2_batch(lengths, terminated_flags, T, seed):
    """Episodes of the given lengths in a [B, T] buffer, as PyMARL2's learner sees them
    (src/learners/nq_learner.py: terminated = batch["terminated"][:, :-1], mask = filled[:, :-1]
    with mask[:, 1:] *= 1 - terminated[:, :-1]); padding holds junk rewards and values."""
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    rewards = torch.randn(B, T, 1, generator=g, dtype=F64)
    target_qs = torch.randn(B, T + 1, 1, generator=g, dtype=F64)
    filled = torch.zeros(B, T, 1, dtype=F64)
    terminated = torch.zeros(B, T, 1, dtype=F64)
    for b, (n, done) in enumerate(zip(lengths, terminated_flags)):
        filled[b, :n] = 1.0
        terminated[b, n - 1] = float(done)
    mask = filled.clone()
    mask[:, 1:] = mask[:, 1:] * (1 - terminated[:, :-1])
    return rewards, terminated, mask, target_qs, filled


def _ours_on_pymarl2_layout(rewards, terminated, filled, target_qs, gamma, lam):
    """[B, T, 1] PyMARL2 tensors -> our [T, B] call: next_values[t] = target_qs[:, t + 1]; ends on
    each episode's last filled step."""
    f = filled[..., 0].T.bool()
    last = f & ~torch.cat([f[1:], torch.zeros_like(f[:1])])
    return td_lambda_targets(
        rewards[..., 0].T, target_qs[:, 1:, 0].T, terminated[..., 0].T.bool(), last, gamma, lam
    ), f


@pytest.mark.parametrize("gamma,lam", [(0.99, 0.6), (0.9, 0.0), (0.95, 1.0)])
def test_td_lambda_equals_pymarl2_on_terminated_episodes(gamma, lam):
    T = 10
    lengths = [3, 10, 1, 7, 10]  # all terminate at their last step, some fill the buffer
    rewards, terminated, mask, target_qs, filled = _pymarl2_batch(lengths, [True] * 5, T, seed=0)
    theirs = _pymarl2_build_td_lambda_targets(rewards, terminated, mask, target_qs, 2, gamma, lam)[..., 0].T
    ours, valid = _ours_on_pymarl2_layout(rewards, terminated, filled, target_qs, gamma, lam)
    torch.testing.assert_close(ours[valid], theirs[valid], rtol=1e-12, atol=1e-12)
    assert valid.sum() == sum(lengths)


def test_td_lambda_pymarl2_time_limit_at_buffer_end_and_early_truncation():
    gamma, lam = 0.99, 0.6
    T = 8
    # episode 0 hits the time limit at the buffer's last slot (terminated = 0, final obs in slot T):
    # same targets. Episode 1 is cut at step 4 without termination: PyMARL2's recursion reads the
    # padding after it, ours bootstraps with the final observation's value only.
    rewards, terminated, mask, target_qs, filled = _pymarl2_batch([8, 4], [False, False], T, seed=1)
    theirs = _pymarl2_build_td_lambda_targets(rewards, terminated, mask, target_qs, 2, gamma, lam)[..., 0].T
    ours, valid = _ours_on_pymarl2_layout(rewards, terminated, filled, target_qs, gamma, lam)
    torch.testing.assert_close(ours[:, 0], theirs[:, 0], rtol=1e-12, atol=1e-12)
    assert ours[3, 1].item() == pytest.approx(rewards[1, 3, 0].item() + gamma * target_qs[1, 4, 0].item())
    assert theirs[3, 1].item() != pytest.approx(ours[3, 1].item())


def test_td_lambda_broadcast_dtype_device_no_grad_and_validation():
    rewards, nv, term, ends = _sequences(2, T=7, B=3)
    team_r = rewards[..., None]  # [T, B, 1] with per-agent values [T, B, 4]
    nv4 = (nv[..., None] + torch.arange(4, dtype=F64)).float().requires_grad_()
    out = td_lambda_targets(team_r, nv4, term[..., None], ends[..., None], 0.99, 0.6)
    assert out.shape == (7, 3, 4) and out.dtype == torch.float32 and not out.requires_grad
    ref = _ref_lambda(team_r.expand(7, 3, 4), nv4.detach().double(), term[..., None].expand(7, 3, 4),
                      ends[..., None].expand(7, 3, 4), 0.99, 0.6)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-5)
    empty = torch.zeros(0, 2)
    assert td_lambda_targets(empty, empty, empty, empty, 0.9, 0.5).shape == (0, 2)
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="dim 0"):
        td_lambda_targets(torch.zeros(1, 2), x, x, x, 0.99, 0.6)
    with pytest.raises(ValueError, match="broadcast"):
        td_lambda_targets(torch.zeros(5, 3), x, x, x, 0.99, 0.6)
    with pytest.raises(ValueError, match="lam"):
        td_lambda_targets(x, x, x, x, 0.99, 1.2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_td_lambda_on_cuda_matches_reference():
    rewards, nv, term, ends = _sequences(3, T=20, B=16)
    out = td_lambda_targets(rewards.cuda(), nv.cuda(), term.cuda(), ends.cuda(), 0.99, 0.6)
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), _ref_lambda(rewards, nv, term, ends, 0.99, 0.6))
