"""The JAX side of one MPE configuration: ``MpeJaxCore`` holds JaxMARL's scenario, the spec and
the jitted pure functions (``reset``/``step`` for one env, ``vreset``/``vstep`` vmapped over E envs
with auto-reset), built once per configuration per process (``core_for``).

Equal to the mpe2 wrapper (``marlopt.envs.mpe.MPEEnv``) by construction where it can be, and by
test where it cannot (``tests/envs/test_mpe_jax.py``):

- the spec, the padding of observations/actions and the continuous clipping bounds are *read from*
  an ``MPEEnv`` built with the same options (one source of truth for the layout);
- team reward = the sum of the agents' rewards (``team_reward="mean"``: their mean); ``truncated``
  after exactly ``max_cycles`` steps (JaxMARL's own done flag tests the step counter before
  incrementing it: one step later);
  ``terminated`` is always False (these maps never end early);
- continuous actions are clipped to the spec's per-agent bounds (as the mpe2 wrapper does) and cut
  to each agent's real dimensions; discrete ids are passed as they are (both libraries decode
  ``move = a % 5``, ``say = a // 5`` the same way).
"""

from __future__ import annotations

import dataclasses
import importlib.util
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec
from marlopt.envs.jax_core import JaxCore, cached_core, import_jax, import_jaxmarl_modules

INSTALL = 'pip install -e ".[smax]"   (jax and jaxmarl: the same extra as SMAX)'

# map -> (JaxMARL module, class)
SCENARIOS: dict[str, tuple[str, str]] = {
    "simple_spread": ("simple_spread", "SimpleSpreadMPE"),
    "simple_reference": ("simple_reference", "SimpleReferenceMPE"),
    "simple_speaker_listener": ("simple_speaker_listener", "SimpleSpeakerListenerMPE"),
}


