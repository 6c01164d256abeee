"""GPVD: simhash and gpvd_weights against plain-Python references written from the definitions
(docs/algorithms/gpvd.md; ARCHITECTURE.md "Exact meaning of the wave-2 functions")."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import marlopt
from marlopt.objectives import gpvd_weights, simhash

F64 = torch.float64
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


# ---------------------------------------------------------------- simhash


def _ref_simhash(states, projection):
    """Per state, bit j = 1 where the explicit dot product with row j is > 0."""
    k, d = projection.shape
    rows = states.reshape(-1, d).tolist()
    proj = projection.tolist()
    codes = []
    for s in rows:
        code = 0
        for j in range(k):
            dot = sum(a * b for a, b in zip(proj[j], s))
            if dot > 0:
                code += 2**j
        codes.append(code)
    return torch.tensor(codes, dtype=torch.int64).reshape(states.shape[:-1])


def test_simhash_matches_loop_reference_with_exact_zero_projections():
    # small integers in float64: the dot products are exact, many of them exactly 0 (bit 0)
    g = torch.Generator().manual_seed(0)
    states = torch.randint(-2, 3, (3, 4, 5), generator=g).to(F64)
    projection = torch.randint(-1, 2, (7, 5), generator=g).to(F64)
    codes = simhash(states, projection)
    ref = _ref_simhash(states, projection)
    assert (states @ projection.T == 0).any()  # the convention "0 is not positive" is exercised
    assert codes.dtype == torch.int64 and codes.shape == (3, 4)
    assert torch.equal(codes, ref)


@settings(max_examples=100, deadline=None)
@given(
    lead=st.lists(st.integers(0, 3), min_size=0, max_size=3),
    d=st.integers(1, 6),
    k=st.integers(1, 62),
    seed=st.integers(0, 2**31 - 1),
)
def test_simhash_matches_loop_reference_for_any_leading_shape(lead, d, k, seed):
    g = torch.Generator().manual_seed(seed)
    states = torch.randint(-3, 4, (*lead, d), generator=g).to(F64)
    projection = torch.randint(-2, 3, (k, d), generator=g).to(F64)
    codes = simhash(states, projection)
    assert codes.shape == tuple(lead) and codes.dtype == torch.int64
    assert torch.equal(codes, _ref_simhash(states, projection))
    assert bool((codes >= 0).all()) and bool((codes < 2**k).all())


def test_simhash_gaussian_projection_float32_states():
    g = torch.Generator().manual_seed(1)
    states = torch.randn(50, 8, generator=g)
    projection = torch.randn(32, 8, generator=g, dtype=F64)
    codes = simhash(states, projection)
    ref = _ref_simhash(states.double(), projection)
    margin = (states.double() @ projection.T).abs().min()
    assert margin > 1e-6  # no sign is ambiguous in float32
    assert torch.equal(codes, ref)
    # the code depends only on the sign pattern: a positive scaling of a state keeps it
    assert torch.equal(simhash(states * 3.7, projection), codes)
    # integer-typed states are accepted
    assert torch.equal(simhash(states.round().to(torch.int32), projection),
                       _ref_simhash(states.round().double(), projection))


def test_simhash_equal_states_equal_codes_distinct_patterns_distinct_codes():
    g = torch.Generator().manual_seed(2)
    projection = torch.randn(32, 6, generator=g)
    base = torch.randn(10, 6, generator=g)
    states = torch.cat([base, base[[3, 3, 7]]])  # repeats
    codes = simhash(states, projection)
    assert codes[10] == codes[3] and codes[11] == codes[3] and codes[12] == codes[7]

    # identity projection: every sign pattern of 5 coordinates is its own code, = its bit integer
    k = 5
    patterns = torch.tensor(list(itertools.product([0, 1], repeat=k)), dtype=F64)  # 32 patterns
    states = torch.where(patterns > 0, 1.0, -1.0)
    codes = simhash(states, torch.eye(k, dtype=F64))
    expected = (patterns.long() * 2 ** torch.arange(k)).sum(-1)
    assert torch.equal(codes, expected)
    assert codes.unique().numel() == 2**k

    # all 62 bits are usable and stay non-negative
    state = torch.ones(1, 62)
    assert simhash(state, torch.eye(62)).item() == 2**62 - 1
    top = torch.full((1, 62), -1.0)
    top[0, 61] = 1.0
    assert simhash(top, torch.eye(62)).item() == 2**61


def test_simhash_validation():
    with pytest.raises(ValueError, match=r"k <= 62"):
        simhash(torch.zeros(4, 3), torch.randn(63, 3))
    with pytest.raises(ValueError, match=r"k <= 62"):
        simhash(torch.zeros(4, 3), torch.randn(64, 3))
    with pytest.raises(ValueError, match="D = 3"):
        simhash(torch.zeros(4, 5), torch.randn(8, 3))
    with pytest.raises(ValueError, match=r"\[k, D\]"):
        simhash(torch.zeros(4, 3), torch.randn(3))
    assert simhash(torch.zeros(0, 3), torch.randn(8, 3)).shape == (0,)
    assert simhash(torch.ones(3), torch.ones(2, 3)).item() == 3  # no leading dim: a scalar code


@CUDA
def test_simhash_on_cuda_matches_cpu():
    g = torch.Generator().manual_seed(3)
    states = torch.randint(-3, 4, (4, 16, 10), generator=g).float()
    projection = torch.randint(-2, 3, (32, 10), generator=g).float()
    codes = simhash(states.cuda(), projection.cuda())
    assert codes.device.type == "cuda" and codes.dtype == torch.int64
    assert torch.equal(codes.cpu(), _ref_simhash(states.double(), projection.double()))


# ---------------------------------------------------------------- gpvd_weights


def _ref_weights(codes, acts, y, err, greedy, alpha, optimal_weight=1.0, valid=None):
    """Straight from the definition: per group, candidates, c* (first index of the highest target
    among candidates), then interfering / a^{c*} samples."""
    codes, acts, y, err, greedy = (x.tolist() for x in (codes, acts, y, err, greedy))
    B = len(codes)
    valid = [True] * B if valid is None else [bool(v) for v in valid.tolist()]
    w = [1.0] * B
    for code in set(codes):
        members = [i for i in range(B) if codes[i] == code and valid[i]]
        candidates = [i for i in members if y[i] > greedy[i]]
        if not candidates:
            continue
        c = candidates[0]
        for i in candidates:
            if y[i] > y[c]:
                c = i
        for i in members:
            if acts[i] == acts[c]:
                w[i] = optimal_weight
            elif any(a == b for a, b in zip(acts[i], acts[c])) and err[i] * err[c] < 0:
                w[i] = alpha
    return torch.tensor(w, dtype=F64)


def _hand_batch():
    """Three groups (codes 5, 9, 7), two agents. See the comments for each sample's role."""
    rows = [
        # code, joint action, y, greedy, td error
        (5, (0, 0), 1.0, 2.0, 1.0),    # 0  A: not a candidate, shares no action with c*   -> 1
        (5, (1, 1), 3.0, 0.0, -1.0),   # 1  A: candidate, y = 3, first of the tie -> c*      -> a^{c*}
        (5, (1, 2), 0.0, 1.0, 0.0),    # 2  A: shares agent 0, zero TD error                 -> 1
        (5, (2, 2), 3.0, 0.0, 1.0),    # 3  A: candidate tied with 1 but later; shares none  -> 1
        (5, (2, 0), 0.0, 1.0, -1.0),   # 4  A: would interfere with 3, shares none with 1    -> 1
        (5, (1, 0), 0.0, 1.0, 1.0),    # 5  A: shares agent 0 with c*, opposite sign         -> alpha
        (5, (0, 1), 0.0, 1.0, -2.0),   # 6  A: shares agent 1 with c*, same sign             -> 1
        (5, (1, 1), -1.0, 0.0, 5.0),   # 7  A: same joint action as c*                       -> a^{c*}
        (9, (1, 0), 0.0, 1.0, 1.0),    # 8  B: no candidates (would interfere with A's c*)   -> 1
        (9, (1, 1), -1.0, 0.0, -1.0),  # 9  B: no candidates                                 -> 1
        (7, (0, 0), 10.0, 1.0, 2.0),   # 10 C: the only candidate -> c* (highest y overall)  -> a^{c*}
        (7, (0, 1), 0.0, 1.0, -1.0),   # 11 C: shares agent 0, opposite sign                 -> alpha
        (7, (1, 0), 0.0, 1.0, 1.0),    # 12 C: shares agent 1, same sign as C's c*; opposite
                                       #       to A's c* (1, 1) with which it shares agent 0 -> 1
        (7, (1, 1), 0.0, 1.0, -3.0),   # 13 C: opposite sign but shares no action            -> 1
    ]
    codes = torch.tensor([r[0] for r in rows])
    acts = torch.tensor([r[1] for r in rows])
    y, greedy, err = (torch.tensor([r[i] for r in rows], dtype=F64) for i in (2, 3, 4))
    return codes, acts, y, err, greedy


