"""The one registry: update rules with their schema and family, and the runner of each family.

An algorithm is one YAML (``configs/algo/<name>.yaml``, or any directory a user adds with
``hydra.searchpath=[file://DIR]``) that names

- its ``family`` (``on_policy`` | ``off_policy``), which picks the runner (:data:`RUNNERS`),
- its ``rule``, a key of :data:`RULES`, whose schema (a dataclass of :mod:`marlopt.config`) types
  and checks its hyperparameters,
- for ratio objectives the loss itself, ``objective: {_target_: pkg.module.fn, _partial_: true}``.

So a new ratio objective is one function and one YAML; a new update rule is one class and one
:func:`register_rule` call (here for marlopt's own, anywhere for a plug-in). No other table in
marlopt names an algorithm. Classes are named by import path and imported when first used, so
reading the registry (the CLI's early checks) imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from marlopt.config import (
    AlgoConfig,
    ConfigError,
    GraspConfig,
    GuidedConfig,
    OnPolicyConfig,
    QLearningConfig,
    RatioConfig,
    SequentialConfig,
)

FAMILIES = ("on_policy", "off_policy")


@dataclass(frozen=True)
class RuleEntry:
    """An update rule: its class (``"module:Class"`` or the class), schema and family."""

    target: str | type
    schema: type
    family: str


#: Update rules by the name an algorithm YAML's ``rule`` uses.
RULES: dict[str, RuleEntry] = {}
#: The runner class of each family (``"module:Class"`` or the class).
RUNNERS: dict[str, str | type] = {}


def register_rule(name: str, target: str | type, schema: type, family: str) -> None:
    """Register (or replace) the update rule ``name``: ``target`` is its class or
    ``"module:Class"``, ``schema`` the dataclass typing its YAML (a subclass of ``AlgoConfig``)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)} (got {family!r})")
    if not (isinstance(schema, type) and issubclass(schema, AlgoConfig)):
        raise TypeError(f"the schema of rule {name!r} must be a dataclass deriving from marlopt.config.AlgoConfig")
    RULES[name] = RuleEntry(target, schema, family)


def register_runner(family: str, target: str | type) -> None:
    """Register (or replace) the runner of ``family`` (its class or ``"module:Class"``)."""
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(FAMILIES)} (got {family!r})")
    RUNNERS[family] = target


register_rule("simultaneous", "marlopt.algos.simultaneous:SimultaneousRule", RatioConfig, "on_policy")
register_rule("consensus", "marlopt.algos.consensus:ConsensusRule", GraspConfig, "on_policy")
register_rule("sequential", "marlopt.algos.sequential:SequentialRule", SequentialConfig, "on_policy")
register_rule("guided", "marlopt.algos.guided:GuidedRule", GuidedConfig, "on_policy")
register_rule("q_learning", "marlopt.algos.q_learning:QLearningRule", QLearningConfig, "off_policy")
register_runner("on_policy", "marlopt.runners.on_policy:OnPolicyRunner")
register_runner("off_policy", "marlopt.runners.off_policy:OffPolicyRunner")


def _load(target: str | type) -> type:
    if isinstance(target, type):
        return target
    module, attr = target.split(":")
    return getattr(importlib.import_module(module), attr)


def rule_entry(name: str) -> RuleEntry:
    if name not in RULES:
        raise ConfigError(f"algo.rule: unknown update rule {name!r}; registered: {', '.join(sorted(RULES))}")
    return RULES[name]


def rule_class(name: str) -> type:
    return _load(rule_entry(name).target)


def runner_class(family: str) -> type:
    if family not in RUNNERS:
        raise ConfigError(f"algo.family: no runner is registered for family {family!r} yet "
                          f"(available: {', '.join(sorted(RUNNERS))})")
    return _load(RUNNERS[family])


def check_algo(algo: AlgoConfig) -> None:
    """Everything about ``algo`` that can fail, checked before anything is built or written:
    the rule and its family, a runner for the family, and a ratio objective that imports and
    accepts ``(logp, logp_old, adv, mask=None)`` with its keyword arguments."""
    entry = rule_entry(algo.rule)
    if algo.family != entry.family:
        raise ConfigError(f"algo.family: rule {algo.rule!r} is {entry.family}, not {algo.family}; "
                          f"set family: {entry.family}")
    if not isinstance(algo, entry.schema):
        raise ConfigError(f"algo: rule {algo.rule!r} takes the schema {entry.schema.__name__}; name "
                          f"'{algo.rule}_schema' in the algorithm YAML's defaults list")
    runner_class(algo.family)
    if isinstance(algo, RatioConfig):
        objective_fn(algo)


def objective_fn(algo: RatioConfig) -> Any:
    """The ratio loss of ``algo`` as ``objective(logp, logp_old, adv, mask=...)``, tried once on a
    one-sample batch so that a bad import or keyword argument fails here, in one line."""
    import torch
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        fn = instantiate(algo.objective)
    except InstantiationException as exc:
        raise ConfigError(f"algo.objective: {str(exc).splitlines()[0]}") from None
    zero = torch.zeros(1)
    try:
        loss = fn(zero, zero, zero, mask=None)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"algo.objective ({algo.objective['_target_']}): {exc}") from None
    if not (isinstance(loss, torch.Tensor) and loss.dim() == 0):
        raise ConfigError(f"algo.objective ({algo.objective['_target_']}): must return a scalar tensor "
                          f"(got {type(loss).__name__})")
    return fn


def ratio_region(algo: RatioConfig, objective: Any) -> tuple[float, float]:
    """The nominal ratio region ``(low, high)`` that ``ratio/frac_outside`` counts against:
    ``algo.ratio_region``, else the loss's own (``fn.ratio_region(**kwargs)`` for the partial
    ``objective`` that :func:`objective_fn` returned), else PPO's default ``(0.8, 1.2)``."""
    if algo.ratio_region is not None:
        low, high = algo.ratio_region
        return float(low), float(high)
    region = getattr(objective.func, "ratio_region", None)
    return (0.8, 1.2) if region is None else region(**objective.keywords)


def build_rule(spec: Any, algo: OnPolicyConfig, model: Any, device: Any) -> Any:
    """Instantiate the update rule named by ``algo.rule`` for an env with ``spec``."""
    return rule_class(algo.rule)(spec, algo, model, device)
