"""gae (with terminated / truncated) and ValueNorm."""

from __future__ import annotations

import math

import pytest
import torch

from marlopt.returns import ValueNorm, gae

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