def test_hand_built_cases():
    codes, acts, y, err, greedy = _hand_batch()
    a = 0.2
    expected = torch.tensor([1, 1, 1, 1, 1, a, 1, 1, 1, 1, 1, a, 1, 1], dtype=F64)
    w = gpvd_weights(codes, acts, y, err, greedy)  # alpha defaults to 0.2
    assert torch.equal(w, expected)
    assert torch.equal(expected, _ref_weights(codes, acts, y, err, greedy, a))

    # optimal_weight lands on the a^{c*} samples of the groups with candidates only (1, 7, 10)
    w = gpvd_weights(codes, acts, y, err, greedy, alpha=0.5, optimal_weight=2.0)
    expected = torch.tensor([1, 2, 1, 1, 1, 0.5, 1, 2, 1, 1, 2, 0.5, 1, 1], dtype=F64)
    assert torch.equal(w, expected)

    # the tie decides: with sample 3 first, c* = 3 (2, 2) and sample 4 (2, 0) interferes, 5 no more
    order = [0, 3, 2, 1, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
    w = gpvd_weights(codes[order], acts[order], y[order], err[order], greedy[order], alpha=a)
    expected = torch.tensor([1, 1, 1, 1, a, 1, 1, 1, 1, 1, 1, a, 1, 1], dtype=F64)
    assert torch.equal(w, expected)


def test_valid_mask_excludes_padding_from_candidates_and_c_star():
    codes, acts, y, err, greedy = _hand_batch()
    a = 0.2
    valid = torch.ones(14, dtype=torch.bool)
    valid[1] = False  # A's c* is padding: c* becomes sample 3 (2, 2), TD error +1
    w = gpvd_weights(codes, acts, y, err, greedy, a, valid=valid)
    expected = torch.tensor([1, 1, 1, 1, a, 1, 1, 1, 1, 1, 1, a, 1, 1], dtype=F64)
    assert torch.equal(w, expected)
    assert torch.equal(w, _ref_weights(codes, acts, y, err, greedy, a, valid=valid))

    # a padded sample with a huge target is never c*, and would-be interfering padding gets 1
    codes2 = torch.cat([codes, torch.tensor([7, 7])])
    acts2 = torch.cat([acts, torch.tensor([[0, 1], [0, 2]])])
    y2 = torch.cat([y, torch.tensor([100.0, 0.0], dtype=F64)])
    err2 = torch.cat([err, torch.tensor([-1.0, -1.0], dtype=F64)])
    greedy2 = torch.cat([greedy, torch.tensor([0.0, 1.0], dtype=F64)])
    valid2 = torch.cat([torch.ones(14, dtype=torch.bool), torch.tensor([False, False])])
    w2 = gpvd_weights(codes2, acts2, y2, err2, greedy2, a, valid=valid2)
    torch.testing.assert_close(w2[:14], gpvd_weights(codes, acts, y, err, greedy, a), rtol=0, atol=0)
    assert w2[14:].tolist() == [1.0, 1.0]
    # ...whereas the same sample, valid, becomes C's c* and changes the weights
    w3 = gpvd_weights(codes2, acts2, y2, err2, greedy2, a)
    assert not torch.equal(w3[:14], w2[:14])
    assert torch.equal(w3, _ref_weights(codes2, acts2, y2, err2, greedy2, a))


def test_group_without_candidates_is_all_ones_and_groups_are_independent():
    codes = torch.tensor([3, 3, 3])
    acts = torch.tensor([[0, 1], [0, 2], [1, 1]])
    err = torch.tensor([1.0, -1.0, -1.0])
    # nobody beats the greedy value (equal is not a candidate)
    w = gpvd_weights(codes, acts, torch.tensor([1.0, 0.0, 2.0]), err, torch.tensor([1.0, 5.0, 2.0]))
    assert w.tolist() == [1.0, 1.0, 1.0]
    # one candidate (sample 0): samples 1 and 2 each share an action, opposite TD error -> alpha
    w = gpvd_weights(codes, acts, torch.tensor([1.5, 0.0, 2.0]), err, torch.tensor([1.0, 5.0, 2.0]), 0.3)
    torch.testing.assert_close(w, torch.tensor([1.0, 0.3, 0.3]))
    # the same samples split over three codes: each is alone in its group, nobody interferes
    y, greedy = torch.tensor([1.5, 0.0, 2.0]), torch.tensor([1.0, 5.0, 2.0])
    w = gpvd_weights(torch.tensor([1, 2, 3]), acts, y, err, greedy, 0.3)
    assert w.tolist() == [1.0, 1.0, 1.0]


@st.composite
def batches(draw):
    B = draw(st.integers(0, 14))
    N = draw(st.integers(1, 3))
    n_codes = draw(st.integers(1, 3))
    small = st.sampled_from([-2.0, -1.0, 0.0, 0.5, 1.0, 2.0])
    codes = draw(st.lists(st.sampled_from([-(2**61), 0, 5, 2**61][:n_codes + 1]), min_size=B, max_size=B))
    acts = draw(st.lists(st.lists(st.integers(0, 2), min_size=N, max_size=N), min_size=B, max_size=B))
    y = draw(st.lists(small, min_size=B, max_size=B))
    greedy = draw(st.lists(small, min_size=B, max_size=B))
    err = draw(st.lists(small, min_size=B, max_size=B))
    valid = draw(st.none() | st.lists(st.booleans(), min_size=B, max_size=B))
    return (
        torch.tensor(codes, dtype=torch.int64),
        torch.tensor(acts, dtype=torch.int64).reshape(B, N),
        torch.tensor(y, dtype=F64),
        torch.tensor(err, dtype=F64),
        torch.tensor(greedy, dtype=F64),
        None if valid is None else torch.tensor(valid, dtype=torch.bool),
    )


@settings(max_examples=400, deadline=None)
@given(batch=batches(), alpha=st.sampled_from([0.0, 0.2, 0.5]), optimal=st.sampled_from([1.0, 1.5]))
def test_matches_loop_reference_on_random_batches(batch, alpha, optimal):
    codes, acts, y, err, greedy, valid = batch
    w = gpvd_weights(codes, acts, y, err, greedy, alpha, optimal_weight=optimal, valid=valid)
    ref = _ref_weights(codes, acts, y, err, greedy, alpha, optimal, valid)
    assert w.shape == (codes.shape[0],) and w.dtype == F64
    assert torch.equal(w, ref)
    if valid is not None:  # invalid samples change nothing: same as the valid subset alone
        sub = gpvd_weights(codes[valid], acts[valid], y[valid], err[valid], greedy[valid], alpha,
                           optimal_weight=optimal)
        assert torch.equal(w[valid], sub)
        assert bool((w[~valid] == 1).all())


def test_dtype_device_no_grad_and_integer_inputs():
    codes, acts, y, err, greedy = _hand_batch()
    y32 = y.float().requires_grad_()
    err32 = (err.float() * 1.0).requires_grad_()
    w = gpvd_weights(codes.to(torch.int32), acts.to(torch.uint8), y32, err32, greedy.float())
    assert w.dtype == torch.float32 and not w.requires_grad and w.grad_fn is None
    torch.testing.assert_close(w.double(), _ref_weights(codes, acts, y, err, greedy, 0.2))
    with torch.no_grad():
        w_ng = gpvd_weights(codes, acts, y, err, greedy)
    assert torch.equal(w_ng, _ref_weights(codes, acts, y, err, greedy, 0.2))
    # simhash codes feed straight in
    states = torch.randn(14, 4, generator=torch.Generator().manual_seed(0))
    hashed = simhash(states, torch.randn(8, 4, generator=torch.Generator().manual_seed(1)))
    assert torch.equal(gpvd_weights(hashed, acts, y, err, greedy),
                       _ref_weights(hashed, acts, y, err, greedy, 0.2))
    # re-exported at the top level
    assert marlopt.gpvd_weights is gpvd_weights and marlopt.simhash is simhash


def test_gpvd_weights_validation():
    codes, acts, y, err, greedy = _hand_batch()
    with pytest.raises(ValueError, match="joint_actions"):
        gpvd_weights(codes, acts[:, 0], y, err, greedy)
    with pytest.raises(ValueError, match="td_errors"):
        gpvd_weights(codes, acts, y, err[:-1], greedy)
    with pytest.raises(ValueError, match="greedy_values"):
        gpvd_weights(codes, acts, y, err, greedy[:, None])
    with pytest.raises(ValueError, match="valid"):
        gpvd_weights(codes, acts, y, err, greedy, valid=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="codes"):
        gpvd_weights(codes.double(), acts, y, err, greedy)
    with pytest.raises(ValueError, match="alpha"):
        gpvd_weights(codes, acts, y, err, greedy, alpha=-0.1)
    with pytest.raises(ValueError, match="optimal_weight"):
        gpvd_weights(codes, acts, y, err, greedy, optimal_weight=float("inf"))


@CUDA
def test_gpvd_weights_on_cuda_matches_reference():
    g = torch.Generator().manual_seed(4)
    B, N = 512, 3
    codes = torch.randint(0, 6, (B,), generator=g)
    acts = torch.randint(0, 3, (B, N), generator=g)
    y = torch.randint(-3, 4, (B,), generator=g).float()
    greedy = torch.randint(-3, 4, (B,), generator=g).float()
    err = torch.randint(-2, 3, (B,), generator=g).float()
    valid = torch.rand(B, generator=g) > 0.2
    w = gpvd_weights(codes.cuda(), acts.cuda(), y.cuda(), err.cuda(), greedy.cuda(), valid=valid.cuda())
    assert w.device.type == "cuda" and w.dtype == torch.float32
    assert torch.equal(w.cpu().double(), _ref_weights(codes, acts, y, err, greedy, 0.2, valid=valid))
