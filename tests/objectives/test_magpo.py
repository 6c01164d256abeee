"""MAGPO guider / learner losses against plain-Python per-sample references (magpo.txt Eqs. 9-12)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from marlopt.objectives.magpo import magpo_band_stats, magpo_guider_loss, magpo_learner_loss
from marlopt.objectives.ppo import ppo_clip_loss

SHAPE = (5, 3, 4)  # [T, E, N]
F64 = torch.float64


def _data(seed: int, shape=SHAPE, spread: float = 0.3):
    """guider_logp (leaf), guider_logp_old, learner_logp, adv, kl (leaf), and three masks."""
    g = torch.Generator().manual_seed(seed)
    gl = (torch.randn(shape, generator=g, dtype=F64) * spread - 1.0).requires_grad_()
    gl_old = torch.randn(shape, generator=g, dtype=F64) * spread - 1.0
    ll = torch.randn(shape, generator=g, dtype=F64) * spread - 1.0
    adv = torch.randn(shape, generator=g, dtype=F64)
    kl = (torch.rand(shape, generator=g, dtype=F64) * 2.0).requires_grad_()
    u = torch.rand(shape, generator=g)
    masks = {
        "float01": (u > 0.3).double(),
        "bool": u > 0.3,
        "weights": torch.where(u > 0.3, 0.5 + 2 * u.double(), torch.zeros((), dtype=F64)),
    }
    return gl, gl_old, ll, adv, kl, masks


def _flat(x, shape):
    return torch.broadcast_to(x.detach(), shape).flatten().tolist()


def _weights(mask, shape):
    if mask is None:
        return [1.0] * math.prod(shape)
    return [float(m) for m in _flat(mask.double() if mask.dtype == torch.bool else mask, shape)]


def _ref_guider(gl, gl_old, ll, adv, kl, mask, clip, delta):
    """Per-sample loop from magpo.txt Eqs. (9)-(10) with math.exp: loss, dL/dguider_logp, dL/dkl."""
    shape = gl.shape
    w = _weights(mask, shape)
    n = sum(w)
    total, g_grad, kl_grad = 0.0, [], []
    for g, go, lpl, a, k, wi in zip(*(_flat(x, shape) for x in (gl, gl_old, ll, adv, kl)), w):
        if wi == 0:
            g_grad.append(0.0)
            kl_grad.append(0.0)
            continue
        rho = math.exp(g - go)
        q = math.exp(g - lpl)
        m = 1.0 if (q <= 1 / delta or q >= delta) else 0.0
        inner = min(max(q, 1 / delta), delta)
        c = min(max(inner * math.exp(lpl - go), 1 - clip), 1 + clip)
        total += wi * (-min(rho * a, c * a) + m * k)
        # dc/dg: rho inside the band where the outer clip is inactive, else 0 (c constant)
        c_moves = m == 0 and 1 - clip < rho < 1 + clip
        if c_moves or rho * a < c * a:  # (c_moves: both branches equal rho A)
            d = rho * a
        else:
            d = 0.0
        g_grad.append(-wi * d / n)
        kl_grad.append(wi * m / n)
    as_t = lambda v: torch.tensor(v, dtype=F64).reshape(shape)  # noqa: E731
    return total / n if n else 0.0, as_t(g_grad), as_t(kl_grad)


def _ref_learner(ll, gl_old, adv, kl, mask, clip, rl_coef):
    """Per-sample loop from magpo.txt Eqs. (11)-(12): loss, dL/dlearner_logp, dL/dkl."""
    shape = ll.shape
    w = _weights(mask, shape)
    n = sum(w)
    total, l_grad, kl_grad = 0.0, [], []
    for lpl, go, a, k, wi in zip(*(_flat(x, shape) for x in (ll, gl_old, adv, kl)), w):
        if wi == 0:
            l_grad.append(0.0)
            kl_grad.append(0.0)
            continue
        rho = math.exp(lpl - go)
        rc = min(max(rho, 1 - clip), 1 + clip)
        total += wi * (k - rl_coef * min(rho * a, rc * a))
        d = rho * a if rho * a <= rc * a else 0.0
        l_grad.append(-wi * rl_coef * d / n)
        kl_grad.append(wi / n)
    as_t = lambda v: torch.tensor(v, dtype=F64).reshape(shape)  # noqa: E731
    return total / n if n else 0.0, as_t(l_grad), as_t(kl_grad)


# ----------------------------------------------------------------------------------------- values


@pytest.mark.parametrize("mask_kind", [None, "float01", "bool", "weights"])
@pytest.mark.parametrize("clip, delta", [(0.2, 1.5), (0.1, 1.1), (0.3, 3.0), (0.2, 1.2)])
def test_guider_matches_loop_reference_and_analytic_grad(mask_kind, clip, delta):
    gl, gl_old, ll, adv, kl, masks = _data(0)
    mask = None if mask_kind is None else masks[mask_kind]
    ll = ll.requires_grad_()
    loss = magpo_guider_loss(gl, gl_old, ll, adv, kl, clip, delta, mask)
    ref, g_grad, kl_grad = _ref_guider(gl, gl_old, ll, adv, kl, mask, clip, delta)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(gl.grad, g_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kl.grad, kl_grad, rtol=1e-12, atol=1e-14)
    assert ll.grad is None  # no gradient reaches the learner through the guider loss
    # the data exercise both sides of the band
    on = (kl_grad != 0).sum().item()
    assert 0 < on < (kl_grad.numel() if mask is None else int((mask != 0).sum()))


@pytest.mark.parametrize("mask_kind", [None, "float01", "bool", "weights"])
@pytest.mark.parametrize("clip, rl_coef", [(0.2, 1.0), (0.1, 0.5), (0.3, 4.0), (0.2, 0.0)])
def test_learner_matches_loop_reference_and_analytic_grad(mask_kind, clip, rl_coef):
    _, gl_old, ll, adv, kl, masks = _data(1, spread=0.4)
    mask = None if mask_kind is None else masks[mask_kind]
    ll = ll.requires_grad_()
    gl_old = gl_old.requires_grad_()
    adv = adv.requires_grad_()
    loss = magpo_learner_loss(ll, gl_old, adv, kl, clip, rl_coef, mask)
    ref, l_grad, kl_grad = _ref_learner(ll, gl_old, adv, kl, mask, clip, rl_coef)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(ref, rel=1e-12, abs=1e-12)
    loss.backward()
    torch.testing.assert_close(ll.grad, l_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(kl.grad, kl_grad, rtol=1e-12, atol=1e-14)
    assert gl_old.grad is None and adv.grad is None  # rollout constants


@settings(max_examples=300, deadline=None)
@given(
    g=st.floats(-4.0, 4.0),
    go=st.floats(-4.0, 4.0),
    lpl=st.floats(-4.0, 4.0),
    a=st.floats(-10.0, 10.0),
    k=st.floats(0.0, 5.0),
    clip=st.floats(0.05, 0.5),
    delta=st.floats(1.01, 4.0),
)
def test_guider_single_sample_property(g, go, lpl, a, k, clip, delta):
    """One sample anywhere: value and gradient equal the reference (kinks excluded)."""
    rho, log_q = math.exp(g - go), g - lpl
    assume(abs(abs(log_q) - math.log(delta)) > 1e-9)
    assume(abs(rho - (1 - clip)) > 1e-9 and abs(rho - (1 + clip)) > 1e-9)
    inner = min(max(math.exp(log_q), 1 / delta), delta) * math.exp(lpl - go)
    c = min(max(inner, 1 - clip), 1 + clip)
    assume(abs(log_q) < math.log(delta) or abs(rho - c) > 1e-9)  # no tie with a constant c
    t = lambda v: torch.tensor([v], dtype=F64)  # noqa: E731
    gl, kl = t(g).requires_grad_(), t(k).requires_grad_()
    loss = magpo_guider_loss(gl, t(go), t(lpl), t(a), kl, clip, delta)
    ref, g_grad, kl_grad = _ref_guider(gl, t(go), t(lpl), t(a), kl, None, clip, delta)
    assert loss.item() == pytest.approx(ref, rel=1e-10, abs=1e-12)
    loss.backward()
    assert gl.grad.item() == pytest.approx(g_grad.item(), rel=1e-9, abs=1e-12)
    assert kl.grad.item() == kl_grad.item()


# ------------------------------------------------------------------------------------ gradients


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(1, 6),
    seed=st.integers(0, 2**31 - 1),
    a=st.floats(0.01, 10.0),
    clip=st.floats(0.1, 0.4),
    delta=st.floats(1.2, 3.0),
)
def test_guider_gradient_inside_band_is_ppo(n, seed, a, clip, delta):
    """Inside the band, A > 0 and rho_g in (1-eps, 1+eps): dL/dguider_logp = -A rho_g / n, no KL."""
    g = torch.Generator().manual_seed(seed)
    gl_old = torch.randn(n, generator=g, dtype=F64)
    lo, hi = 0.9 * math.log1p(-clip), 0.9 * math.log1p(clip)  # rho_g strictly inside (1-eps, 1+eps)
    log_rho = lo + torch.rand(n, generator=g, dtype=F64) * (hi - lo)
    gl = (gl_old + log_rho).requires_grad_()
    band = math.log(delta)
    ll = gl.detach() - (torch.rand(n, generator=g, dtype=F64) * 2 - 1) * 0.9 * band  # |log q| < log delta
    kl = (torch.rand(n, generator=g, dtype=F64) + 1).requires_grad_()
    adv = torch.full((n,), a, dtype=F64)
    magpo_guider_loss(gl, gl_old, ll, adv, kl, clip, delta).backward()
    rho = (gl.detach() - gl_old).exp()
    torch.testing.assert_close(gl.grad, -a * rho / n, rtol=1e-12, atol=0.0)
    assert (kl.grad == 0).all()


@pytest.mark.parametrize("delta", [1.1, 1.5, 2.0])
def test_guider_gradient_outside_band(delta):
    """Outside the band the advantage cannot push mu further from pi: only the KL term's gradient
    remains. Where the advantage pulls mu back towards pi it keeps its gradient."""
    clip, n = 0.2, 4
    ll = torch.zeros(n, dtype=F64)
    gl_old = torch.zeros(n, dtype=F64)  # pi / mu_old = 1, so c = delta^{+-1} (inside [0.8, 1.2])
    log_q = torch.tensor([1.3, 2.0, -1.1, -2.5], dtype=F64) * math.log(delta)
    gl = (ll + log_q).requires_grad_()
    # KL as a differentiable function of the guider (stand-in for the caller's categorical KL)
    kl = 0.5 * (gl - ll) ** 2
    # samples 0, 1: q > delta with A > 0 (away from pi); 2, 3: q < 1/delta with A < 0 (away)
    adv = torch.tensor([1.0, 2.0, -1.0, -3.0], dtype=F64)
    magpo_guider_loss(gl, gl_old, ll, adv, kl, clip, delta).backward()
    torch.testing.assert_close(gl.grad, log_q / n, rtol=1e-12, atol=0.0)  # d(0.5 x^2)/dx / n only
    # the opposite advantages pull mu back towards pi: their (unclipped-branch) gradient survives
    gl2 = (ll + log_q).requires_grad_()
    kl2 = 0.5 * (gl2 - ll) ** 2
    magpo_guider_loss(gl2, gl_old, ll, -adv, kl2, clip, delta).backward()
    rho = log_q.exp()
    torch.testing.assert_close(gl2.grad, (-(-adv) * rho + log_q) / n, rtol=1e-12, atol=0.0)


def test_learner_gets_no_guider_gradient_and_guider_old_none():
    gl, gl_old, ll, adv, kl, masks = _data(2)
    ll.requires_grad_()
    gl_old.requires_grad_()
    adv.requires_grad_()
    magpo_guider_loss(gl, gl_old, ll, adv, kl, mask=masks["bool"]).backward()
    assert ll.grad is None and gl_old.grad is None and adv.grad is None
    assert gl.grad is not None and torch.isfinite(gl.grad).all()
    # learner loss: the rollout guider is a constant
    ll2 = ll.detach().clone().requires_grad_()
    magpo_learner_loss(ll2, gl_old, adv, kl.detach()).backward()
    assert gl_old.grad is None and adv.grad is None and ll2.grad is not None


# ----------------------------------------------------------------------------------- band edges


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("delta", [1.1, 1.2, 1.5, 2.0, 3.0])
def test_band_edges_count_as_kl_on(dtype, delta):
    """q exactly delta or 1/delta: m = 1; one ulp inside: m = 0."""
    ld = torch.tensor(math.log(delta), dtype=dtype)
    inside = torch.nextafter(ld, torch.zeros((), dtype=dtype))
    log_q = torch.stack([ld, -ld, inside, -inside])
    gl = log_q.clone().requires_grad_()  # learner_logp = 0, so log q = guider_logp exactly
    ll = torch.zeros(4, dtype=dtype)
    kl = torch.ones(4, dtype=dtype, requires_grad=True)
    magpo_guider_loss(gl, torch.zeros(4, dtype=dtype), ll, torch.zeros(4, dtype=dtype), kl, delta=delta).backward()
    assert kl.grad.tolist() == [0.25, 0.25, 0.0, 0.0]
    stats = magpo_band_stats(gl, ll, delta)
    assert stats["kl_on_frac"].item() == 0.5


def test_edge_sample_value_is_continuous():
    """At the edge q = delta, c = clip(delta pi / mu_old) = rho_g: the loss is continuous there and
    its gradient lies between the one-sided ones (outside: 0; inside: -A rho_g)."""
    delta = 1.1
    gl = torch.tensor([math.log(delta)], dtype=F64, requires_grad=True)
    z = torch.zeros(1, dtype=F64)
    loss = magpo_guider_loss(gl, z, z, torch.ones(1, dtype=F64), z, delta=delta)
    loss.backward()
    assert loss.item() == pytest.approx(-delta, rel=1e-14)
    assert -delta <= gl.grad.item() <= 0.0


# ---------------------------------------------------------------------------------- CTDS special


@pytest.mark.parametrize("mask_kind", [None, "float01", "bool", "weights"])
@pytest.mark.parametrize("seed", [3, 4])
def test_ctds_guider_is_ppo_clip(mask_kind, seed):
    """delta = inf: exactly ppo_clip_loss in value and gradient, whatever the KL holds."""
    gl, gl_old, ll, adv, kl, masks = _data(seed, spread=1.0)
    mask = None if mask_kind is None else masks[mask_kind]
    kl = kl.detach() * 1e6
    kl[0, 0, 0], kl[1, 0, 0] = float("inf"), float("nan")
    kl.requires_grad_()
    loss = magpo_guider_loss(gl, gl_old, ll, adv, kl, 0.2, float("inf"), mask)
    loss.backward()
    gl_ppo = gl.detach().clone().requires_grad_()
    ref = ppo_clip_loss(gl_ppo, gl_old, adv, 0.2, mask)
    ref.backward()
    assert loss.item() == ref.item()
    assert torch.equal(gl.grad, gl_ppo.grad)
    assert torch.isfinite(loss) and (kl.grad == 0).all()


def test_ctds_learner_is_masked_mean_kl():
    _, gl_old, ll, adv, kl, masks = _data(5, spread=1.0)
    ll.requires_grad_()
    for mask in (None, masks["float01"], masks["bool"], masks["weights"]):
        kl.grad = None
        loss = magpo_learner_loss(ll, gl_old, adv, kl, rl_coef=0.0, mask=mask)
        if mask is None:
            expected = kl.mean()
        else:
            w = mask.double()
            expected = (kl * w).sum() / w.sum()
        assert loss.item() == pytest.approx(expected.item(), rel=1e-14)
        loss.backward()
        w = torch.ones(SHAPE, dtype=F64) if mask is None else mask.double()
        torch.testing.assert_close(kl.grad, w / w.sum(), rtol=1e-14, atol=0.0)


# -------------------------------------------------------------------------------- mask hygiene


@pytest.mark.parametrize("mask_kind", ["float01", "bool"])
def test_masked_garbage_does_not_leak(mask_kind):
    gl, gl_old, ll, adv, kl, masks = _data(6)
    mask = masks[mask_kind]
    off = mask == 0
    clean_g = magpo_guider_loss(gl, gl_old, ll, adv, kl, mask=mask)
    clean_l = magpo_learner_loss(gl, gl_old, adv, kl, mask=mask)
    (clean_g + clean_l).backward()
    clean_grad, clean_kl_grad = gl.grad.clone(), kl.grad.clone()

    def dirty(x, value):
        return torch.where(off, torch.full_like(x, value), x.detach())

    gl_d = dirty(gl, float("nan")).requires_grad_()
    kl_d = dirty(kl, float("inf")).requires_grad_()
    args = (dirty(gl_old, float("-inf")), dirty(ll, float("nan")), dirty(adv, float("inf")))
    loss_g = magpo_guider_loss(gl_d, args[0], args[1], args[2], kl_d, mask=mask)
    loss_l = magpo_learner_loss(gl_d, args[0], args[2], kl_d, mask=mask)
    assert loss_g.item() == pytest.approx(clean_g.item(), rel=1e-14)
    assert loss_l.item() == pytest.approx(clean_l.item(), rel=1e-14)
    (loss_g + loss_l).backward()
    assert torch.equal(gl_d.grad, clean_grad) and torch.equal(kl_d.grad, clean_kl_grad)
    stats = magpo_band_stats(gl_d, args[1], 1.5, mask)
    ref = magpo_band_stats(gl, ll, 1.5, mask)
    assert all(torch.isfinite(v) and v.item() == pytest.approx(ref[k].item()) for k, v in stats.items())


def test_non_finite_kl_is_ignored_inside_the_band():
    """m = 0 selects the KL away (not 0 * KL), so an inf KL of an in-band sample cannot give NaN."""
    gl = torch.tensor([0.1, 1.0], dtype=F64, requires_grad=True)  # |log q| = 0.1 < log 1.5 < 1.0
    z = torch.zeros(2, dtype=F64)
    kl = torch.tensor([float("inf"), 2.0], dtype=F64, requires_grad=True)
    loss = magpo_guider_loss(gl, z, z, torch.ones(2, dtype=F64), kl, delta=1.5)
    loss.backward()
    assert loss.item() == pytest.approx((-math.exp(0.1) - 1.2 + 2.0) / 2, rel=1e-14)
    assert torch.isfinite(gl.grad).all() and kl.grad.tolist() == [0.0, 0.5]


def test_all_zero_mask_gives_zero_and_finite_grads():
    gl, gl_old, ll, adv, kl, _ = _data(7)
    mask = torch.zeros(SHAPE, dtype=torch.bool)
    loss = magpo_guider_loss(gl, gl_old, ll, adv, kl, mask=mask) + magpo_learner_loss(gl, gl_old, adv, kl, mask=mask)
    loss.backward()
    assert loss.item() == 0.0 and (gl.grad == 0).all() and (kl.grad == 0).all()
    stats = magpo_band_stats(gl, ll, 1.5, mask)
    assert all(v.item() == 0.0 for v in stats.values())


def test_broadcast_adv_kl_and_mask():
    gl, gl_old, ll, adv, kl, _ = _data(8)
    team_adv = adv[..., :1]  # [T, E, 1]
    env_mask = (torch.arange(SHAPE[1]) != 1).double()[None, :, None]  # [1, E, 1]
    loss = magpo_guider_loss(gl, gl_old, ll, team_adv, kl, mask=env_mask)
    ref, _, _ = _ref_guider(gl, gl_old, ll, team_adv, kl, env_mask, 0.2, 1.5)
    assert loss.item() == pytest.approx(ref, rel=1e-12)
    loss = magpo_learner_loss(ll, gl_old, team_adv, kl, mask=env_mask)
    ref, _, _ = _ref_learner(ll, gl_old, team_adv, kl, env_mask, 0.2, 1.0)
    assert loss.item() == pytest.approx(ref, rel=1e-12)


# ------------------------------------------------------------------------------------- extremes


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_extreme_log_prob_differences_stay_finite(dtype):
    vals = [-1000.0, 0.0, 1000.0]
    rows = [(g, go, lp, a) for g in vals for go in vals for lp in vals for a in (-1.0, 1.0)]
    gl, gl_old, ll, adv = (torch.tensor(c, dtype=dtype) for c in zip(*rows))
    gl.requires_grad_()
    ll.requires_grad_()
    kl_g = 1e-3 * (gl - ll.detach()) ** 2
    for delta in (1.5, float("inf")):
        gl.grad = None
        loss = magpo_guider_loss(gl, gl_old, ll, adv, kl_g, delta=delta)
        loss.backward(retain_graph=True)
        assert torch.isfinite(loss) and torch.isfinite(gl.grad).all()
    loss = magpo_learner_loss(ll, gl_old, adv, 1e-3 * (ll - gl.detach()) ** 2)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(ll.grad).all()
    stats = magpo_band_stats(gl, ll, 1.5)
    assert all(torch.isfinite(v) for v in stats.values())
    assert stats["abs_log_ratio_max"].item() == 2000.0
    # log space: |log q| = 1000 is KL-on, log q = 0 (both logps at +-1000) is not
    on = [abs(g - lp) >= math.log(1.5) for g, _, lp, _ in rows]
    assert stats["kl_on_frac"].item() == pytest.approx(sum(on) / len(on))


# ------------------------------------------------------------------------------------ band stats


@pytest.mark.parametrize("mask_kind", [None, "float01", "bool", "weights"])
def test_band_stats_against_reference(mask_kind):
    gl, _, ll, _, _, masks = _data(9)
    mask = None if mask_kind is None else masks[mask_kind]
    delta = 1.3
    stats = magpo_band_stats(gl, ll, delta, mask)
    assert set(stats) == {"abs_log_ratio_mean", "abs_log_ratio_max", "kl_on_frac"}
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    w = _weights(mask, SHAPE)
    rows = [(abs(g - lp), wi) for g, lp, wi in zip(_flat(gl, SHAPE), _flat(ll, SHAPE), w) if wi]
    n = sum(wi for _, wi in rows)
    assert stats["abs_log_ratio_mean"].item() == pytest.approx(sum(x * wi for x, wi in rows) / n, rel=1e-12)
    assert stats["abs_log_ratio_max"].item() == pytest.approx(max(x for x, _ in rows), rel=1e-14)
    on = sum(wi for x, wi in rows if math.exp(x) >= delta) / n
    assert stats["kl_on_frac"].item() == pytest.approx(on, rel=1e-12)
    assert 0 < on < 1
    assert magpo_band_stats(gl, ll, float("inf"), mask)["kl_on_frac"].item() == 0.0


# ----------------------------------------------------------------------------------- validation


def test_bad_arguments_raise_one_line_value_errors():
    z = torch.zeros(8)
    bad = [
        (lambda: magpo_guider_loss(z, z, z, z, z, delta=1.0), "delta"),
        (lambda: magpo_guider_loss(z, z, z, z, z, delta=0.5), "delta"),
        (lambda: magpo_guider_loss(z, z, z, z, z, delta=float("nan")), "delta"),
        (lambda: magpo_guider_loss(z, z, z, z, z, clip=0.0), "clip"),
        (lambda: magpo_guider_loss(z, z, z, z, z, clip=1.0), "clip"),
        (lambda: magpo_learner_loss(z, z, z, z, clip=-0.1), "clip"),
        (lambda: magpo_learner_loss(z, z, z, z, rl_coef=-1.0), "rl_coef"),
        (lambda: magpo_learner_loss(z, z, z, z, rl_coef=float("inf")), "rl_coef"),
        (lambda: magpo_band_stats(z, z, 1.0), "delta"),
        (lambda: magpo_guider_loss(z, torch.zeros(8, 1), z, z, z), "guider_logp_old"),
        (lambda: magpo_guider_loss(z, z, torch.zeros(8, 1), z, z), "learner_logp"),
        (lambda: magpo_guider_loss(z, z, z, torch.zeros(8, 1), z), "adv"),
        (lambda: magpo_guider_loss(z, z, z, z, torch.zeros(7)), "kl_guider_learner"),
        (lambda: magpo_guider_loss(z, z, z, z, z, mask=torch.ones(8, 1)), "mask"),
        (lambda: magpo_learner_loss(z, torch.zeros(3), z, z), "guider_logp_old"),
        (lambda: magpo_learner_loss(z, z, torch.zeros(8, 1), z), "adv"),
        (lambda: magpo_learner_loss(z, z, z, torch.zeros(8, 1)), "kl_learner_guider"),
        (lambda: magpo_learner_loss(z, z, z, z, mask=torch.ones(2)), "mask"),
        (lambda: magpo_band_stats(z, torch.zeros(8, 1), 1.5), "learner_logp"),
    ]
    for call, match in bad:
        with pytest.raises(ValueError, match=match) as info:
            call()
        assert "\n" not in str(info.value)


def test_defaults_are_the_authors_clip_delta_and_rl_coef():
    gl, gl_old, ll, adv, kl, _ = _data(10)
    assert magpo_guider_loss(gl, gl_old, ll, adv, kl).item() == magpo_guider_loss(
        gl, gl_old, ll, adv, kl, clip=0.2, delta=1.5, mask=None
    ).item()
    assert magpo_learner_loss(ll, gl_old, adv, kl).item() == magpo_learner_loss(
        ll, gl_old, adv, kl, clip=0.2, rl_coef=1.0, mask=None
    ).item()
