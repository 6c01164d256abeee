"""SMAX: JaxMARL's JAX re-implementation of SMAC micromanagement, behind marlopt's protocols.

Two ways to run it, one behaviour:

- ``make(map_name, **options) -> SMAXEnv``: one ``MultiAgentEnv`` (for ``VectorEnv``, evaluation,
  anything that takes an env). ``reset``/``step`` are JAX functions compiled once per SMAX
  configuration per process (every env object of that configuration shares them).
- ``make_vector(map_name, n_envs, **options) -> SmaxVectorEnv``: E copies stepped by one
  ``jax.jit(jax.vmap(...))`` call, with the API of ``marlopt.envs.vector.VectorEnv`` (``spec``,
  ``num_envs``, ``reset(seeds)``, ``step(actions) -> VecStep``, auto-reset, ``get_state`` /
  ``set_state``, ``close``). Env ``i`` of it follows the same random stream, and so the same
  trajectory, as ``SMAXEnv`` ``i`` of a ``VectorEnv`` reset with the same seeds and given the same
  actions (``tests/envs/test_smax.py`` checks this).

Maps: JaxMARL's scenarios (``MAPS``): the SMAC maps 3m, 8m, 25m, 2s3z, 3s5z, 5m_vs_6m, 10m_vs_11m,
27m_vs_30m, 3s5z_vs_3s6z, 3s_vs_5z, 6h_vs_8z, and the SMAX-only ``smacv2_{5,10,20}_units`` (SMACv2-
style random start positions, surrounded or reflected, and unit types drawn uniformly from all six
SMAX types, allies and enemies mirrored). Allies are the learners; enemies follow JaxMARL's
heuristic (``HeuristicEnemySMAX``: attack the closest enemy in range, else move towards a visible
enemy or across the map).

Options (``make(map_name, **options)``; defaults are JaxMARL's SMAX benchmark settings):

- ``continuous`` (False): SMAX's continuous actions, 4 dims in [0, 1] (shoot-last-target
  probability, shoot-or-move probability, radius, angle); ``avail`` is all True.
- ``state_type`` (``"EP"``): the critic's state, see below.
- ``max_steps`` (100): the episode limit, also ``spec.episode_limit`` (the same for every map, as
  in JaxMARL; SMAC's per-map limits differ). Episodes are truncated after exactly ``max_steps``
  steps (JaxMARL's own done flag comes one step later).
- ``enemy_shoots`` (True), ``attack_mode`` (``"closest"`` | ``"random"``): the heuristic enemy.
- ``see_enemy_actions`` (True), ``walls_cause_death`` (True), ``won_battle_bonus`` (1.0),
  ``observation_type`` (``"unit_list"`` | ``"conic"``): passed to SMAX.
- ``device`` (``"cpu"``): the JAX platform the simulation runs on (``"gpu"`` needs a CUDA jaxlib).

Conventions:

- Observations: SMAX's per-ally observations (``unit_list``: 13 features for each other ally and
  each enemy, then 10 own features), float32 ``[N, obs_dim]``.
- State, ``state_type="EP"``: SMAX's world state, one row ``[1, (10 + 2) * (allies + enemies)]``:
  for every unit (allies first) its health fraction, raw x/y position (0..32), weapon cooldown and a
  one-hot unit type (zero for dead units), then every unit's team (0/1) and unit type index.
  ``"FP"``: what JaxMARL's MAPPO baseline feeds its critic (its ``SMAXWorldStateWrapper`` with
  ``obs_with_agent_id=True``): the same world state for each ally with the ally's one-hot id
  appended, ``[N, EP_dim + N]`` (``spec.state_per_agent``).
- Discrete actions ``[N]``: 0-3 move (north, east, south, west), 4 stop, ``5 + j`` attack enemy
  ``j``. SMAX has no separate no-op: a dead ally's only available action is 4 (stop), so the
  policy's masked choice is forced. ``avail`` is SMAX's ``get_avail_actions`` (moves while alive,
  stop always, attacks on live enemies in range). Unavailable actions are not rejected (SMAX
  ignores a dead unit's move and an invalid attack); out-of-range action ids are.
- Team reward: SMAX gives every ally the same reward (the enemies' lost health fraction per step,
  summed over enemies and divided by their number, plus ``won_battle_bonus`` on a win); it is
  used once (not summed over allies). A full win from full health returns 1 + bonus = 2.
- ``terminated``: all allies or all enemies dead. ``truncated``: the step limit reached first (the
  runner bootstraps). ``info["won"]``: all enemies dead and at least one ally alive (a mutual
  wipe-out is a draw, as in SMAX's reward). ``info["active"]``: the allies alive after the step.
- ``reset(seed)``: the env's JAX PRNG key becomes the 64-bit ``seed`` (as ``jax.random.PRNGKey``
  with x64 on); ``reset(None)`` continues the key. Every reset and step splits the key.
- ``get_state()`` / pickling: the key and the SMAX state as numpy arrays, mid-episode included;
  restoring gives the same future trajectory.
- Outputs are read-only numpy views of JAX's CPU buffers (no copy); copy before writing. The
  single env converts each output with ``np.asarray``; the vector env converts each *batched*
  output once (one ``np.asarray`` per field, never per env or agent).

JAX and JaxMARL are imported when the first env is built (never by ``import marlopt.envs``);
``check_available(map_name)`` tells whether they are installed without importing them. Only
JaxMARL's SMAX modules are loaded (not its other environments, which cost ~10 s of import and
print to stdout); see ``_load_smax``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import pickle
import sys
import threading
import types
from collections.abc import Sequence
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult
from marlopt.envs.vector import VecObs, VecStep

INSTALL = 'pip install "marlopt[smax]"   (i.e. pip install jaxmarl==0.2.0 jax==0.10.2 jaxlib==0.10.2)'

# JaxMARL 0.2.0's scenarios: map -> (allies, enemies). Maps registered at run time with
# ``jaxmarl.environments.smax.register_scenario`` are accepted too.
MAPS: dict[str, tuple[int, int]] = {
    "3m": (3, 3),
    "8m": (8, 8),
    "25m": (25, 25),
    "2s3z": (5, 5),
    "3s5z": (8, 8),
    "5m_vs_6m": (5, 6),
    "10m_vs_11m": (10, 11),
    "27m_vs_30m": (27, 30),
    "3s5z_vs_3s6z": (8, 9),
    "3s_vs_5z": (3, 5),
    "6h_vs_8z": (6, 8),
    "smacv2_5_units": (5, 5),
    "smacv2_10_units": (10, 10),
    "smacv2_20_units": (20, 20),
}

STATE_TYPES = ("EP", "FP")
_OPTIONS = (
    "continuous", "state_type", "max_steps", "enemy_shoots", "attack_mode", "see_enemy_actions",
    "walls_cause_death", "won_battle_bonus", "observation_type", "device",
)  # fmt: skip
_CONTINUOUS_DIMS = 4  # SMAX's continuous action: shoot_last_enemy, do_shoot, radius, angle


# ---------------------------------------------------------------------------------------------
# Importing JAX and JaxMARL's SMAX (lazily).
# ---------------------------------------------------------------------------------------------
_LOCK = threading.RLock()
_SMAX_MODULE: Any = None


def _missing(err: BaseException) -> ImportError:
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


def _import_smax() -> tuple[Any, Any, Any]:
    """``(jax, jax.numpy, jaxmarl.environments.smax)``; ``ImportError`` with the install line."""
    global _SMAX_MODULE
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no "no TPU here" INFO lines
    try:
        import jax
        import jax.numpy as jnp
    except ImportError as err:
        raise _missing(err) from err
    with _LOCK:
        if _SMAX_MODULE is None:
            _enable_compilation_cache(jax)
            try:
                _SMAX_MODULE = _load_smax()
            except ImportError as err:
                raise _missing(err) from err
    return jax, jnp, _SMAX_MODULE


# ---------------------------------------------------------------------------------------------
# One SMAX configuration: its spec and jitted pure functions, shared by every env that uses it.
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SmaxConfig:
    """A fully resolved SMAX configuration (the options of ``make`` with defaults filled in)."""

    map_name: str
    continuous: bool = False
    state_type: str = "EP"
    max_steps: int = 100
    enemy_shoots: bool = True
    attack_mode: str = "closest"
    see_enemy_actions: bool = True
    walls_cause_death: bool = True
    won_battle_bonus: float = 1.0
    observation_type: str = "unit_list"
    device: str = "cpu"


def _registered_scenarios() -> dict[str, Any]:
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


def _config(map_name: str, options: dict[str, Any]) -> SmaxConfig:
    """Check ``map_name`` and ``options``; raise ``ValueError`` naming the valid ones."""
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown SMAX option(s) {unknown}; valid options: {list(_OPTIONS)}")
    if map_name not in MAPS and map_name not in _registered_scenarios():
        valid = sorted(set(MAPS) | set(_registered_scenarios()))
        raise ValueError(f"unknown SMAX map {map_name!r}; valid maps: {valid}")
    opts = dict(options)
    state_type = opts.pop("state_type", None)
    state_type = "EP" if state_type is None else str(state_type).upper()
    if state_type not in STATE_TYPES:
        raise ValueError(f"SMAX state_type must be one of {list(STATE_TYPES)}, got {state_type!r}")
    cfg = SmaxConfig(map_name=map_name, state_type=state_type, **opts)
    cfg = dataclasses.replace(
        cfg,
        continuous=bool(cfg.continuous), max_steps=int(cfg.max_steps),
        enemy_shoots=bool(cfg.enemy_shoots), see_enemy_actions=bool(cfg.see_enemy_actions),
        walls_cause_death=bool(cfg.walls_cause_death), won_battle_bonus=float(cfg.won_battle_bonus),
        attack_mode=str(cfg.attack_mode), observation_type=str(cfg.observation_type),
        device=str(cfg.device),
    )  # fmt: skip
    if cfg.max_steps < 1:
        raise ValueError(f"max_steps must be >= 1, got {cfg.max_steps}")
    if cfg.attack_mode not in ("closest", "random"):
        raise ValueError(f"attack_mode must be 'closest' or 'random', got {cfg.attack_mode!r}")
    if cfg.observation_type not in ("unit_list", "conic"):
        raise ValueError(
            f"observation_type must be 'unit_list' or 'conic', got {cfg.observation_type!r}"
        )
    return cfg


def _jax_device(jax: Any, platform: str) -> Any:
    """``jax.devices(platform)[0]``, without JAX's INFO line about each missing backend (TPU...)."""
    logger = logging.getLogger("jax._src.xla_bridge")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        return jax.devices(platform)[0]
    finally:
        logger.setLevel(level)


