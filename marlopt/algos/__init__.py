"""Update rules (one per family) and the algorithm registry."""

from marlopt.algos.registry import UPDATE_RULES, build_rule

__all__ = ["UPDATE_RULES", "build_rule"]
