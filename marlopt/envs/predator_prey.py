"""Predator-prey of the GPVD paper (PyMARL2's ``stag_hunt``): built-in ``games`` maps (numpy only).

Maps: ``predator_prey`` (miscapture punishment p = 0, the paper's "moderate coordination") and
``predator_prey_p2`` (p = -2, "high coordination"). GPVD (§ Experiment Results, "Predator-Prey"):
8 predators, 8 prey, a 10x10 grid, partially observable; a capture by two or more adjacent predators
yields the shared reward 10, a solo attempt the penalty p <= 0.

Source of the rules. GPVD is built on PyMARL2, whose predator-prey is the relative-overgeneralisation
task of Böhmer et al., "Deep Coordination Graphs" (2020): ``src/envs/stag_hunt/stag_hunt.py`` with
``src/config/envs/stag_hunt.yaml`` in github.com/hijkzzz/pymarl2 (README: "Difficulty-Enhanced
Predator-Prey", ``--env-config=stag_hunt``). The same class is ``src/envs/stag_hunt.py`` +
``src/config/envs/rel_overgen.yaml`` in github.com/wendelinboehmer/dcg and
``src/envs/stag_hunt/stag_hunt.py`` + ``src/config/envs/pred_prey_punish.yaml`` in
github.com/oxwhirl/wqmix (identical rules; those two configs set ``miscapture_punishment: -2``,
PyMARL2's sets 0). This module is marlopt's own implementation of those rules for that
configuration: ``n_agents 8, n_stags 8, n_hare 0, world_shape [10, 10], toroidal False,
agent_obs [2, 2], capture_action True, capture_action_conditions [2, 1], reward_stag 10,
miscapture_punishment 0 | -2, reward_time 0, reward_collision 0, agent_move_block [0, 1, 2],
capture_freezes True, remove_frozen True, capture_terminal False, prevent_cannibalism True,
p_stags_rest 0, mountain_slope 0, observe_walls False, observe_state False, observe_ids False,
directed_observations False, episode_limit 200``. The options those values switch off (hares,
ghosts, mountains, directed views, walls in the view, toroidal worlds) are not implemented.

Rules (positions are (row, column), row 0 at the top):

- Reset: the 8 predators, then the 8 prey, are placed on distinct uniformly random cells.
- Actions (6): 0 right (column + 1), 1 down (row + 1), 2 left, 3 up, 4 stay, 5 catch.
- Available actions: a move is available iff its target cell is inside the grid (occupied cells do
  not make a move unavailable; the move is then blocked, below); stay always; catch iff an alive
  prey is on one of the 4 neighbouring cells. A frozen predator (below) has only stay.
- Step, in this order:
  1. Predators move one by one in a uniformly random order. A move into a cell holding a
     (non-frozen) predator or an alive prey, or off the grid, leaves the predator where it is. Stay,
     catch and every action of a frozen predator do not move.
  2. Prey are then processed one by one in a uniformly random order. For a prey, the catchers
     are the non-frozen predators that chose catch and stand on one of its 4 neighbouring
     cells (positions after step 1; a predator that chose catch did not move). With 2 or more
     catchers the prey is captured: it is removed, the team gets +10, and its catchers are frozen.
     With exactly 1 catcher the team gets ``p`` (miscapture_punishment), once per such prey (a lone
     predator that catches next to two prey is punished twice). A prey that is not captured moves
     to a uniformly random one of its free neighbouring cells (inside the grid, no predator, no
     prey); it never stays unless all four are blocked. Prey processed earlier this step have
     already moved or been removed, and predators frozen earlier this step no longer count.
  3. Frozen predators are removed from the world (``remove_frozen``): they block nothing, are not
     seen by anybody, and keep their last position only for bookkeeping.
- Team reward of a step: ``10 * captures + p * (prey with exactly one catcher)``; no time or
  collision term.
- End: ``terminated=True`` when every prey is captured or every predator is frozen (a true end);
  otherwise ``truncated=True`` after ``episode_limit`` = 200 steps (PyMARL2 marks that step with
  ``info["episode_limit"]``, which its learner treats as a truncation). Every capture freezes at least 2
  predators, so with 8 predators and 8 prey an episode makes at most 4 captures (a return of at
  most 40 at p = 0) and ends by freezing, not by clearing the prey.
- ``info["active"]``: the non-frozen predators (a frozen predator is like a dead SMAC unit: zero
  observation, only stay available).
- Observation of a predator, ``obs_dim = 75``: its 5x5 neighbourhood (``agent_obs`` radius 2)
  centred on it, 3 channels per cell (predators incl. itself, prey, hares - always 0 here, kept so
  the layout is PyMARL2's), flattened as ``(row, column, channel)``; cells outside the grid are 0.
  A frozen predator observes zeros.
- State, one row of ``state_dim = 300``: the whole 10x10 grid with the same 3 channels, flattened
  as ``(row, column, channel)`` (frozen predators and captured prey are absent).

Choices (PyMARL2 does not pin them or does them differently):

- At the 200th step, if every predator is also frozen, the step is ``terminated`` (a true end)
  rather than PyMARL2's time-limit flag.
- Unavailable actions are tolerated as in PyMARL2: a move off the grid does nothing, a catch with
  no prey adjacent catches nothing and is not punished, a frozen predator's action is ignored.
  Actions outside 0..5 raise ``ValueError``.
- Randomness: ``reset(seed)`` re-seeds the env's ``np.random.default_rng(seed)``; ``reset(None)``
  continues its stream (fresh entropy if never seeded). PyMARL2 uses the global ``np.random``; the
  draws are different but have the same distribution (placements, both random orders, prey moves).
- PyMARL2's learner-side settings for this env (``obs_agent_id: False``, ``obs_last_action``
  True from ``default.yaml``) are the model's business, not the env's.
"""

