"""marlopt: cooperative multi-agent policy optimisation on one shared runner.

The objectives, ``load_policy`` and the ``Policy`` protocol are re-exported here (``from marlopt
import mars_loss, load_policy`` works), but lazily (PEP 562): ``import marlopt`` imports neither
torch nor any simulator, so env worker processes that only need ``marlopt.envs`` stay small.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

_OBJECTIVES = "marlopt.objectives"


def __getattr__(name: str) -> Any:
    if name in ("load_policy", "Policy"):
        return getattr(importlib.import_module("marlopt.policy"), name)
    if importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a submodule not imported yet (`from marlopt import results`): let the import system load
        # it rather than importing the objectives (and torch) to look for the name there
        raise AttributeError(f"module 'marlopt' has no attribute {name!r}")
    objectives = importlib.import_module(_OBJECTIVES)
    if name in objectives.__all__:
        return getattr(objectives, name)
    raise AttributeError(f"module 'marlopt' has no attribute {name!r}")


def __dir__() -> list[str]:
    objectives = importlib.import_module(_OBJECTIVES)
    return sorted([*globals(), *objectives.__all__, "load_policy", "Policy"])
