"""Update rules (one module per rule family) and the one algorithm registry."""

from marlopt.algos.registry import RULES, RUNNERS, build_rule, register_rule, register_runner

__all__ = ["RULES", "RUNNERS", "build_rule", "register_rule", "register_runner"]
