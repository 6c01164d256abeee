"""Google Research Football (GRF) over the real ``gfootball`` package (install: ``bash
scripts/install_grf.sh``; see docs/envs.md for why not a plain ``pip install gfootball``).

Maps (``make(map_name, **options)``) and the number of LEFT players the agents control by default
(HARL / MAPPO conventions; ``n_agents`` overrides):

==========================================  =====  =============
scenario                                    N      game_duration (GRF steps: +1)
==========================================  =====  =============
academy_empty_goal_close                    1      400
academy_empty_goal                          1      400
academy_run_to_score                        1      400
academy_run_to_score_with_keeper            1      400
academy_pass_and_shoot_with_keeper          2      400
academy_run_pass_and_shoot_with_keeper      2      400
academy_3_vs_1_with_keeper                  3      400
academy_counterattack_easy                  4      400
academy_counterattack_hard                  4      400
academy_corner                              10     400   (MAPPO paper / GRASP: 10; HARL: 11)
academy_single_goal_versus_lazy             11     3000
11_vs_11_easy_stochastic                    11     3000
11_vs_11_stochastic                         11     3000
11_vs_11_hard_stochastic                    11     3000
==========================================  =====  =============

The agents control *active* players, not fixed ones: GRF hands each agent one of its team's
players and switches the controlled player (e.g. to the one nearest the ball) as the game goes;
the ``active`` one-hot in each observation says which. With fewer agents than field players, the
rest (and usually the keeper) are played by the built-in AI.

Conventions:

- **Observations**: ``simple115v2``, float32 ``[N, 115]``: left/right team positions and
  directions (88, missing players filled with -1), ball position (3) and direction (3),
  ball-owner one-hot (none/left/right, 3), the agent's active-player one-hot (11), game-mode
  one-hot (7). 19 discrete actions (GRF's default action set); ``avail`` is all ones.
- **Rewards**: ``rewards="scoring,checkpoints"`` (default, HARL's and MAPPO's dense setting) or
  ``"scoring"``. GRF gives each controlled player ``+1``/``-1`` per goal scored/conceded, plus
  with checkpoints ``+0.1`` for each of 10 distance-to-goal checkpoints collected while *that
  agent's* active player has the ball (the remaining ones are paid out on a goal; at most ``+1``
  per agent per episode). **Team reward = the SUM over the N controlled players**
  (``team_reward="sum"``, default): a goal is worth ``N`` (+ checkpoints), a scoring episode at
  most ``2N``. ``team_reward="mean"`` divides by N; ``"first"`` is HARL's football wrapper
  (``rew[0]``: agent 0's reward, i.e. the goal plus only agent 0's checkpoints).
- **State** (HARL §5.4, following ``Simple115StateWrapper``): the part of the observation common
  to all agents (everything but the active one-hot: 104 features) plus every agent's active-player
  one-hot (11 each): ``state_dim = 104 + 11 N = 115 + 11 (N - 1)``.
  ``state_type="EP"`` (default, what HARL does: one global state shared by all agents): one row,
  agents' one-hots in agent order. ``state_type="FP"``: one row per agent, the same features with
  the row's own one-hot first and the others after it in agent order (agent-specific state, same
  ``state_dim``). For N = 1 both equal the agent's observation.
- **Episode end**: academy scenarios end on a goal, when the ball goes out of play or (most of
  them) when the ball changes team; those ends are ``terminated``. GRF's own time limit (its
  ``steps_left`` at reset: ``game_duration + 1`` steps, i.e. 401 for academy maps, 3001 for the
  full game) or the ``time_limit`` option, if smaller, is ``truncated`` (the runner bootstraps).
  A goal on the very last step counts as ``terminated``. ``spec.episode_limit`` is the limit.
- **Wins**: ``info["won"]`` = left goals > right goals (GRF's ``score``), read at episode end;
  in academy scenarios it means "scored" (HARL's and MAPPO's *score rate*).
  ``info["active"]`` is all True.
- **Seeding**: ``reset(seed)`` seeds a numpy generator; every episode (``reset(seed)`` and the
  following ``reset(None)``) draws GRF's ``game_engine_random_seed`` from it, so the same seed
  replays the same episodes for the same actions; ``reset(None)`` continues. GRF's own default
  is a seed from Python's global ``random`` per episode (not reproducible); upstream also fixes
  ``reverse_team_processing`` from the *first* episode's seed only, which this wrapper sets per
  episode (``seed % 2``, upstream's rule) so a seed replays the same in a reused env.
  ``other_config={"game_engine_random_seed": k}`` pins every episode to engine seed ``k``.
- ``get_state()`` returns ``None`` (the C++ engine does not pickle): on resume GRF envs start a
  fresh episode. ``continuous=True`` raises ``ValueError`` (GRF's actions are discrete).

Options: ``rewards``, ``team_reward`` (sum | mean | first), ``n_agents`` (controlled left
players), ``time_limit`` (steps, at most GRF's ``game_duration + 1``), ``other_config``
(extra GRF config values, e.g. ``{"physics_steps_per_frame": 10}``). The maker also takes
``continuous`` and ``state_type`` from the env config.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult
from marlopt.envs.common import resolve_state_type

# scenario -> default number of controlled left players (HARL / MAPPO / GRASP conventions)
MAPS: dict[str, int] = {
    "academy_empty_goal_close": 1,
    "academy_empty_goal": 1,
    "academy_run_to_score": 1,
    "academy_run_to_score_with_keeper": 1,
    "academy_pass_and_shoot_with_keeper": 2,
    "academy_run_pass_and_shoot_with_keeper": 2,
    "academy_3_vs_1_with_keeper": 3,
    "academy_counterattack_easy": 4,
    "academy_counterattack_hard": 4,
    "academy_corner": 10,
    "academy_single_goal_versus_lazy": 11,
    "11_vs_11_easy_stochastic": 11,
    "11_vs_11_stochastic": 11,
    "11_vs_11_hard_stochastic": 11,
}

REWARDS = ("scoring", "scoring,checkpoints")
TEAM_REWARDS = ("sum", "mean", "first")
N_ACTIONS = 19  # GRF's default action set
OBS_DIM = 115
# simple115v2 layout: [0:88] teams, [88:94] ball pos/dir, [94:97] ball owner, [97:108] active,
# [108:115] game mode
_ACTIVE = slice(97, 108)
_COMMON_DIM = OBS_DIM - 11

INSTALL_HINT = (
    "the GRF environments need gfootball 2.10.2, a C++ build: run `bash scripts/install_grf.sh` "
    "(Debian/Ubuntu, ~8 min; it installs the system libraries, the `marlopt[grf]` Python "
    "dependencies and gfootball)"
)


class _QuietGfootball(logging.Filter):
    """Drop gfootball's INFO lines ("Episode reward: ... FPS" on every episode end)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.WARNING:
            return True
        return "gfootball" not in record.pathname and not str(record.msg).startswith("Episode reward")


