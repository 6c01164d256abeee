"""Importing JAX and JaxMARL's SMAX, lazily and quietly (nothing here runs at import time).

``import_smax()`` gives ``(jax, jax.numpy, jaxmarl.environments.smax)`` or an ``ImportError`` with
the install line; it loads only JaxMARL's SMAX modules (``_load_smax``), with JAX's persistent
compilation cache on (``marlopt.envs.jax_core.import_jax``). ``registered_scenarios()`` lists the
SMAX scenarios of the modules already loaded; ``jax_device`` picks a JAX device without chatter.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from marlopt.envs.jax_core import import_jax, import_jaxmarl_modules

INSTALL = 'pip install "marlopt[smax]"   (i.e. pip install jaxmarl==0.2.0 jax==0.10.2 jaxlib==0.10.2)'

_SMAX_MODULE: Any = None


def missing(err: BaseException) -> ImportError:
    return ImportError(f"SMAX needs jax and jaxmarl ({err}); install them with: {INSTALL}")


def _load_smax() -> Any:
    """Import ``jaxmarl.environments.smax`` without executing ``jaxmarl/__init__.py``.

    JaxMARL's package ``__init__`` imports every JaxMARL environment (≈17 s on a busy 2-core
    machine instead of ≈4 s for SMAX alone), prints two lines to stdout, and (through its MABrax
    module) resets ``sys.stdout``/``sys.stderr``. So the two parent packages are stood in for by
    empty package modules while SMAX's modules load, then every ``jaxmarl*`` module loaded here is
    taken out of ``sys.modules`` again: a later ``import jaxmarl`` by the user starts afresh and
    gets the complete, ordinary package (its own copy of the SMAX classes, which is harmless: this
    wrapper keeps references to its objects and never pickles them). Any failure falls back to
    the ordinary import (``marlopt.envs.jax_core.import_jaxmarl_modules``).
    """
    (module,) = import_jaxmarl_modules(("jaxmarl", "jaxmarl.environments"), ("jaxmarl.environments.smax",),
                                       fallback=True)
    return module


def _smax_module() -> Any:
    """``jaxmarl.environments.smax``, loaded on the first call (``import_jax`` calls it under its lock)."""
    global _SMAX_MODULE
    if _SMAX_MODULE is None:
        _SMAX_MODULE = _load_smax()
    return _SMAX_MODULE


def import_smax() -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, jaxmarl.environments.smax)``; ``ImportError`` with the install line."""
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "no TPU here" INFO lines
    return import_jax(_smax_module, missing)


def registered_scenarios() -> dict[str, Any]:
    """JaxMARL's scenarios by name, in the SMAX modules already loaded (none are imported here).

    A scenario added with ``jaxmarl.environments.smax.register_scenario`` (the user has imported
    JaxMARL for that) is found in the user's copy of the module as well as in this wrapper's.
    """
    found: dict[str, Any] = {}
    modules = [sys.modules.get("jaxmarl.environments.smax.smax_env")]
    if _SMAX_MODULE is not None:
        modules.append(_SMAX_MODULE.smax_env)
    for module in modules:
        found.update(getattr(module, "MAP_NAME_TO_SCENARIO", {}))
    return found


def jax_device(jax: Any, platform: str) -> Any:
    """``jax.devices(platform)[0]``, without JAX's INFO line about each missing backend (TPU...)."""
    logger = logging.getLogger("jax._src.xla_bridge")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        return jax.devices(platform)[0]
    finally:
        logger.setLevel(level)

