"""Importing JAX and JaxMARL's SMAX, lazily and quietly (nothing here runs at import time).

``import_smax()`` gives ``(jax, jax.numpy, jaxmarl.environments.smax)`` or an ``ImportError`` with
the install line; it loads only JaxMARL's SMAX modules (``_load_smax``) and turns on JAX's
persistent compilation cache (``_enable_compilation_cache``). ``registered_scenarios()`` lists the
SMAX scenarios of the modules already loaded; ``jax_device`` picks a JAX device without chatter.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import threading
import types
from typing import Any

INSTALL = 'pip install "marlopt[smax]"   (i.e. pip install jaxmarl==0.2.0 jax==0.10.2 jaxlib==0.10.2)'

#: Guards the one-time import and the per-configuration cores (``core.core_for``).
LOCK = threading.RLock()
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
    the ordinary import.
    """
    if "jaxmarl" in sys.modules:  # the user has JaxMARL loaded already: use it
        return importlib.import_module("jaxmarl.environments.smax")
    spec = importlib.util.find_spec("jaxmarl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'jaxmarl'", name="jaxmarl")
    root = list(spec.submodule_search_locations)[0]
    before = set(sys.modules)
    try:
        for name, path in (("jaxmarl", root), ("jaxmarl.environments", os.path.join(root, "environments"))):
            stub = types.ModuleType(name)
            stub.__path__ = [path]
            stub.__package__ = name
            sys.modules[name] = stub
        module = importlib.import_module("jaxmarl.environments.smax")
    except Exception:  # noqa: BLE001 - anything unexpected: the ordinary (slow, chatty) import
        module = None
    finally:
        for name in set(sys.modules) - before:
            if name == "jaxmarl" or name.startswith("jaxmarl."):
                del sys.modules[name]
    if module is None:
        module = importlib.import_module("jaxmarl.environments.smax")
    return module


def _enable_compilation_cache(jax: Any) -> None:
    """Keep compiled SMAX functions on disk across processes (JAX's persistent cache).

    Compiling one SMAX step takes ≈10 s on a busy 2-core machine, and every process (each run,
    each subprocess worker, each test) compiles its own; with the cache a process loads it in ≈2 s.
    The directory is ``$MARLOPT_JAX_CACHE`` (default ``~/.cache/marlopt/jax``; ``0`` or an empty
    value disables it). A cache directory the user configured in JAX is left alone.
    """
    path = os.environ.get("MARLOPT_JAX_CACHE", os.path.join("~", ".cache", "marlopt", "jax"))
    if path.strip() in ("", "0") or jax.config.jax_compilation_cache_dir:
        return
    try:
        path = os.path.expanduser(path)
        os.makedirs(path, exist_ok=True)
        jax.config.update("jax_compilation_cache_dir", path)
    except Exception:  # noqa: BLE001 - a cache is an optimisation, never a failure
        pass


def import_smax() -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, jaxmarl.environments.smax)``; ``ImportError`` with the install line."""
    global _SMAX_MODULE
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "no TPU here" INFO lines
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as err:
        raise missing(err) from err
    with LOCK:
        if _SMAX_MODULE is None:
            _enable_compilation_cache(jax)
            try:
                _SMAX_MODULE = _load_smax()
            except ImportError as err:
                raise missing(err) from err
    return jax, jnp, _SMAX_MODULE


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

