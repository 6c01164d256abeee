"""Shared update machinery: minibatching against the plain way of doing it. (Adam and gradient
clipping, which live in marlopt.optim, are tested in tests/test_optim.py.)"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from marlopt.algos.base import Chunks, OnPolicyRule


def _chunks(length: int, sequences: int) -> Chunks:
    g = torch.Generator().manual_seed(1)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(length, sequences, *shape, generator=g)

    return Chunks(obs=r(3, 4), state=r(1, 6), avail=r(3, 2) > 0, actions=r(3), logp=r(3), values=r(1),
                  active=r(3) > 0, critic_active=r(1) > 0, starts=r(1), advantages=r(3), returns=r(1),
                  h_actor=torch.randn(sequences, 3, 8, generator=g), h_critic=None)


def test_minibatches_are_the_gathered_chunks_of_one_permutation():
    """Slices of the once-shuffled data = gathering each ``perm.chunk(k)`` separately (the plain way)."""
    rule = OnPolicyRule.__new__(OnPolicyRule)  # only the config is needed for minibatching
    rule.cfg = SimpleNamespace(num_minibatches=4)
    chunks = _chunks(length=5, sequences=22)  # 22 sequences -> minibatches of 6, 6, 6, 4
    torch.manual_seed(3)
    got = list(rule.minibatches(chunks))
    torch.manual_seed(3)
    expected = [chunks.select(i) for i in torch.randperm(22).chunk(4)]
    assert [mb.num_sequences for mb in got] == [6, 6, 6, 4]
    for mb, ref in zip(got, expected):
        for name in ("obs", "state", "avail", "actions", "advantages", "h_actor"):
            assert torch.equal(getattr(mb, name), getattr(ref, name)), name
        assert mb.h_critic is None


# -- ValueNorm updated per minibatch (algo.value_norm_update=minibatch) -----------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from marlopt.buffers import RolloutBatch  # noqa: E402


class _ReferenceValueNorm:
    """The MAPPO reference's ``ValueNorm`` (``onpolicy/utils/valuenorm.py``: ``update`` folds the
    batch mean and mean of squares with weight β, debiased statistics, variance floored at 1e-2)
    in float64 numpy, the batch moments over the counted samples (marlopt's mask)."""

    def __init__(self, beta: float = 0.99999, eps: float = 1e-5):
        self.beta, self.eps = beta, eps
        self.m = self.s = self.d = 0.0
        self.updates = 0

    def update(self, x: np.ndarray, mask: np.ndarray) -> None:
        w = np.broadcast_to(mask, x.shape).astype(np.float64)
        if w.sum() == 0:
            return
        mean, mean_sq = (w * x).sum() / w.sum(), (w * x * x).sum() / w.sum()
        self.m = self.beta * self.m + (1 - self.beta) * mean
        self.s = self.beta * self.s + (1 - self.beta) * mean_sq
        self.d = self.beta * self.d + (1 - self.beta)
        self.updates += 1

    def normalize(self, x: np.ndarray) -> np.ndarray:
        d = max(self.d, self.eps)
        mean = self.m / d
        var = max(self.s / d - mean**2, 1e-2)
        return (x - mean) / np.sqrt(var)


def _minibatch_rule(algo: str, mode: str = "minibatch"):
    from marlopt.algos.registry import build_rule
    from tests.algos.test_sequential import SPEC
    from tests.helpers import make_config

    cfg = make_config(f"algo={algo}", "env=games", "map=harl_example1", "model.recurrent=false",
                      "algo.num_minibatches=4", "algo.ppo_epochs=2", f"algo.value_norm_update={mode}",
                      *(["algo.critic_epochs=3"] if algo == "happo" else []))
    torch.manual_seed(0)
    return build_rule(SPEC, cfg.algo, cfg.model, torch.device("cpu")), cfg


@pytest.mark.parametrize("algo", ["mappo", "happo"])
def test_value_norm_per_minibatch_equals_the_reference_loop(algo):
    """Every critic step first folds its minibatch's raw returns into ValueNorm (critic-active
    samples), then regresses on those returns normalised with the just-updated statistics (the
    MAPPO reference's ``cal_value_loss``); replayed on a copy by a loop written that way."""
    import dataclasses

    from tests.algos.test_sequential import SPEC, random_chunks

    rule, cfg = _minibatch_rule(algo)
    g = torch.Generator().manual_seed(7)
    chunks = random_chunks(SPEC, C=40)
    critic_active = torch.rand(chunks.critic_active.shape, generator=g) > 0.3
    returns = 5.0 + 3.0 * torch.randn(chunks.returns.shape, generator=g)
    returns[~critic_active] = 1e3  # returns that do not count: they would swamp the statistics
    chunks = dataclasses.replace(chunks, returns=returns, critic_active=critic_active, returns_raw=True,
                                 values=0.5 * torch.randn(chunks.values.shape, generator=g))
    ref, _ = _minibatch_rule(algo)  # the same seed: the same networks and optimisers, fresh
    initial = [p.detach().clone() for p in rule.critic.parameters()]
    seen: list = []
    step = rule.critic_step

    def recording_step(mb):
        seen.append(mb)
        return step(mb)

    rule.critic_step = recording_step
    rule.update_policy(chunks)
    per_iteration = cfg.algo.critic_epochs if algo == "happo" else cfg.algo.ppo_epochs
    assert len(seen) == per_iteration * 4

    vn = _ReferenceValueNorm(rule.value_norm.beta, rule.value_norm.epsilon)
    params = list(ref.critic.parameters())
    for mb in seen:  # the reference's critic step on the same minibatches
        values, _ = ref.critic(mb.state, mb.h_critic, mb.starts)
        mask = mb.critic_active
        raw = mb.returns.double().numpy()
        vn.update(raw, mask.numpy())
        target = torch.from_numpy(vn.normalize(raw)).float()
        clipped = mb.values + (values - mb.values).clamp(-cfg.algo.value_clip, cfg.algo.value_clip)

        def huber(e, d=cfg.algo.huber_delta):
            return (e.abs() <= d).float() * e**2 / 2 + (e.abs() > d).float() * d * (e.abs() - d / 2)

        loss = torch.max(huber(target - values), huber(target - clipped))
        loss = (loss * mask).sum() / mask.sum() * cfg.algo.value_loss_coef
        ref.critic_optim.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.algo.max_grad_norm)
        ref.critic_optim.step()

    assert vn.updates == len(seen)
    mean, std = rule.value_norm.mean_std()
    d = max(vn.d, vn.eps)
    assert float(rule.value_norm.debiasing_term) == pytest.approx(vn.d, rel=1e-12)
    assert float(mean) == pytest.approx(vn.m / d, rel=1e-10)
    assert float(std) == pytest.approx(np.sqrt(max(vn.s / d - (vn.m / d) ** 2, 1e-2)), rel=1e-10)
    assert float(mean) == pytest.approx(5.0, abs=1.5), "the uncounted returns (1e3) stayed out"
    for got, want in zip(rule.critic.parameters(), ref.critic.parameters()):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(rule.critic.parameters(), initial)), "the critic moved"