def _import_gfootball() -> Any:
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    try:
        # gym 0.25.2 (pinned: gfootball needs its API) prints an "unmaintained" notice on import
        with contextlib.redirect_stderr(io.StringIO()):
            import gfootball.env as football_env  # noqa: PLC0415 - simulators are imported lazily
    except ImportError as err:
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {err})") from err
    absl_logger = logging.getLogger("absl")  # gfootball logs through absl -> python logging
    if not any(isinstance(f, _QuietGfootball) for f in absl_logger.filters):
        absl_logger.addFilter(_QuietGfootball())
    return football_env


class GRFEnv(MultiAgentEnv):
    """One gfootball scenario behind the marlopt ``MultiAgentEnv`` protocol (module docstring)."""

    def __init__(
        self,
        map_name: str = "academy_3_vs_1_with_keeper",
        n_agents: int | None = None,
        rewards: str = "scoring,checkpoints",
        team_reward: str = "sum",
        state_type: str | None = None,
        time_limit: int | None = None,
        other_config: dict[str, Any] | None = None,
    ) -> None:
        n = MAPS[map_name] if n_agents is None else int(n_agents)
        if not 1 <= n <= 11:
            raise ValueError(f"n_agents must be in 1..11, got {n_agents}")
        rewards = str(rewards).replace(" ", "")
        if rewards not in REWARDS:
            raise ValueError(f"unknown GRF rewards {rewards!r}; valid: {list(REWARDS)}")
        if team_reward not in TEAM_REWARDS:
            raise ValueError(f"unknown team_reward {team_reward!r}; valid: {list(TEAM_REWARDS)}")
        state_type = resolve_state_type(state_type, "GRF")
        if time_limit is not None and int(time_limit) < 1:
            raise ValueError(f"time_limit must be >= 1, got {time_limit}")

        football_env = _import_gfootball()
        config = dict(other_config or {})
        config.setdefault("game_engine_random_seed", 0)  # keeps GRF off Python's global `random`
        scenario = football_env.config.Config({"level": map_name, **config}).ScenarioConfig()
        team = int(scenario.controllable_left_players)
        if n > team:
            raise ValueError(f"n_agents={n} but {map_name} has {team} controllable left players")
        kwargs = dict(
            env_name=map_name,
            representation="simple115v2",
            rewards=rewards,
            stacked=False,
            number_of_left_players_agent_controls=n,
            number_of_right_players_agent_controls=0,
            write_goal_dumps=False,
            write_full_episode_dumps=False,
            write_video=False,
            render=False,
            dump_frequency=1,
            logdir="",
            other_config_options=config,
        )
        with warnings.catch_warnings():
            # gym 0.25 warns that gfootball's wrappers use the old (4-tuple) step API: known
            warnings.filterwarnings("ignore", message=".*old step API.*")
            try:
                env = football_env.create_environment(**kwargs)
            except (AssertionError, IndexError) as err:
                raise ValueError(f"GRF could not build {map_name!r} with n_agents={n}: {err}") from err
        self._env = env
        self._core = env.unwrapped  # gfootball.env.football_env.FootballEnv
        self._n = n
        self._team_reward = team_reward
        self._fp = state_type == "FP"
        self._fixed_seed = "game_engine_random_seed" in (other_config or {})
        # GRF's own end: ``steps_left`` after reset = game_duration + 1 (401 steps for academy)
        grf_limit = int(self._core.observation()[0]["steps_left"])
        self._limit = grf_limit if time_limit is None else min(int(time_limit), grf_limit)

        self.spec = EnvSpec(
            n_agents=n,
            obs_dim=OBS_DIM,
            state_dim=_COMMON_DIM + 11 * n,
            n_actions=N_ACTIONS,
            episode_limit=self._limit,
            continuous=False,
            state_per_agent=self._fp,
            has_won=True,
            agent_names=tuple(f"left_{i}" for i in range(n)),
        )
        n_env_actions = int(np.sum(getattr(env.action_space, "nvec", [getattr(env.action_space, "n", 0)])))
        if n_env_actions != N_ACTIONS * n:
            raise RuntimeError(f"unexpected GRF action space {env.action_space} for {n} agents")

        avail = np.ones((n, N_ACTIONS), dtype=bool)
        avail.setflags(write=False)
        self._avail = avail
        active = np.ones(n, dtype=bool)
        active.setflags(write=False)
        self._active = active
        # FP: row i lists agent i's active one-hot first, then the others in agent order
        self._fp_order = np.array([[i] + [j for j in range(n) if j != i] for i in range(n)])

        self._rng = np.random.default_rng()
        self._t = 0
        self._needs_reset = True

    # ------------------------------------------------------------------ helpers
    def _obs_state(self, raw_obs: Any) -> tuple[np.ndarray, np.ndarray]:
        obs = np.asarray(raw_obs, dtype=np.float32).reshape(self._n, OBS_DIM)
        common = np.concatenate([obs[0, :97], obs[0, 108:]])  # all but the active one-hot
        actives = obs[:, _ACTIVE]  # [N, 11]
        if self._fp:
            rows = [np.concatenate([common, actives[order].reshape(-1)]) for order in self._fp_order]
            state = np.stack(rows)
        else:
            state = np.concatenate([common, actives.reshape(-1)])[None]
        return obs, state.astype(np.float32, copy=False)

    def _team(self, rewards: Any) -> float:
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if self._team_reward == "sum":
            return float(r.sum())
        if self._team_reward == "mean":
            return float(r.mean())
        return float(r[0])

    # ------------------------------------------------------------------ protocol
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if seed is not None:
            self._rng = np.random.default_rng(int(seed))
        cfg = self._core._config
        if not self._fixed_seed:
            engine_seed = int(self._rng.integers(0, 2**31 - 1))
            cfg["game_engine_random_seed"] = engine_seed  # read by the scenario builder on reset
        cfg["reverse_team_processing"] = bool(int(cfg["game_engine_random_seed"]) % 2)
        raw = self._env.reset()
        self._t = 0
        self._needs_reset = False
        obs, state = self._obs_state(raw)
        return obs, state, self._avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._needs_reset:
            raise RuntimeError("GRFEnv.step called before reset() or after the episode ended")
        flat = np.asarray(actions).reshape(-1)
        if flat.dtype.kind not in "iu":
            if not np.all(np.mod(flat, 1) == 0):
                raise ValueError(f"discrete actions must be integers, got {flat}")
            flat = flat.astype(np.int64)
        acts = flat.tolist()
        if len(acts) != self._n:
            raise ValueError(f"expected {self._n} discrete actions, got {len(acts)}")
        for i, a in enumerate(acts):
            if not 0 <= a < N_ACTIONS:
                raise ValueError(f"agent {i} took action {a}, valid actions are 0..{N_ACTIONS - 1}")
        raw, rewards, done, info = self._env.step(acts)
        self._t += 1
        obs, state = self._obs_state(raw)
        reward = self._team(rewards)

        first = self._core.observation()[0]  # raw dict observation (cached by gfootball)
        score = first["score"]
        goal = int(info.get("score_reward", 0)) != 0
        hit_limit = self._t >= self._limit or int(first["steps_left"]) <= 0
        if done and not hit_limit:
            terminated, truncated = True, False
        elif done or hit_limit:  # the step limit (a goal on the last step is a real end)
            terminated, truncated = (True, False) if goal else (False, True)
        else:
            terminated = truncated = False
        self._needs_reset = terminated or truncated
        out_info = {"active": self._active, "won": bool(score[0] > score[1])}
        return StepResult(obs, state, self._avail, reward, terminated, truncated, out_info)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is not None:
            try:
                env.close()
            except Exception:  # noqa: BLE001 - closing must never fail a run
                pass
            self._env = None

    def get_state(self) -> bytes | None:
        """``None``: gfootball's C++ engine cannot be pickled; resumed runs reset GRF envs."""
        return None


_OPTIONS = ("n_agents", "rewards", "team_reward", "time_limit", "other_config")


def make(
    map_name: str, continuous: bool = False, state_type: str | None = None, **options: Any
) -> GRFEnv:
    """Build a GRF scenario. Options: ``n_agents``, ``rewards``, ``team_reward``, ``time_limit``,
    ``other_config`` (see the module docstring); ``state_type`` EP (default) | FP."""
    if map_name not in MAPS:
        raise ValueError(f"unknown GRF map {map_name!r}; valid maps: {sorted(MAPS)}")
    if continuous:
        raise ValueError(
            "GRF has discrete actions only (19 per player); set env.continuous=false"
        )
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"unknown GRF option(s) {unknown}; valid options: {list(_OPTIONS)}")
    if options.get("other_config") is not None:
        options["other_config"] = dict(options["other_config"])  # OmegaConf DictConfig -> dict
    return GRFEnv(map_name, state_type=state_type, **options)
