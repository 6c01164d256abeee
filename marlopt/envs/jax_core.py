"""What the JAX envs, SMAX (``marlopt.envs.smax``) and JaxMARL's MPE (``marlopt.envs.mpe_jax``),
share besides their batched vector env (``marlopt.envs.jax_vector``):

- keys: ``seed_to_key`` (all 64 bits of a seed), ``fresh_key`` (OS entropy);
- loading: ``import_jax`` (JAX, then the env's JaxMARL modules, under ``LOCK`` with JAX's persistent
  compilation cache on), ``import_jaxmarl_modules`` (some of JaxMARL's modules, without running its
  package ``__init__`` files, which import every JaxMARL env);
- the core of one configuration: ``JaxCore`` (its helpers: device placement, state leaves and pytree
  structure, action checks) and ``cached_core`` (one core per configuration per process);
- the single env: ``JaxEnv`` (its keys, and its pickle: ``pickled_state``, the configuration, JAX key
  and state leaves as numpy, mid-episode included; the vector envs' checkpoints hold these pickles).

Nothing here imports JAX at import time.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import os
import sys
import threading
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv

#: Guards the one-time imports and the per-configuration cores (``cached_core``).
LOCK = threading.RLock()


# ---------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------
def seed_to_key(seed: int) -> np.ndarray:
    """The raw uint32[2] threefry key of a 64-bit seed (``jax.random.PRNGKey(seed)`` with x64 on).

    ``jax.random.PRNGKey`` silently drops the upper 32 bits when x64 is off; marlopt's seeds
    (``seed * 100_003 + i``) may exceed 32 bits, so the key is built here.
    """
    s = int(seed) % 2**64
    return np.array([s >> 32, s & 0xFFFFFFFF], dtype=np.uint32)


def fresh_key() -> np.ndarray:
    return seed_to_key(int(np.random.SeedSequence().generate_state(2, dtype=np.uint64)[0]))


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def import_jaxmarl_modules(stubs: Sequence[str], modules: Sequence[str], fallback: bool = False) -> list[Any]:
    """Import ``modules`` (``jaxmarl.…`` names) with the packages ``stubs`` stood in for by empty
    package modules, so that their ``__init__`` files do not run; afterwards every ``jaxmarl*``
    module loaded here is taken out of ``sys.modules`` again, so a later ``import jaxmarl`` by the
    user starts afresh and gets the complete, ordinary package. If the user has JaxMARL loaded
    already, its ordinary modules are used. ``fallback``: any failure while importing with the
    stand-ins falls back to the ordinary (slow, chatty) import; without it, the failure is raised.
    No JaxMARL: ``ModuleNotFoundError``."""
    if "jaxmarl" in sys.modules:  # the user has JaxMARL loaded already: use it
        return [importlib.import_module(name) for name in modules]
    spec = importlib.util.find_spec("jaxmarl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("No module named 'jaxmarl'", name="jaxmarl")
    root = list(spec.submodule_search_locations)[0]
    before = set(sys.modules)
    loaded: list[Any] | None = None
    try:
        for name in stubs:
            stub = types.ModuleType(name)
            stub.__path__ = [os.path.join(root, *name.split(".")[1:])]
            stub.__package__ = name
            sys.modules[name] = stub
        loaded = [importlib.import_module(name) for name in modules]
    except Exception:  # noqa: BLE001 - re-raised unless ``fallback``
        if not fallback:
            raise
    finally:
        for name in set(sys.modules) - before:
            if name == "jaxmarl" or name.startswith("jaxmarl."):
                del sys.modules[name]
    if loaded is None:  # the fallback
        loaded = [importlib.import_module(name) for name in modules]
    return loaded


def enable_compilation_cache(jax: Any) -> None:
    """Keep compiled JAX env functions on disk across processes (JAX's persistent cache).

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


def import_jax(load: Callable[[], Any], missing: Callable[[BaseException], ImportError]) -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, load())``, ``load`` (the env's JaxMARL modules) called under ``LOCK`` with
    the compilation cache on; an ``ImportError`` of either becomes ``missing(err)`` (the install line)."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as err:
        raise missing(err) from err
    with LOCK:
        enable_compilation_cache(jax)
        try:
            loaded = load()
        except ImportError as err:
            raise missing(err) from err
    return jax, jnp, loaded


# ---------------------------------------------------------------------------------------------
# The core of one configuration
# ---------------------------------------------------------------------------------------------
class JaxCore:
    """The helpers of a JAX core. A subclass sets ``cfg`` (with ``continuous``), ``jax``, ``device``,
    ``spec`` and ``_reset_fn`` (one env's pure ``reset(key) -> (key, state, ...)``), names its env
    in error messages (``label``) and checks discrete action ids (:meth:`check_ids`)."""

    #: The env's name in error messages ("SMAX", "MPE").
    label = ""
    cfg: Any
    jax: Any
    device: Any
    spec: EnvSpec
    _reset_fn: Any
    _treedef: Any = None

    def put(self, x: Any) -> Any:
        """Place a (numpy) array on this configuration's JAX device."""
        return self.jax.device_put(x, self.device)

    @property
    def treedef(self) -> Any:
        """The pytree structure of one env's state (for restoring it from numpy leaves)."""
        if self._treedef is None:
            key = self.jax.ShapeDtypeStruct((2,), np.uint32)
            self._treedef = self.jax.tree.structure(self.jax.eval_shape(self._reset_fn, key)[1])
        return self._treedef

    def leaves(self, state: Any) -> list[np.ndarray]:
        """The leaves of a state pytree (one env's or a batch's), as numpy."""
        return [np.asarray(x) for x in self.jax.tree.leaves(state)]

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        """The state pytree of ``leaves`` (inverse of :meth:`leaves`)."""
        return self.jax.tree.unflatten(self.treedef, list(leaves))

    def check_actions(self, actions: Any, shape: tuple[int, ...]) -> np.ndarray:
        """``actions`` as a contiguous int32 (discrete, ids checked by :meth:`check_ids`) / float32
        (continuous) array of ``shape``."""
        arr = np.asarray(actions)
        if arr.shape != shape:
            raise ValueError(f"{self.label} actions must have shape {shape}, got {arr.shape}")
        if self.cfg.continuous:
            return np.ascontiguousarray(arr, dtype=np.float32)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind not in "fb" or not np.all(np.mod(arr, 1) == 0):
                raise ValueError(f"discrete {self.label} actions must be integers, got {arr.dtype}")
        self.check_ids(arr)
        return np.ascontiguousarray(arr, dtype=np.int32)

    def check_ids(self, arr: np.ndarray) -> None:
        """``ValueError`` unless the discrete action ids ``arr[..., N]`` are in range."""
        raise NotImplementedError


def cached_core(cores: dict[Any, Any], cfg: Any, build: Callable[[Any], Any]) -> Any:
    """``cores[cfg]``, built by ``build(cfg)`` on the first call per configuration (under ``LOCK``)."""
    with LOCK:
        core = cores.get(cfg)
        if core is None:
            core = cores[cfg] = build(cfg)
        return core


# ---------------------------------------------------------------------------------------------
# The single env
# ---------------------------------------------------------------------------------------------
def pickled_state(config: Any, key: Any, leaves: list[np.ndarray] | None, needs_reset: bool) -> dict[str, Any]:
    """What a single JAX env pickles: its configuration (a dataclass with ``map_name``: ``map_name``
    and the other ``options``), key and state leaves, as numpy."""
    options = dataclasses.asdict(config)
    return {
        "map_name": options.pop("map_name"),
        "options": options,
        "key": None if key is None else np.array(key, dtype=np.uint32),
        "leaves": leaves,
        "needs_reset": needs_reset,
    }


class JaxEnv(MultiAgentEnv):
    """One episode of a JAX core: what the single envs share. A subclass's ``__init__(map_name,
    **options)`` resolves its configuration and calls ``super().__init__(config, core)``; its
    ``reset`` resets from :meth:`_start_key`. Pickles as ``pickled_state`` (restored by building
    the env afresh, then putting its key and state back)."""

    def __init__(self, config: Any, core: JaxCore) -> None:
        self.config = config
        self._core = core
        self.spec = core.spec
        self._key: Any = None  # JAX uint32[2] key (numpy while restored and never stepped)
        self._state: Any = None  # the env's state pytree (JAX)
        self._needs_reset = True

    def _start_key(self, seed: int | None) -> Any:
        """The key a reset starts from: the 64-bit ``seed``'s, or (``None``) the env's key, or a
        fresh one before the first reset."""
        if seed is not None:
            return self._core.put(seed_to_key(seed))
        if self._key is None:
            return self._core.put(fresh_key())
        return self._key

    def __getstate__(self) -> dict[str, Any]:
        leaves = None if self._state is None else self._core.leaves(self._state)
        return pickled_state(self.config, self._key, leaves, self._needs_reset)

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["map_name"], **d["options"])  # type: ignore[misc]
        core = self._core
        if d["key"] is not None:
            self._key = core.put(np.asarray(d["key"], dtype=np.uint32))
        if d["leaves"] is not None:
            self._state = core.unflatten([core.put(x) for x in d["leaves"]])
        self._needs_reset = d["needs_reset"]