@dataclasses.dataclass(frozen=True)
class MpeJaxConfig:
    """The options of ``marlopt.envs.mpe.make`` (same names, same defaults), resolved."""

    map_name: str
    n_agents: int | None = None
    continuous: bool = False
    max_cycles: int = 25
    local_ratio: float | None = None
    team_reward: str = "sum"

    def mpe2_options(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("map_name")
        return d


def missing(err: BaseException) -> ImportError:
    return ImportError(f"env.backend=jax needs jax and jaxmarl ({err}); install them with: {INSTALL}")


def check_jax_available() -> None:
    """``ImportError`` with the install line unless jax and jaxmarl are installed (imports nothing)."""
    for name in ("jax", "jaxmarl"):
        if importlib.util.find_spec(name) is None:
            raise missing(ModuleNotFoundError(f"No module named {name!r}"))


_CLASSES: dict[str, Any] = {}


def _load_scenarios() -> dict[str, Any]:
    """JaxMARL's three MPE scenario classes, imported without running ``jaxmarl/__init__.py`` or
    ``jaxmarl/environments/mpe/__init__.py`` (which import every JaxMARL env: seconds, and stdout
    chatter) by ``marlopt.envs.jax_core.import_jaxmarl_modules``, as SMAX's are (``smax.loading._load_smax``)."""
    if not _CLASSES:
        names = [f"jaxmarl.environments.mpe.{mod}" for mod, _ in SCENARIOS.values()]
        modules = import_jaxmarl_modules(("jaxmarl", "jaxmarl.environments", "jaxmarl.environments.mpe"), names)
        for (map_name, (_, cls)), module in zip(SCENARIOS.items(), modules):
            _CLASSES[map_name] = getattr(module, cls)
    return _CLASSES


class MpeJaxCore(JaxCore):
    """JaxMARL's MPE scenario and the jitted functions of one ``MpeJaxConfig``; the helpers
    (``put``, ``leaves``, ``unflatten``, ``check_actions``...) are ``JaxCore``'s."""

    label = "MPE"

    def __init__(self, cfg: MpeJaxConfig) -> None:
        from marlopt.envs.mpe import MPEEnv

        jax, jnp, classes = import_jax(_load_scenarios, missing)  # ImportError with the install line
        self.cfg, self.jax = cfg, jax
        from marlopt.envs.smax.loading import jax_device

        self.device = jax_device(jax, "cpu")  # CPU only (no ``device`` option, unlike SMAX)
        ref = MPEEnv(cfg.map_name, **cfg.mpe2_options())  # the layout's source of truth
        try:
            self.spec: EnvSpec = ref.spec
            sizes, obs_dims = list(ref._act_sizes), list(ref._obs_dims)
            low = high = None
            if cfg.continuous:
                low, high = ref._low.copy(), ref._high.copy()
        finally:
            ref.close()
        kwargs: dict[str, Any] = {"action_type": "Continuous" if cfg.continuous else "Discrete",
                                  "max_steps": cfg.max_cycles}
        if cfg.map_name == "simple_spread":
            n = 3 if cfg.n_agents is None else cfg.n_agents
            kwargs.update(num_agents=n, num_landmarks=n)
        if cfg.local_ratio is not None:
            kwargs["local_ratio"] = cfg.local_ratio
        env = classes[cfg.map_name](**kwargs)
        self.env = env
        agents = tuple(env.agents)
        if agents != self.spec.agent_names:
            raise RuntimeError(f"JaxMARL's agents {agents} differ from mpe2's {self.spec.agent_names}")
        n, O, A = self.spec.n_agents, self.spec.obs_dim, self.spec.n_actions
        cont, T = cfg.continuous, cfg.max_cycles
        self.action_shape: tuple[int, ...] = (n, A) if cont else (n,)
        self.sizes = sizes
        jlow = None if low is None else jnp.asarray(low)
        jhigh = None if high is None else jnp.asarray(high)

        def observe(obs: dict[str, Any]) -> tuple[Any, Any]:
            rows = [obs[a].astype(jnp.float32) for a in agents]
            padded = jnp.stack([jnp.pad(r, (0, O - d)) for r, d in zip(rows, obs_dims)])
            return padded, jnp.concatenate(rows)[None]

        def strong(st: Any) -> Any:
            # The initial state has weakly typed leaves (python ints): one type for every leaf, so a
            # jitted step compiles once.
            return jax.tree.map(lambda x: x.astype(x.dtype), st)

        def reset(key: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            obs, st = env.reset(sub)
            st = strong(st.replace(done=jnp.asarray(False), step=jnp.asarray(0, dtype=jnp.int32)))
            return (key, st, *observe(obs))

        def step(key: Any, st: Any, actions: Any) -> tuple[Any, ...]:
            key, sub = jax.random.split(key)
            if cont:
                a = jnp.clip(actions, jlow, jhigh)
                acts = {name: a[i, : sizes[i]] for i, name in enumerate(agents)}
            else:
                acts = {name: actions[i] for i, name in enumerate(agents)}
            obs, st, rewards, _, _ = env.step_env(sub, st, acts)
            st = st.replace(step=st.step.astype(jnp.int32), done=jnp.asarray(st.done, dtype=jnp.bool_))
            o, s = observe(obs)
            reward = sum(rewards[a].astype(jnp.float32) for a in agents)  # the team reward: the sum
            if cfg.team_reward == "mean":
                reward = reward / len(agents)
            truncated = st.step >= T  # after exactly max_cycles steps, as the mpe2 wrapper
            return key, st, o, s, reward, jnp.zeros((), jnp.bool_), truncated

        def step_autoreset(key: Any, st: Any, actions: Any) -> tuple[Any, ...]:
            key, st, o, s, reward, terminated, truncated = step(key, st, actions)
            done = terminated | truncated
            # The same key stream as MPEJaxEnv.step then MPEJaxEnv.reset(None) where done.
            key_r, st_r, o_r, s_r = reset(key)
            pick = lambda new, old: jnp.where(done, new, old)  # noqa: E731
            return (pick(key_r, key), jax.tree.map(pick, st_r, st), pick(o_r, o), pick(s_r, s),
                    reward, terminated, truncated, s, o)  # fmt: skip

        self._reset_fn = reset
        self.reset = jax.jit(reset)
        self.step = jax.jit(step)
        self.vreset = jax.jit(jax.vmap(reset))
        self.vstep = jax.jit(jax.vmap(step_autoreset))
        avail = np.zeros((n, A), dtype=bool)
        for i, d in enumerate(sizes):
            avail[i, :d] = True
        avail.setflags(write=False)
        self.avail = avail  # constant: the mpe2 wrapper's mask (real actions / real dimensions)
        active = np.ones(n, dtype=bool)
        active.setflags(write=False)
        self.active = active

    def check_ids(self, arr: np.ndarray) -> None:
        """``ValueError`` naming the first agent whose discrete action id is outside its range."""
        bad = (arr < 0) | (arr >= np.asarray(self.sizes))
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0]) % len(self.sizes)
            raise ValueError(f"agent {i} ({self.spec.agent_names[i]}) took an action outside "
                             f"0..{self.sizes[i] - 1}")


_CORES: dict[MpeJaxConfig, MpeJaxCore] = {}


def core_for(cfg: MpeJaxConfig) -> MpeJaxCore:
    """The (cached) core of ``cfg``; the first call per configuration imports JAX and compiles."""
    return cached_core(_CORES, cfg, MpeJaxCore)
