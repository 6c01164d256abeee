"""The JAX side of one SMAX configuration: ``SmaxCore`` holds the JaxMARL env, the spec and the
jitted pure functions (``reset``/``step`` for one env, ``vreset``/``vstep`` vmapped over E envs with
auto-reset), built once per configuration per process (``core_for``) and shared by every env object
of that configuration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec
from marlopt.envs.jax_core import JaxCore, cached_core
from marlopt.envs.smax.config import CONTINUOUS_DIMS, SmaxConfig
from marlopt.envs.smax.loading import import_smax, jax_device, registered_scenarios


class SmaxCore(JaxCore):
    """The JaxMARL env and jitted functions of one ``SmaxConfig`` (built once per process); the
    helpers (``put``, ``leaves``, ``unflatten``, ``check_actions``...) are ``JaxCore``'s."""

    label = "SMAX"

    def __init__(self, cfg: SmaxConfig) -> None:
        jax, jnp, smax = import_smax()
        self.cfg = cfg
        self.jax = jax
        try:
            self.device = jax_device(jax, cfg.device)
        except RuntimeError as err:
            raise ValueError(f"SMAX device {cfg.device!r} is not available to JAX: {err}") from err
        env = smax.HeuristicEnemySMAX(
            scenario=registered_scenarios()[cfg.map_name],
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
        n_actions = CONTINUOUS_DIMS if cfg.continuous else int(env.action_space(agents[0]).n)
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
                    pick(active_r, active), reward, terminated, truncated, s, active, o, avail, won)  # fmt: skip

        self._reset_fn, self._step_fn = reset, step
        self.reset = jax.jit(reset)
        self.step = jax.jit(step)
        self.vreset = jax.jit(jax.vmap(reset))
        self.vstep = jax.jit(jax.vmap(step_autoreset))

    def check_ids(self, arr: np.ndarray) -> None:
        """``ValueError`` unless every discrete action id is in ``0..n_actions - 1``."""
        if arr.size and (arr.min() < 0 or arr.max() >= self.spec.n_actions):
            raise ValueError(
                f"SMAX action ids must be in 0..{self.spec.n_actions - 1}, got {arr.min()}..{arr.max()}"
            )


_CORES: dict[SmaxConfig, SmaxCore] = {}


def core_for(cfg: SmaxConfig) -> SmaxCore:
    """The (cached) core of ``cfg``; the first call per configuration imports JAX and compiles."""
    return cached_core(_CORES, cfg, SmaxCore)

