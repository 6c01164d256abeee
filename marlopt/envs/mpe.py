"""MPE (Multi-Agent Particle Environments) over the real ``mpe2`` package, without PettingZoo overhead.

Maps (``make(map_name, **options)``):

- ``simple_spread``: ``n_agents`` agents (mpe2's ``N``, default 3) cover ``n_agents`` landmarks.
- ``simple_reference``: 2 agents that move and talk, each must get the *other* to its landmark.
- ``simple_speaker_listener``: a speaker (talks, cannot move) guides a listener (moves, mute).

Options: ``continuous`` (Box actions, default False), ``max_cycles`` (default 25, also the
``episode_limit``), ``local_ratio`` (mpe2's local/global reward mix; ``None`` keeps mpe2's default,
0.5 for spread and reference; ``simple_speaker_listener`` has none), ``n_agents`` (spread only),
``team_reward`` (``sum``, default, or ``mean``: see below).

Conventions (what other MPE wrappers leave implicit):

- **Team reward = the SUM of the agents' mpe2 rewards** (not the mean). In ``simple_spread`` every
  agent's reward already contains the shared landmark term (weighted ``1 - local_ratio``), so the
  sum counts it ``n_agents`` times; divide by ``spec.n_agents`` for the per-agent average.
  ``team_reward="mean"`` trains on that average: the scale of one agent's reward, which is what
  per-agent learners (JaxMARL's and the MAPPO reference's MPE runs) fit their critics to. Returns
  are then in those units (``sum`` = ``mean`` x ``n_agents``). The scale matters wherever a constant
  is in reward units: with ``algo.use_valuenorm=false``, ``algo.value_clip`` lets the critic move by
  at most that much per iteration (docs/benchmarks.md §5).
- Observations are float32, zero-padded to the largest agent observation (speaker 3 → 11).
- Discrete actions are padded to the largest action count; ``avail`` masks the padding (speaker: 3
  of 5). Continuous actions are ``[N, max_action_dim]`` floats in mpe2's Box ``[0, 1]`` (clipped
  here, as PettingZoo's ``ClipOutOfBoundsWrapper`` does); ``avail`` marks each agent's real dims.
- State = mpe2's ``env.state()``: the concatenation of all agents' *unpadded* observations, one row.
- ``truncated`` is True at ``max_cycles``; these maps never terminate early. ``info["active"]`` is
  all True (nobody dies).
- ``reset(seed)`` seeds exactly as ``parallel_env.reset(seed=seed)``; ``reset(None)`` continues
  the env's RNG.

Speed: the PettingZoo ``parallel_env`` adds AEC bookkeeping (agent selector, per-agent dicts,
wrappers) on top of the physics. This wrapper drives mpe2's ``SimpleEnv`` directly:
``current_actions`` + ``_execute_world_step()`` (physics + rewards), then
``scenario.observation``. These are mpe2 internals; ``tests/envs/test_mpe.py`` steps the official
``parallel_env`` side by side and asserts identical observations, rewards and truncation.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

# map name -> (mpe2 module, whether it takes ``N``, whether it takes ``local_ratio``)
MAPS: dict[str, tuple[str, bool, bool]] = {
    "simple_spread": ("mpe2.simple_spread_v3", True, True),
    "simple_reference": ("mpe2.simple_reference_v3", False, True),
    "simple_speaker_listener": ("mpe2.simple_speaker_listener_v4", False, False),
}


def _import_mpe2_module(module: str) -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # mpe2 imports pygame (rendering)
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"the MPE environments need the mpe2 package ({err}); install it with: pip install mpe2"
        ) from err


TEAM_REWARDS = ("sum", "mean")


def _raw_kwargs(
    map_name: str, n_agents: int | None, continuous: bool, max_cycles: int, local_ratio: float | None,
    team_reward: str = "sum",
) -> dict[str, Any]:
    """mpe2's ``raw_env`` keyword arguments for these options, after checking them all."""
    if team_reward not in TEAM_REWARDS:
        raise ValueError(f"unknown team_reward {team_reward!r}; valid: {list(TEAM_REWARDS)}")
    if map_name not in MAPS:
        raise ValueError(f"unknown MPE map {map_name!r}; valid maps: {sorted(MAPS)}")
    _, takes_n, takes_ratio = MAPS[map_name]
    kwargs: dict[str, Any] = {"max_cycles": int(max_cycles), "continuous_actions": bool(continuous)}
    if n_agents is not None:
        if not takes_n:
            raise ValueError(f"option n_agents is only valid for simple_spread, not {map_name!r}")
        if int(n_agents) < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        kwargs["N"] = int(n_agents)
    if local_ratio is not None:
        if not takes_ratio:
            raise ValueError(f"map {map_name!r} has no local_ratio option")
        kwargs["local_ratio"] = float(local_ratio)
    if int(max_cycles) < 1:
        raise ValueError(f"max_cycles must be >= 1, got {max_cycles}")
    return kwargs