def _rollout_batch(T: int = 6, E: int = 2, N: int = 3) -> RolloutBatch:
    g = torch.Generator().manual_seed(3)
    active = torch.rand(T, E, N, generator=g) > 0.2
    return RolloutBatch(
        obs=torch.randn(T, E, N, 4, generator=g), state=torch.randn(T, E, 1, 6, generator=g),
        avail=torch.ones(T, E, N, 3, dtype=torch.bool), actions=torch.randint(0, 3, (T, E, N), generator=g),
        logp=torch.randn(T, E, N, generator=g), rewards=2.0 + torch.randn(T, E, 1, generator=g),
        terminated=torch.rand(T, E, 1, generator=g) > 0.8, truncated=torch.zeros(T, E, 1, dtype=torch.bool),
        active=active, starts=torch.zeros(T, E, 1), h_actor=torch.zeros(T, E, N, 0),
        values=torch.randn(T, E, 1, generator=g), bootstrap_values=torch.randn(T, E, 1, generator=g),
    )


def test_value_norm_modes_prepare_the_same_advantages_and_raw_or_normalised_targets():
    """``batch`` (the default) updates ValueNorm in ``prepare`` and hands the critic normalised
    targets, as before; ``minibatch`` leaves ValueNorm alone there and hands over the returns in
    environment units, with the same advantages (GAE sees the same denormalised values)."""
    from marlopt.config import OnPolicyConfig
    from marlopt.returns import gae

    assert OnPolicyConfig.value_norm_update == "batch"
    batch_rule, _ = _minibatch_rule("mappo", "batch")
    mb_rule, _ = _minibatch_rule("mappo", "minibatch")
    warm = torch.randn(50, 1) * 4 + 1  # both start from the same non-trivial statistics
    for r in (batch_rule, mb_rule):
        r.value_norm.update(warm)
    before = {k: v.clone() for k, v in mb_rule.value_norm.state_dict().items()}
    batch = _rollout_batch()
    a, b = batch_rule.prepare(batch), mb_rule.prepare(batch)
    assert not a.returns_raw and b.returns_raw
    assert torch.equal(a.advantages, b.advantages)
    for k, v in mb_rule.value_norm.state_dict().items():
        assert torch.equal(v, before[k]), "minibatch mode: no update in prepare"
    _, raw = gae(batch.rewards.expand_as(batch.values), mb_rule.denormalise(batch.values),
                 mb_rule.denormalise(batch.bootstrap_values), batch.terminated, batch.truncated,
                 mb_rule.cfg.gamma, mb_rule.cfg.gae_lambda)
    assert torch.equal(b.returns, raw.reshape(b.returns.shape))
    assert torch.equal(a.returns, batch_rule.value_norm.normalize(raw).reshape(a.returns.shape))
    assert a.select(slice(0, 2)).returns_raw is False and b.select(slice(0, 2)).returns_raw is True
    assert batch_rule.critic_targets(a) is a.returns  # the default hands the targets over untouched


def test_value_norm_update_is_checked():
    from marlopt.config import ConfigError
    from tests.helpers import make_config

    with pytest.raises(ConfigError, match="algo.value_norm_update"):
        make_config("algo=mappo", "env=games", "map=harl_example1", "algo.value_norm_update=sometimes")
    cfg = make_config("algo=mappo", "env=games", "map=harl_example1", "algo.use_valuenorm=false",
                      "algo.value_norm_update=minibatch")
    from marlopt.algos.registry import build_rule
    from tests.algos.test_sequential import SPEC

    rule = build_rule(SPEC, cfg.algo, cfg.model, torch.device("cpu"))
    assert rule.value_norm is None and not rule.value_norm_per_minibatch  # nothing to update