from __future__ import annotations

import numpy as np

from marlopt.envs.base import EnvSpec, MultiAgentEnv, StepResult

RIGHT, DOWN, LEFT, UP, STAY, CATCH = range(6)
ACTION_NAMES = ("right", "down", "left", "up", "stay", "catch")
N_ACTIONS = len(ACTION_NAMES)
#: (d_row, d_col) of the move actions 0..3.
MOVES = ((0, 1), (1, 0), (0, -1), (-1, 0))
#: Cell channels of the observation and the state.
CHANNELS = ("predator", "prey", "hare")

#: Map -> miscapture punishment p; the other settings are PyMARL2's stag_hunt.yaml (module docstring).
PREDATOR_PREY_MAPS: dict[str, float] = {"predator_prey": 0.0, "predator_prey_p2": -2.0}
MAPS = tuple(PREDATOR_PREY_MAPS)


class PredatorPreyEnv(MultiAgentEnv):
    """PyMARL2's ``stag_hunt`` predator-prey with a catch action (see the module docstring).

    The keyword arguments other than ``miscapture_punishment`` exist for tests and small variants;
    the maps use their defaults (the paper's 8 predators, 8 prey, 10x10, 200 steps).
    """

    def __init__(
        self,
        miscapture_punishment: float = 0.0,
        *,
        n_agents: int = 8,
        n_prey: int = 8,
        world_shape: tuple[int, int] = (10, 10),
        obs_radius: tuple[int, int] = (2, 2),
        episode_limit: int = 200,
        capture_reward: float = 10.0,
        catchers_needed: int = 2,
        name: str = "predator_prey",
    ) -> None:
        height, width = (int(x) for x in world_shape)
        rh, rw = (int(x) for x in obs_radius)
        if n_agents < 1 or n_prey < 1 or height < 1 or width < 1 or n_agents + n_prey > height * width:
            raise ValueError(f"predator-prey needs n_agents >= 1, n_prey >= 1 and room for both on the grid, "
                             f"got {n_agents}, {n_prey}, {world_shape}")
        if rh < 0 or rw < 0 or episode_limit < 1 or not 1 <= catchers_needed <= 4:
            raise ValueError(f"predator-prey needs obs_radius >= 0, episode_limit >= 1 and catchers_needed in "
                             f"1..4, got {obs_radius}, {episode_limit}, {catchers_needed}")
        self.name = name
        self.n_agents, self.n_prey = int(n_agents), int(n_prey)
        self.height, self.width, self.obs_radius = height, width, (rh, rw)
        self.miscapture_punishment = float(miscapture_punishment)
        self.capture_reward = float(capture_reward)
        self.catchers_needed = int(catchers_needed)
        n_ch = len(CHANNELS)
        self.spec = EnvSpec(
            n_agents=self.n_agents,
            obs_dim=(2 * rh + 1) * (2 * rw + 1) * n_ch,
            state_dim=height * width * n_ch,
            n_actions=N_ACTIONS,
            episode_limit=int(episode_limit),
            continuous=False,
            state_per_agent=False,
            has_won=False,
            agent_names=tuple(f"predator_{i}" for i in range(self.n_agents)),
        )

        # Static tables over flat cells c = row * width + col.
        n_cells = height * width
        rows, cols = np.divmod(np.arange(n_cells), width)
        d = np.array(MOVES)
        nr, nc = rows[:, None] + d[:, 0], cols[:, None] + d[:, 1]
        inside = (nr >= 0) & (nr < height) & (nc >= 0) & (nc < width)
        neighbours = np.where(inside, nr * width + nc, -1)
        #: neighbours[c][u]: the cell move u leads to from c, -1 off the grid (Python ints: the step loop).
        self._nbr: tuple[tuple[int, ...], ...] = tuple(map(tuple, neighbours.tolist()))
        #: [cells, 6]: moves inside the grid, stay; catch False (set per step); frozen: stay only.
        self._avail_moves = np.concatenate([inside, np.ones((n_cells, 1), bool), np.zeros((n_cells, 1), bool)], 1)
        self._avail_frozen = np.arange(N_ACTIONS) == STAY
        self._nbr_or_sentinel = np.where(inside, neighbours, n_cells)  # off-grid -> an always-empty cell
        # The padded grid (radius rh/rw of zeros around the world), flat [(H+2rh) * (W+2rw) * channels].
        self._padded_shape = (height + 2 * rh, width + 2 * rw, n_ch)
        pw = width + 2 * rw
        self._pad_cell3 = ((rows + rh) * pw + (cols + rw)) * n_ch  # cell -> its channel 0 in the padded grid
        self._grid_size = int(np.prod(self._padded_shape))
        wr, wc = np.meshgrid(np.arange(2 * rh + 1), np.arange(2 * rw + 1), indexing="ij")
        top_left = rows * pw + cols  # the padded cell at the window's top-left corner
        window_cells = top_left[:, None] + (wr * pw + wc).reshape(-1)[None, :]  # [cells, window]
        self._window = (window_cells[:, :, None] * n_ch + np.arange(n_ch)).reshape(n_cells, -1)

        self._rng: np.random.Generator | None = None
        self._agent_cell: list[int] = []
        self._prey_cell: list[int] = []
        self._alive: list[bool] = []
        self._frozen: list[bool] = []
        self._occ = bytearray(n_cells)  # 1 where a non-frozen predator or an alive prey stands
        self._t = 0
        self._done = True

    # ------------------------------------------------------------------------------------------
    # Inspection (tests, scripted scenarios)
    # ------------------------------------------------------------------------------------------
    @property
    def agent_positions(self) -> np.ndarray:
        """``[N, 2]`` (row, col) of every predator (frozen ones at their last cell)."""
        return np.stack(np.divmod(np.array(self._agent_cell, dtype=np.int64), self.width), axis=1)

    @property
    def prey_positions(self) -> np.ndarray:
        """``[M, 2]`` (row, col) of every prey (captured ones at their last cell)."""
        return np.stack(np.divmod(np.array(self._prey_cell, dtype=np.int64), self.width), axis=1)

    @property
    def prey_alive(self) -> np.ndarray:
        return np.array(self._alive, dtype=bool)

    @property
    def frozen(self) -> np.ndarray:
        return np.array(self._frozen, dtype=bool)

    @property
    def t(self) -> int:
        """Steps taken in the current episode."""
        return self._t

    def set_positions(self, agents, prey, *, frozen=None, prey_alive=None, t: int = 0):
        """Put predators and prey on given (row, col) cells mid-episode (tests, scripted scenarios);
        returns ``(obs, state, avail)``. Non-frozen predators and alive prey need distinct cells."""
        agents, prey = np.asarray(agents, dtype=np.int64), np.asarray(prey, dtype=np.int64)
        if agents.shape != (self.n_agents, 2) or prey.shape != (self.n_prey, 2):
            raise ValueError(f"need {self.n_agents} predator and {self.n_prey} prey (row, col) pairs")
        for pos in (agents, prey):
            if pos.min() < 0 or (pos[:, 0] >= self.height).any() or (pos[:, 1] >= self.width).any():
                raise ValueError("positions must lie inside the grid")
        frozen = [False] * self.n_agents if frozen is None else [bool(x) for x in frozen]
        alive = [True] * self.n_prey if prey_alive is None else [bool(x) for x in prey_alive]
        a_cells = (agents[:, 0] * self.width + agents[:, 1]).tolist()
        p_cells = (prey[:, 0] * self.width + prey[:, 1]).tolist()
        occupied = [c for c, f in zip(a_cells, frozen) if not f] + [c for c, a in zip(p_cells, alive) if a]
        if len(set(occupied)) != len(occupied):
            raise ValueError("two non-frozen predators / alive prey on one cell")
        self._agent_cell, self._prey_cell, self._frozen, self._alive = a_cells, p_cells, frozen, alive
        self._occ = bytearray(self.height * self.width)
        for c in occupied:
            self._occ[c] = 1
        self._t, self._done = int(t), False
        if self._rng is None:
            self._rng = np.random.default_rng()
        obs, state, avail, _ = self._observe()
        return obs, state, avail

    # ------------------------------------------------------------------------------------------
    # Protocol
    # ------------------------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if seed is not None or self._rng is None:
            self._rng = np.random.default_rng(seed)
        n, m = self.n_agents, self.n_prey
        cells = self._rng.choice(self.height * self.width, size=n + m, replace=False).tolist()
        self._agent_cell, self._prey_cell = cells[:n], cells[n:]
        self._frozen, self._alive = [False] * n, [True] * m
        self._occ = bytearray(self.height * self.width)
        for c in cells:
            self._occ[c] = 1
        self._t, self._done = 0, False
        obs, state, avail, _ = self._observe()
        return obs, state, avail

    def step(self, actions: np.ndarray) -> StepResult:
        if self._done:
            raise RuntimeError(f"{self.name}: step called before reset() or after the episode ended")
        acts = self._check_actions(actions)
        n, m = self.n_agents, self.n_prey
        occ, nbr, cell, frozen = self._occ, self._nbr, self._agent_cell, self._frozen
        draws = self._rng.random(n + 2 * m).tolist()  # agent order keys, prey order keys, prey moves
        agent_keys, prey_keys, prey_move = draws[:n], draws[n:n + m], draws[n + m:]

        # 1. Predators move one by one in a random order; blocked moves leave them in place.
        for a in sorted(range(n), key=agent_keys.__getitem__):
            u = acts[a]
            if u < STAY and not frozen[a]:
                c = cell[a]
                to = nbr[c][u]
                if to >= 0 and not occ[to]:
                    occ[c], occ[to], cell[a] = 0, 1, to

        # 2. Prey one by one in a random order: captured (>= catchers_needed adjacent catchers),
        #    punished (one catcher), else a random free move.
        reward = 0.0
        catching = [a for a in range(n) if acts[a] == CATCH and not frozen[a]]
        prey_cell, alive = self._prey_cell, self._alive
        for p in sorted(range(m), key=prey_keys.__getitem__):
            if not alive[p]:
                continue
            c = prey_cell[p]
            around = nbr[c]
            if catching:
                catchers = [a for a in catching if not frozen[a] and cell[a] in around]
                if len(catchers) >= self.catchers_needed:
                    alive[p], occ[c] = False, 0
                    reward += self.capture_reward
                    for a in catchers:
                        frozen[a], occ[cell[a]] = True, 0  # frozen predators leave the world
                    continue
                if catchers:
                    reward += self.miscapture_punishment
            free = [to for to in around if to >= 0 and not occ[to]]
            if free:
                to = free[int(prey_move[p] * len(free))]
                occ[c], occ[to], prey_cell[p] = 0, 1, to

        self._t += 1
        terminated = not any(alive) or all(frozen)
        truncated = not terminated and self._t >= self.spec.episode_limit
        self._done = terminated or truncated
        obs, state, avail, active = self._observe()
        return StepResult(obs, state, avail, reward, terminated, truncated, {"active": active})

    # ------------------------------------------------------------------------------------------
    def _check_actions(self, actions: np.ndarray) -> list[int]:
        acts = np.asarray(actions)
        if acts.size == self.n_agents and acts.dtype.kind in "iuf":
            flat = acts.reshape(-1)
            if acts.dtype.kind == "f" and not np.all(flat == np.floor(flat)):
                flat = None
            if flat is not None:
                values = flat.astype(np.int64, copy=False).tolist()
                if min(values) >= 0 and max(values) < N_ACTIONS:
                    return values
        raise ValueError(f"{self.name} needs {self.n_agents} integer actions in 0..{N_ACTIONS - 1}, "
                         f"got {acts.reshape(-1).tolist()}")

    def _observe(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(obs [N, O], state [1, D], avail [N, 6], active [N])``, fresh arrays."""
        frozen = np.array(self._frozen, dtype=bool)
        any_frozen = True in self._frozen
        cells = np.array(self._agent_cell, dtype=np.int64)
        prey = np.array([c for c, a in zip(self._prey_cell, self._alive) if a], dtype=np.int64)
        grid = np.zeros(self._grid_size, dtype=np.float32)  # the padded grid, flat
        grid[self._pad_cell3[cells[~frozen] if any_frozen else cells]] = 1.0  # channel 0: predators
        grid[self._pad_cell3[prey] + 1] = 1.0  # channel 1: prey
        obs = grid[self._window[cells]]
        rh, rw = self.obs_radius
        state = grid.reshape(self._padded_shape)[rh:rh + self.height, rw:rw + self.width].reshape(1, -1)
        prey_map = np.zeros(self.height * self.width + 1, dtype=bool)  # + the off-grid sentinel
        prey_map[prey] = True
        avail = self._avail_moves[cells]  # moves inside the grid, stay; catch filled next
        avail[:, CATCH] = prey_map[self._nbr_or_sentinel[cells]].any(axis=1)
        if any_frozen:
            obs[frozen] = 0.0
            avail[frozen] = self._avail_frozen
        return obs, state, avail, ~frozen

def make(map_name: str) -> MultiAgentEnv:
    """Build a predator-prey map (options are checked by ``marlopt.envs.games.make``)."""
    if map_name not in PREDATOR_PREY_MAPS:
        raise ValueError(f"unknown predator-prey map {map_name!r}; valid maps: {list(MAPS)}")
    return PredatorPreyEnv(PREDATOR_PREY_MAPS[map_name], name=map_name)
