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
