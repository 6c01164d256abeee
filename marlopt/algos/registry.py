"""The one algorithm registry: update-rule name -> lazily imported class.

An algorithm is a YAML in ``configs/algo/`` naming its ``rule`` (one of :data:`UPDATE_RULES`) and
its hyperparameters (typed by a schema in :mod:`marlopt.config`). Adding an objective means one
loss function, at most one rule here, and one YAML.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch

from marlopt.envs.base import EnvSpec

UPDATE_RULES: dict[str, str] = {
    "simultaneous": "marlopt.algos.simultaneous:SimultaneousRule",
    "sequential": "marlopt.algos.sequential:SequentialRule",
    "consensus": "marlopt.algos.consensus:ConsensusRule",
}


def rule_class(name: str) -> type:
    if name not in UPDATE_RULES:
        raise ValueError(f"algo.rule: unknown update rule {name!r}; choose from {', '.join(sorted(UPDATE_RULES))}")
    module, attr = UPDATE_RULES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def build_rule(spec: EnvSpec, algo: Any, model: Any, device: torch.device) -> Any:
    """Instantiate the update rule named by ``algo.rule`` for an env with ``spec``."""
    return rule_class(algo.rule)(spec, algo, model, device)