def seed_to_key(seed: int) -> np.ndarray:
    """The raw uint32[2] threefry key of a 64-bit seed (``jax.random.PRNGKey(seed)`` with x64 on).

    ``jax.random.PRNGKey`` silently drops the upper 32 bits when x64 is off; marlopt's seeds
    (``seed * 100_003 + i``) may exceed 32 bits, so the key is built here.
    """
    s = int(seed) % 2**64
    return np.array([s >> 32, s & 0xFFFFFFFF], dtype=np.uint32)


def _fresh_key() -> np.ndarray:
    return seed_to_key(int(np.random.SeedSequence().generate_state(2, dtype=np.uint64)[0]))


class _Core:
    """The JaxMARL env and jitted functions of one ``SmaxConfig`` (built once per process)."""

    def __init__(self, cfg: SmaxConfig) -> None:
        jax, jnp, smax = _import_smax()
        self.cfg = cfg
        self.jax = jax
        try:
            self.device = _jax_device(jax, cfg.device)
        except RuntimeError as err:
            raise ValueError(f"SMAX device {cfg.device!r} is not available to JAX: {err}") from err
        env = smax.HeuristicEnemySMAX(
            scenario=_registered_scenarios()[cfg.map_name],
            enemy_shoots=cfg.enemy_shoots,
            attack_mode=cfg.attack_mode,
            see_enemy_actions=cfg.see_enemy_actions,
            walls_cause_death=cfg.walls_cause_death,
            max_steps=cfg.max_steps,
            won_battle_bonus=cfg.won_battle_bonus,
            observation_type=cfg.observation_type,
            action_type="continuous" if cfg.continuous else "discrete",
        )
        self.env = env
        agents = tuple(env.agents)  # the allies: ally_0 .. ally_{N-1}
        n = len(agents)
        ws_dim = int(env.state_size)
        fp = cfg.state_type == "FP"
        n_actions = _CONTINUOUS_DIMS if cfg.continuous else int(env.action_space(agents[0]).n)
        cont = cfg.continuous
        self.spec = EnvSpec(
            n_agents=n,
            obs_dim=int(env.observation_space(agents[0]).shape[0]),
            state_dim=ws_dim + n if fp else ws_dim,
            n_actions=n_actions,
            episode_limit=cfg.max_steps,
            continuous=cont,
            state_per_agent=fp,
            has_won=True,
            action_low=(0.0,) * n_actions if cont else (),
            action_high=(1.0,) * n_actions if cont else (),
            agent_names=agents,
        )
        self.action_shape: tuple[int, ...] = (n, n_actions) if cont else (n,)
        self.action_dtype = np.dtype(np.float32 if cont else np.int32)
        eye = jnp.eye(n, dtype=jnp.float32)

        def observe(st: Any, obs: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
            o = jnp.stack([obs[a] for a in agents]).astype(jnp.float32)
            ws = obs["world_state"].astype(jnp.float32)
            s = jnp.concatenate([jnp.broadcast_to(ws, (n, ws_dim)), eye], axis=1) if fp else ws[None]
            if cont:
                avail = jnp.ones((n, n_actions), dtype=jnp.bool_)
            else:
                masks = env.get_avail_actions(st)
                avail = jnp.stack([masks[a] for a in agents]).astype(jnp.bool_)
            return o, s, avail, st.state.unit_alive[:n]

        def strong(st: Any) -> Any:
            # JaxMARL's initial state has weakly typed leaves (python ints) that become strongly
            # typed after a step: a jitted step would compile twice. One type for every leaf.
            return jax.tree.map(lambda x: x.astype(x.dtype), st)

        def reset(key: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            obs, st = env.reset(sub)
            st = strong(st)
            return (key, st, *observe(st, obs))

        def step(key: Any, st: Any, actions: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            acts = {a: actions[i] for i, a in enumerate(agents)}
            obs, st, rewards, _, _ = env.step_env(sub, st, acts)
            st = strong(st)
            o, s, avail, active = observe(st, obs)
            alive = st.state.unit_alive
            allies_dead = ~jnp.any(alive[:n])
            enemies_dead = ~jnp.any(alive[n:])
            terminated = allies_dead | enemies_dead
            # The time limit after exactly max_steps steps. (JaxMARL's own done flag tests the step
            # counter before incrementing it: its episodes run max_steps + 1 steps.)
            truncated = (st.state.step >= cfg.max_steps) & ~terminated
            won = enemies_dead & ~allies_dead
            reward = rewards[agents[0]].astype(jnp.float32)  # identical for every ally
            return key, st, o, s, avail, active, reward, terminated, truncated, won

        def step_autoreset(key: Any, st: Any, actions: Any) -> tuple[Any, ...]:
            key, st, o, s, avail, active, reward, terminated, truncated, won = step(key, st, actions)
            done = terminated | truncated
            # The same key stream as SMAXEnv.step followed by SMAXEnv.reset(None) when done.
            key_r, st_r, o_r, s_r, avail_r, active_r = reset(key)
            pick = lambda new, old: jnp.where(done, new, old)  # noqa: E731
            key_out = pick(key_r, key)
            st_out = jax.tree.map(pick, st_r, st)
            return (key_out, st_out, pick(o_r, o), pick(s_r, s), pick(avail_r, avail),
                    pick(active_r, active), reward, terminated, truncated, s, active, won)  # fmt: skip

        self._reset_fn, self._step_fn = reset, step
        self.reset = jax.jit(reset)
        self.step = jax.jit(step)
        self.vreset = jax.jit(jax.vmap(reset))
        self.vstep = jax.jit(jax.vmap(step_autoreset))
        self._treedef: Any = None

    # -- helpers ------------------------------------------------------------------------------
    def put(self, x: Any) -> Any:
        """Place a (numpy) array on this configuration's JAX device."""
        return self.jax.device_put(x, self.device)

    @property
    def treedef(self) -> Any:
        """The pytree structure of one env's SMAX state (for restoring it from numpy leaves)."""
        if self._treedef is None:
            key = self.jax.ShapeDtypeStruct((2,), np.uint32)
            self._treedef = self.jax.tree.structure(self.jax.eval_shape(self._reset_fn, key)[1])
        return self._treedef

    def leaves(self, state: Any) -> list[np.ndarray]:
        return [np.asarray(x) for x in self.jax.tree.leaves(state)]

    def unflatten(self, leaves: Sequence[Any]) -> Any:
        return self.jax.tree.unflatten(self.treedef, list(leaves))

    def check_actions(self, actions: Any, shape: tuple[int, ...]) -> np.ndarray:
        """``actions`` as a contiguous int32 (discrete) / float32 (continuous) array of ``shape``."""
        arr = np.asarray(actions)
        if arr.shape != shape:
            raise ValueError(f"SMAX actions must have shape {shape}, got {arr.shape}")
        if self.cfg.continuous:
            return np.ascontiguousarray(arr, dtype=np.float32)
        if arr.dtype.kind not in "iu":
            if arr.dtype.kind not in "fb" or not np.all(np.mod(arr, 1) == 0):
                raise ValueError(f"discrete SMAX actions must be integers, got {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.spec.n_actions):
            raise ValueError(
                f"SMAX action ids must be in 0..{self.spec.n_actions - 1}, got {arr.min()}..{arr.max()}"
            )
        return np.ascontiguousarray(arr, dtype=np.int32)


_CORES: dict[SmaxConfig, _Core] = {}


def _core(cfg: SmaxConfig) -> _Core:
    with _LOCK:
        core = _CORES.get(cfg)
        if core is None:
            core = _CORES[cfg] = _Core(cfg)
        return core


# ---------------------------------------------------------------------------------------------
# One env.
# ---------------------------------------------------------------------------------------------
class SMAXEnv(MultiAgentEnv):
    """One SMAX battle behind the ``MultiAgentEnv`` protocol (see the module docstring)."""

    def __init__(self, map_name: str = "3m", **options: Any) -> None:
        self.config = _config(map_name, options)
        self._core = _core(self.config)
        self.spec = self._core.spec
        self._key: Any = None  # JAX uint32[2] key (numpy while restored and never stepped)
        self._state: Any = None  # JaxMARL HeuristicEnemySMAX state pytree
        self._needs_reset = True

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        core = self._core
        if seed is not None:
            self._key = core.put(seed_to_key(seed))
        elif self._key is None:
            self._key = core.put(_fresh_key())
        self._key, self._state, obs, state, avail, _ = core.reset(self._key)
        self._needs_reset = False
        return np.asarray(obs), np.asarray(state), np.asarray(avail)

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("SMAXEnv.step called before reset() or after the episode ended")
        core = self._core
        acts = core.check_actions(actions, core.action_shape)
        out = core.step(self._key, self._state, acts)
        self._key, self._state, obs, state, avail, active, reward, terminated, truncated, won = out
        terminated, truncated = bool(terminated), bool(truncated)
        self._needs_reset = terminated or truncated
        info = {"active": np.asarray(active), "won": bool(won)}
        return StepResult(np.asarray(obs), np.asarray(state), np.asarray(avail), float(reward),
                          terminated, truncated, info)  # fmt: skip

    # ------------------------------------------------------------------ exact resume
    def __getstate__(self) -> dict[str, Any]:
        leaves = None if self._state is None else self._core.leaves(self._state)
        return _pickled_state(self.config, self._key, leaves, self._needs_reset)

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(d["map_name"], **d["options"])  # type: ignore[misc]
        core = self._core
        if d["key"] is not None:
            self._key = core.put(np.asarray(d["key"], dtype=np.uint32))
        if d["leaves"] is not None:
            self._state = core.unflatten([core.put(x) for x in d["leaves"]])
        self._needs_reset = d["needs_reset"]


def _pickled_state(
    config: SmaxConfig, key: Any, leaves: list[np.ndarray] | None, needs_reset: bool
) -> dict[str, Any]:
    """What an ``SMAXEnv`` pickles: its configuration, key and SMAX state leaves, as numpy."""
    options = dataclasses.asdict(config)
    return {
        "map_name": options.pop("map_name"),
        "options": options,
        "key": None if key is None else np.array(key, dtype=np.uint32),
        "leaves": leaves,
        "needs_reset": needs_reset,
    }


def _unpickle_env(state: dict[str, Any]) -> SMAXEnv:
    env = SMAXEnv.__new__(SMAXEnv)
    env.__setstate__(state)
    return env


class _EnvBlob:
    """Pickles as an ``SMAXEnv`` in the given state (built without an ``SMAXEnv`` instance)."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        return _unpickle_env, (self.state,)


def check_available(map_name: str) -> None:
    """Raise ``ImportError`` (one line with the install command) unless JAX and JaxMARL are
    installed; nothing is imported (``marlopt.envs.registry.check_env`` calls it before a run)."""
    for name in ("jax", "jaxmarl"):
        if importlib.util.find_spec(name) is None:
            raise _missing(ModuleNotFoundError(f"No module named {name!r}"))


def make(map_name: str, **options: Any) -> SMAXEnv:
    """Build an SMAX map (see the module docstring for the maps and ``options``)."""
    _config(map_name, options)  # a bad map/option fails here, before JAX is imported
    return SMAXEnv(map_name, **options)


# ---------------------------------------------------------------------------------------------
# E envs in one vmapped call.
# ---------------------------------------------------------------------------------------------
_VECTOR_STATE_FORMAT = "marlopt.VectorEnv/1"  # the format of VectorEnv.get_state (interchangeable)


def _derived_seed(base: int | None, index: int, serial: int) -> int:
    entropy = [int(base or 0) % (2**63), index, serial, 0x736D6178]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


class SmaxVectorEnv:
    """E SMAX envs stepped together by one jitted ``jax.vmap`` call; ``VectorEnv``'s API.

    Same outputs as ``VectorEnv`` (``VecObs``/``VecStep``, see ``marlopt.envs.vector``), same
    auto-reset (env ``i`` continues its own key after an episode ends), and the same checkpoint
    format: ``get_state()`` holds one pickled ``SMAXEnv`` per env, so a checkpoint of either class
    restores into the other. Differences: nothing can crash and restart (``dropped`` is always
    False, ``restarts`` 0), and the large outputs (obs, state, avail, active, final_state,
    final_active) are read-only numpy views of JAX's buffers, valid until you drop them (JAX
    arrays are immutable: later steps never overwrite them).
    """

    mode = "jax"
    n_workers = 0

    def __init__(self, map_name: str, n_envs: int, **options: Any) -> None:
        if int(n_envs) < 1:
            raise ValueError(f"SmaxVectorEnv needs n_envs >= 1, got {n_envs}")
        self.config = _config(map_name, options)
        self._core = _core(self.config)
        self.spec: EnvSpec = self._core.spec
        self.num_envs = int(n_envs)
        self.last_restore_reset = np.zeros(self.num_envs, dtype=bool)
        self.last_error = ""
        self._seeds: list[int | None] = [None] * self.num_envs
        self._serial = 0
        self._keys: Any = None  # [E, 2] uint32 (JAX)
        self._states: Any = None  # batched HeuristicEnemySMAX state (JAX)
        self._ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._last: VecObs | None = None
        self._closed = False
        self._act_shape = (self.num_envs, *self._core.action_shape)

    @property
    def restarts(self) -> int:
        return 0

    @property
    def worker_pids(self) -> list[int]:
        return []

    def workers_have_module(self, name: str) -> list[bool]:
        return [name in sys.modules]

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("SmaxVectorEnv is closed")

    def reset(self, seeds: Sequence[int | None]) -> VecObs:
        """Reset env ``i`` with ``seeds[i]`` (``None``: continue its key)."""
        self._check_open()
        if len(seeds) != self.num_envs:
            raise ValueError(f"reset needs {self.num_envs} seeds, got {len(seeds)}")
        old = None if self._keys is None else np.asarray(self._keys)
        keys = np.empty((self.num_envs, 2), dtype=np.uint32)
        for i, seed in enumerate(seeds):
            if seed is not None:
                keys[i] = seed_to_key(seed)
            else:
                keys[i] = old[i] if old is not None else _fresh_key()
        self._seeds = [None if s is None else int(s) for s in seeds]
        core = self._core
        self._keys, self._states, obs, state, avail, active = core.vreset(core.put(keys))
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        self._last = VecObs(np.asarray(obs), np.asarray(state), np.asarray(avail), np.asarray(active))
        return self._last

    def step(self, actions: np.ndarray) -> VecStep:
        """Step every env (int ``[E, N]`` or float ``[E, N, A]``); ended envs are auto-reset."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("SmaxVectorEnv.step called before reset(seeds)")
        core = self._core
        acts = core.check_actions(actions, self._act_shape)
        out = core.vstep(self._keys, self._states, acts)
        (self._keys, self._states, obs, state, avail, active, reward, terminated, truncated,
         final_state, final_active, won) = out  # fmt: skip
        obs, state, avail, active = (np.asarray(x) for x in (obs, state, avail, active))
        reward = np.array(reward)  # [E] fields: small writable copies
        terminated, truncated, won = np.array(terminated), np.array(truncated), np.array(won)
        ended = terminated | truncated
        ret = self._ep_return + reward  # float64 sums, exactly as VectorEnv accumulates
        length = self._ep_length + 1
        episode_return = np.where(ended, ret, 0.0).astype(np.float32)
        episode_length = np.where(ended, length, 0)
        self._ep_return = np.where(ended, 0.0, ret)
        self._ep_length = np.where(ended, 0, length)
        self._last = VecObs(obs, state, avail, active)
        return VecStep(
            obs, state, avail, active, reward, terminated, truncated,
            np.zeros(self.num_envs, dtype=bool), np.asarray(final_state), np.asarray(final_active),
            won & ended, episode_return, episode_length, 0,
        )  # fmt: skip

    # ------------------------------------------------------------------ checkpoints
    def get_state(self) -> dict[str, Any]:
        """A picklable snapshot in ``VectorEnv``'s format (one pickled ``SMAXEnv`` per env)."""
        self._check_open()
        if self._last is None:
            raise RuntimeError("SmaxVectorEnv.get_state called before reset(seeds)")
        core = self._core
        keys = np.asarray(self._keys)
        leaves = core.leaves(self._states)
        blobs = [
            pickle.dumps(_EnvBlob(_pickled_state(self.config, keys[i], [x[i] for x in leaves], False)))
            for i in range(self.num_envs)
        ]
        return {
            "format": _VECTOR_STATE_FORMAT,
            "num_envs": self.num_envs,
            "spec": dataclasses.asdict(self.spec),
            "envs": blobs,
            "episode_return": [float(x) for x in self._ep_return],
            "episode_length": [int(x) for x in self._ep_length],
            "seeds": list(self._seeds),
            "restarts": 0,
            "last": tuple(np.array(x) for x in self._last),
        }

    def set_state(self, state: dict[str, Any]) -> VecObs:
        """Restore a ``get_state()`` snapshot (of this class or of a ``VectorEnv`` of SMAX envs).

        Envs that cannot be restored (no blob, or one that does not unpickle, or whose episode had
        ended) are reset with a derived seed; ``last_restore_reset[E]`` marks them.
        """
        self._check_open()
        if state.get("format") != _VECTOR_STATE_FORMAT:
            raise ValueError(f"not a VectorEnv/SmaxVectorEnv state (format {state.get('format')!r})")
        if state["num_envs"] != self.num_envs:
            raise ValueError(f"state has {state['num_envs']} envs, this env has {self.num_envs}")
        if state["spec"] != dataclasses.asdict(self.spec):
            raise ValueError(f"state was saved for spec {state['spec']}, this env has {self.spec}")
        core = self._core
        seeds = list(state["seeds"])
        keys = np.empty((self.num_envs, 2), dtype=np.uint32)
        per_env: list[list[np.ndarray] | None] = []
        for i, blob in enumerate(state["envs"]):
            env = None
            if blob is not None:
                try:
                    env = pickle.loads(blob)
                except Exception:  # noqa: BLE001 - reset it instead
                    env = None
            if (not isinstance(env, SMAXEnv) or env.config != self.config or env._state is None
                    or env._needs_reset):  # fmt: skip
                per_env.append(None)
                continue
            keys[i] = np.asarray(env._key)
            per_env.append(core.leaves(env._state))
        mask = np.array([p is None for p in per_env], dtype=bool)
        if mask.any():  # reset those with derived seeds, then take their fresh state
            self._serial += 1
            fresh = [seed_to_key(_derived_seed(seeds[i], i, self._serial)) for i in range(self.num_envs)]
            k_r, st_r, o_r, s_r, a_r, _ = core.vreset(core.put(np.stack(fresh)))
            fresh_leaves, fresh_keys = core.leaves(st_r), np.asarray(k_r)
            for i in np.flatnonzero(mask):
                keys[i] = fresh_keys[i]
                per_env[i] = [x[i] for x in fresh_leaves]
        leaves = [np.stack([p[k] for p in per_env]) for k in range(len(per_env[0]))]  # type: ignore[index]
        self._keys = core.put(keys)
        self._states = core.unflatten([core.put(x) for x in leaves])
        self._seeds = seeds
        self._ep_return = np.where(mask, 0.0, np.asarray(state["episode_return"], dtype=np.float64))
        self._ep_length = np.where(mask, 0, np.asarray(state["episode_length"], dtype=np.int64))
        last = [np.array(x) for x in state["last"]]
        if mask.any():
            last[0][mask], last[1][mask] = np.asarray(o_r)[mask], np.asarray(s_r)[mask]
            last[2][mask], last[3][mask] = np.asarray(a_r)[mask], True
        self.last_restore_reset = mask
        self._last = VecObs(*last)
        return self._last

    def close(self) -> None:
        """Release the JAX buffers (idempotent). The compiled functions stay cached."""
        self._closed = True
        self._keys = self._states = None

    def __enter__(self) -> SmaxVectorEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_vector(map_name: str, n_envs: int, **options: Any) -> SmaxVectorEnv:
    """The batched path: ``n_envs`` SMAX envs in one vmapped, jitted call (``VectorEnv``'s API)."""
    _config(map_name, options)
    return SmaxVectorEnv(map_name, n_envs, **options)