class MPEEnv(MultiAgentEnv):
    """One mpe2 scenario behind the marlopt ``MultiAgentEnv`` protocol (see the module docstring)."""

    def __init__(
        self,
        map_name: str = "simple_spread",
        n_agents: int | None = None,
        continuous: bool = False,
        max_cycles: int = 25,
        local_ratio: float | None = None,
        team_reward: str = "sum",
    ) -> None:
        self._options = {
            "map_name": map_name,
            "n_agents": n_agents,
            "continuous": continuous,
            "max_cycles": max_cycles,
            "local_ratio": local_ratio,
            "team_reward": team_reward,
        }
        kwargs = _raw_kwargs(map_name, n_agents, continuous, max_cycles, local_ratio, team_reward)
        module = _import_mpe2_module(MAPS[map_name][0])
        raw = module.raw_env(**kwargs)
        self._raw = raw
        self._continuous = bool(continuous)
        self._max_cycles = int(max_cycles)
        self._reward_divisor = 1.0 if team_reward == "sum" else float(len(raw.possible_agents))

        names = tuple(raw.possible_agents)
        n = len(names)
        self._agents = list(raw.world.agents)
        obs_dims = [int(raw.observation_space(a).shape[0]) for a in names]
        spaces = [raw.action_space(a) for a in names]
        if self._continuous:
            act_sizes = [int(s.shape[0]) for s in spaces]
        else:
            act_sizes = [int(s.n) for s in spaces]
        obs_dim, n_actions = max(obs_dims), max(act_sizes)
        state_dim = int(sum(obs_dims))

        low: tuple[float, ...] = ()
        high: tuple[float, ...] = ()
        if self._continuous:
            lows, highs = np.zeros(n_actions), np.ones(n_actions)
            for j in range(n_actions):  # bounds of each padded dim from the first agent that has it
                space = next(s for s, d in zip(spaces, act_sizes) if d > j)
                lows[j], highs[j] = float(space.low[j]), float(space.high[j])
            low, high = tuple(float(x) for x in lows), tuple(float(x) for x in highs)
            # per-agent clipping bounds [N, A] (padding dims: the spec's bounds; ignored anyway)
            self._low = np.tile(lows, (n, 1)).astype(np.float32)
            self._high = np.tile(highs, (n, 1)).astype(np.float32)
            for i, (space, d) in enumerate(zip(spaces, act_sizes)):
                self._low[i, :d], self._high[i, :d] = space.low, space.high

        self.spec = EnvSpec(
            n_agents=n,
            obs_dim=obs_dim,
            state_dim=state_dim,
            n_actions=n_actions,
            episode_limit=self._max_cycles,
            continuous=self._continuous,
            state_per_agent=False,
            has_won=False,
            action_low=low,
            action_high=high,
            agent_names=names,
        )
        self._obs_dims = obs_dims
        self._act_sizes = act_sizes
        self._offsets = [int(x) for x in np.cumsum([0, *obs_dims])]
        self._homogeneous_actions = all(d == n_actions for d in act_sizes)

        # Constant, read-only outputs (no per-step allocation, safe to share).
        avail = np.zeros((n, n_actions), dtype=bool)
        for i, d in enumerate(act_sizes):
            avail[i, :d] = True
        avail.setflags(write=False)
        self._avail = avail
        active = np.ones(n, dtype=bool)
        active.setflags(write=False)
        self._active = active

        self._t = 0
        self._needs_reset = True
        raw.rewards = {name: 0.0 for name in names}  # _execute_world_step writes into it

    # ------------------------------------------------------------------ protocol
    def _observe(self) -> tuple[np.ndarray, np.ndarray]:
        # Fresh obs/state arrays each step (two small allocations): callers may keep them.
        world, observation = self._raw.world, self._raw.scenario.observation
        obs = np.zeros((self.spec.n_agents, self.spec.obs_dim), dtype=np.float32)
        state = np.empty((1, self.spec.state_dim), dtype=np.float32)
        srow, offsets, dims = state[0], self._offsets, self._obs_dims
        for i, agent in enumerate(self._agents):
            o = observation(agent, world)
            obs[i, : dims[i]] = o
            srow[offsets[i] : offsets[i + 1]] = o
        return obs, state

    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._raw.reset(seed=seed)  # seeds (when given) and re-draws the world like parallel_env
        self._agents = list(self._raw.world.agents)
        self._t = 0
        self._needs_reset = False
        obs, state = self._observe()
        return obs, state, self._avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("MPEEnv.step called before reset() or after the episode ended")
        raw = self._raw
        sizes = self._act_sizes
        if self._continuous:
            acts = np.asarray(actions)
            if acts.shape != self._low.shape:
                raise ValueError(
                    f"continuous actions must have shape {self._low.shape}, got {acts.shape}"
                )
            # Clip like PettingZoo's ClipOutOfBoundsWrapper (float32 bounds; the dtype is kept).
            acts = np.clip(acts, self._low, self._high)
            if self._homogeneous_actions:
                raw.current_actions = list(acts)
            else:
                raw.current_actions = [acts[i, : sizes[i]] for i in range(len(sizes))]
        else:
            flat = np.asarray(actions).reshape(-1)
            if flat.dtype.kind not in "iu":
                if not np.all(np.mod(flat, 1) == 0):
                    raise ValueError(f"discrete actions must be integers, got {flat}")
                flat = flat.astype(np.int64)
            acts = flat.tolist()  # python ints: mpe2 does action % 5, c[action] = 1 etc.
            if len(acts) != len(sizes):
                raise ValueError(f"expected {len(sizes)} discrete actions, got {len(acts)}")
            for i, a in enumerate(acts):
                if not 0 <= a < sizes[i]:
                    raise ValueError(
                        f"agent {i} ({self.spec.agent_names[i]}) took action {a}, "
                        f"valid actions are 0..{sizes[i] - 1}"
                    )
            raw.current_actions = acts
        raw._execute_world_step()  # physics + raw.rewards (mpe2 internals; see module docstring)
        self._t += 1
        reward = float(sum(raw.rewards.values())) / self._reward_divisor
        truncated = self._t >= self._max_cycles
        # mpe2 checks truncation first, then the scenario's (optional) success termination.
        terminated = (not truncated) and bool(raw.scenario.is_terminal(raw.world))
        self._needs_reset = truncated or terminated
        obs, state = self._observe()
        info = {"active": self._active}
        return StepResult(obs, state, self._avail, reward, terminated, truncated, info)

    def render(self) -> np.ndarray:
        """The current world as an RGB frame ``[700, 700, 3]`` (uint8), drawn by mpe2's own
        ``rgb_array`` renderer (``python -m marlopt.evaluate render=true``; marlopt/render.py).
        Drawing reads the world only: the episode, its RNG and the outputs are unchanged."""
        raw = self._raw
        raw.render_mode = "rgb_array"
        return raw.render()

    def close(self) -> None:
        raw = getattr(self, "_raw", None)
        if raw is not None:
            try:
                raw.close()
            except Exception:  # noqa: BLE001 - closing a renderer must never fail a run
                pass

    # ------------------------------------------------------------------ exact resume
    def __getstate__(self) -> dict[str, Any]:
        # mpe2's raw_env pickles as "construct a fresh env" (EzPickle), losing the episode; keep
        # the dynamic parts instead: world (entities, goals), scenario, RNG and step counter.
        raw = self._raw
        return {
            "options": self._options,
            "world": raw.world,
            "scenario": raw.scenario,
            "np_random": raw.np_random,
            "t": self._t,
            "needs_reset": self._needs_reset,
        }

    def __setstate__(self, d: dict[str, Any]) -> None:
        self.__init__(**d["options"])  # type: ignore[misc]
        raw = self._raw
        raw.world = d["world"]
        raw.scenario = d["scenario"]
        raw.np_random = d["np_random"]
        raw.agents = raw.possible_agents[:]
        self._agents = list(raw.world.agents)
        self._t = d["t"]
        self._needs_reset = d["needs_reset"]


_OPTIONS = ("n_agents", "continuous", "max_cycles", "local_ratio", "team_reward")


def make(map_name: str, **options: Any) -> MPEEnv:
    """Build an MPE map. Options: ``n_agents`` (spread only), ``continuous``, ``max_cycles``,
    ``local_ratio``, ``team_reward`` (see the module docstring)."""
    if map_name not in MAPS:
        raise ValueError(f"unknown MPE map {map_name!r}; valid maps: {sorted(MAPS)}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown MPE option(s) {unknown}; valid options: {list(_OPTIONS)}")
    return MPEEnv(map_name, **options)
