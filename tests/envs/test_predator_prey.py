"""GPVD's predator-prey (PyMARL2 ``stag_hunt``, ``env=games map=predator_prey[_p2]``): rules, ends,
seeding, pickling, vector envs, and a step-by-step comparison with a plain reference of the rules."""

from __future__ import annotations

import functools
import pickle

import numpy as np
import pytest

from marlopt.envs import ProcessVectorEnv, StepResult, games, make_env
from marlopt.envs.predator_prey import CATCH, DOWN, LEFT, MAPS, RIGHT, STAY, UP, PredatorPreyEnv, make
from tests.helpers import make_config

# Cells for the predators and prey a test does not place: away from the cells the tests use.
SPARE_AGENTS = [(0, 6), (2, 6), (4, 7), (6, 7), (8, 6), (9, 3), (0, 4), (9, 1)]
SPARE_PREY = [(0, 9), (2, 9), (4, 9), (6, 9), (8, 9), (9, 8), (9, 5), (7, 0)]


def _stay(n: int = 8) -> np.ndarray:
    return np.full(n, STAY)


def _obs_index(dr: int, dc: int, channel: int, radius: int = 2) -> int:
    """Index in a predator's observation of the cell at offset (dr, dc), channel 0 predator / 1 prey."""
    side = 2 * radius + 1
    return ((dr + radius) * side + (dc + radius)) * 3 + channel


def _scene(env: PredatorPreyEnv, agents: dict[int, tuple[int, int]], prey: dict[int, tuple[int, int]]):
    """Place the listed predators/prey (index -> (row, col)); the others go on spare cells."""
    used = set(agents.values()) | set(prey.values())
    spare_agents = iter(c for c in SPARE_AGENTS if c not in used)
    spare_prey = iter(c for c in SPARE_PREY if c not in used)
    a_pos = [agents[i] if i in agents else next(spare_agents) for i in range(env.n_agents)]
    p_pos = [prey[i] if i in prey else next(spare_prey) for i in range(env.n_prey)]
    return env.set_positions(a_pos, p_pos)


# ---------------------------------------------------------------------------------------------
# Maps, spec, shapes
# ---------------------------------------------------------------------------------------------
def test_maps_and_spec():
    assert MAPS == ("predator_prey", "predator_prey_p2")
    assert set(MAPS) <= set(games.MAPS)
    for name, p in [("predator_prey", 0.0), ("predator_prey_p2", -2.0)]:
        env = make_env("games", name, {"continuous": False})
        assert isinstance(env, PredatorPreyEnv) and env.miscapture_punishment == p and env.name == name
        spec = env.spec
        assert (spec.n_agents, spec.obs_dim, spec.state_dim, spec.n_actions, spec.episode_limit) == (8, 75, 300, 6, 200)
        assert (spec.state_rows, spec.continuous, spec.has_won) == (1, False, False)
        assert (env.n_prey, env.height, env.width, env.capture_reward, env.catchers_needed) == (8, 10, 10, 10.0, 2)
    with pytest.raises(ValueError, match="predator_prey"):
        make("predator_prey_p5")
    with pytest.raises(ValueError, match="discrete actions only"):
        games.make("predator_prey", continuous=True)


def test_reset_shapes_and_placement():
    env = make("predator_prey")
    obs, state, avail = env.reset(seed=0)
    assert obs.shape == (8, 75) and obs.dtype == np.float32
    assert state.shape == (1, 300) and state.dtype == np.float32
    assert avail.shape == (8, 6) and avail.dtype == bool
    grid = state.reshape(10, 10, 3)
    assert grid[..., 0].sum() == 8 and grid[..., 1].sum() == 8 and grid[..., 2].sum() == 0
    cells = {tuple(p) for p in env.agent_positions} | {tuple(p) for p in env.prey_positions}
    assert len(cells) == 16  # distinct cells
    for r, c in env.agent_positions:
        assert grid[r, c, 0] == 1
    for r, c in env.prey_positions:
        assert grid[r, c, 1] == 1
    assert (obs[:, _obs_index(0, 0, 0)] == 1).all()  # every predator sees itself at the centre
    assert avail[:, STAY].all() and not env.frozen.any() and env.prey_alive.all()


def test_observation_window_and_state_layout():
    env = make("predator_prey")
    obs, state, _ = _scene(env, {0: (0, 0), 1: (2, 1)}, {0: (1, 2), 1: (0, 3)})
    # predator 0 at the corner: prey 0 at offset (+1, +2), predator 1 at (+2, +1); prey 1 at (0, +3) is
    # out of the 5x5 view; cells above/left of the grid are zeros
    seen = {i for i in range(75) if obs[0, i]}
    assert seen == {_obs_index(0, 0, 0), _obs_index(1, 2, 1), _obs_index(2, 1, 0)}
    # predator 1 at (2, 1) sees predator 0 at (-2, -1), prey 0 at (-1, +1), prey 1 at (-2, +2)
    assert obs[1, [_obs_index(-2, -1, 0), _obs_index(-1, 1, 1), _obs_index(-2, 2, 1)]].tolist() == [1, 1, 1]
    assert obs[1].sum() == 4  # and itself
    grid = state.reshape(10, 10, 3)
    assert grid[0, 0, 0] == 1 and grid[2, 1, 0] == 1 and grid[1, 2, 1] == 1 and grid[0, 3, 1] == 1
    assert state[0, (1 * 10 + 2) * 3 + 1] == 1  # (row, col, channel) flattening


# ---------------------------------------------------------------------------------------------
# Actions, moves, availability
# ---------------------------------------------------------------------------------------------
def test_move_directions_and_blocking():
    env = make("predator_prey")
    _scene(env, {0: (5, 5), 1: (3, 3), 2: (3, 4), 3: (7, 2), 4: (7, 3)}, {0: (5, 7)})
    acts = _stay()
    acts[0] = RIGHT  # (5, 5) -> (5, 6)
    acts[1] = RIGHT  # into predator 2's cell: blocked unless 2 moves first...
    acts[2] = STAY  # ... it stays: blocked
    acts[3] = UP  # (7, 2) -> (6, 2)
    acts[4] = DOWN  # (7, 3) -> (8, 3)
    env.step(acts)
    pos = env.agent_positions
    assert tuple(pos[0]) == (5, 6) and tuple(pos[1]) == (3, 3) and tuple(pos[2]) == (3, 4)
    assert tuple(pos[3]) == (6, 2) and tuple(pos[4]) == (8, 3)
    acts = _stay()
    acts[0] = LEFT  # back to (5, 5): the prey cannot have reached it
    env.step(acts)
    assert tuple(env.agent_positions[0]) == (5, 5)


def test_move_into_prey_is_blocked():
    env = make("predator_prey")
    # prey 0 boxed in at the corner (0, 0) by predators at (0, 1) and (1, 0): it cannot move
    _scene(env, {0: (0, 1), 1: (1, 0), 2: (1, 1)}, {0: (0, 0)})
    acts = _stay()
    acts[2] = UP  # (1, 1) -> (0, 1) is a predator: blocked
    acts[0] = LEFT  # into the prey: blocked
    env.step(acts)
    assert tuple(env.agent_positions[0]) == (0, 1) and tuple(env.agent_positions[2]) == (1, 1)
    assert tuple(env.prey_positions[0]) == (0, 0)  # no free neighbour: the prey stays


def test_two_predators_contesting_one_cell_random_order():
    winners = set()
    for seed in range(30):
        env = make("predator_prey")
        env.reset(seed=seed)
        _scene(env, {0: (5, 4), 1: (5, 6)}, {})
        acts = _stay()
        acts[0], acts[1] = RIGHT, LEFT  # both into (5, 5)
        env.step(acts)
        pos = env.agent_positions
        moved = [i for i in (0, 1) if tuple(pos[i]) == (5, 5)]
        assert len(moved) == 1  # exactly one gets the cell, the other stays
        other = 1 - moved[0]
        assert tuple(pos[other]) == [(5, 4), (5, 6)][other]
        winners.add(moved[0])
    assert winners == {0, 1}  # the order is random


def test_available_actions():
    env = make("predator_prey")
    _, _, avail = _scene(env, {0: (0, 0), 1: (9, 8), 2: (5, 5), 3: (4, 5)}, {0: (5, 6), 1: (9, 9)})
    # corner (0, 0): right and down only, stay; no prey adjacent -> no catch
    assert avail[0].tolist() == [True, True, False, False, True, False]
    # (9, 8) next to prey 1 at (9, 9): down off the grid; right (into the prey) available; catch available
    assert avail[1].tolist() == [True, False, True, True, True, True]
    # (5, 5) next to prey 0 at (5, 6); (4, 5) is diagonal to it: no catch; moves into occupied cells available
    assert avail[2].tolist() == [True, True, True, True, True, True]
    assert avail[3].tolist() == [True, True, True, True, True, False]


def test_prey_moves_uniformly_to_free_neighbours_and_never_rests():
    counts = {(0, 1): 0, (1, 0): 0}
    for seed in range(400):
        env = make("predator_prey")
        env.reset(seed=seed)
        _scene(env, {i: (4 + i % 2, 2 * (i // 2)) for i in range(8)}, {0: (0, 0)})
        env.step(_stay())
        counts[tuple(env.prey_positions[0])] += 1  # KeyError if it stayed or jumped
    assert 150 < counts[(0, 1)] < 250 and 150 < counts[(1, 0)] < 250


# ---------------------------------------------------------------------------------------------
# Captures and rewards
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MAPS)
def test_two_adjacent_catchers_capture_for_10_and_freeze(name):
    env = make(name)
    _scene(env, {0: (5, 4), 1: (4, 5), 2: (6, 6)}, {0: (5, 5)})
    acts = _stay()
    acts[0] = acts[1] = CATCH
    r = env.step(acts)
    assert r.reward == 10.0 and not r.terminated and not r.truncated
    assert not env.prey_alive[0] and env.prey_alive[1:].all()
    assert env.frozen.tolist() == [True, True] + [False] * 6
    assert r.info["active"].tolist() == [False, False] + [True] * 6
    assert not r.obs[:2].any() and r.obs[2:, _obs_index(0, 0, 0)].all()  # frozen: zero observation
    assert r.avail[:2].tolist() == [[False, False, False, False, True, False]] * 2  # frozen: stay only
    grid = r.state.reshape(10, 10, 3)
    assert grid[..., 0].sum() == 6 and grid[..., 1].sum() == 7  # frozen predators / caught prey removed
    assert grid[5, 4, 0] == 0 and grid[4, 5, 0] == 0 and grid[5, 5, 1] == 0
    # removed predators block nothing: predator 2 walks through (5, 5) and into (5, 4)
    acts = _stay()
    acts[2] = UP
    env.step(acts)
    acts[2] = LEFT
    env.step(acts)
    acts[2] = LEFT
    r = env.step(acts)
    assert tuple(env.agent_positions[2]) == (5, 4)
    # a frozen predator's actions do nothing
    acts = _stay()
    acts[0] = DOWN
    env.step(acts)
    assert tuple(env.agent_positions[0]) == (5, 4) and env.frozen[0]


def test_three_catchers_one_capture_all_frozen():
    env = make("predator_prey_p2")
    _scene(env, {0: (5, 4), 1: (4, 5), 2: (6, 5)}, {0: (5, 5)})
    acts = _stay()
    acts[:3] = CATCH
    r = env.step(acts)
    assert r.reward == 10.0 and env.frozen[:3].all() and not env.frozen[3:].any()


@pytest.mark.parametrize("name, p", [("predator_prey", 0.0), ("predator_prey_p2", -2.0)])
def test_lone_catch_gets_the_punishment(name, p):
    env = make(name)
    _scene(env, {0: (5, 4), 1: (4, 4), 2: (2, 2)}, {0: (5, 5)})  # predator 1 is diagonal: not adjacent
    acts = _stay()
    acts[0] = acts[1] = CATCH
    r = env.step(acts)
    assert r.reward == p and env.prey_alive.all() and not env.frozen.any()
    # the partner must catch too: the other adjacent predator moving does not help
    _scene(env, {0: (5, 4), 1: (4, 5)}, {0: (5, 5)})
    acts = _stay()
    acts[0], acts[1] = CATCH, UP
    assert env.step(acts).reward == p and env.prey_alive.all()
    # catching with no prey adjacent (an unavailable action) is neither a capture nor punished
    _scene(env, {0: (2, 2)}, {0: (5, 5)})
    acts = _stay()
    acts[0] = CATCH
    assert env.step(acts).reward == 0.0


def test_punishment_per_prey():
    env = make("predator_prey_p2")
    # predator 0 between prey 0 and prey 1, alone: punished once per prey
    _scene(env, {0: (5, 5)}, {0: (5, 4), 1: (5, 6)})
    acts = _stay()
    acts[0] = CATCH
    assert env.step(acts).reward == -4.0
    # two lone catchers at two prey: -2 each; and a capture elsewhere in the same step: +10
    _scene(env, {0: (1, 1), 1: (1, 7), 2: (6, 4), 3: (5, 5)}, {0: (1, 2), 1: (1, 8), 2: (6, 5)})
    acts = _stay()
    acts[:4] = CATCH
    assert env.step(acts).reward == 10.0 - 4.0


def test_frozen_catcher_no_longer_counts_for_a_second_prey():
    # predators 0 and 1 both touch prey 0 and prey 1 (squares around them); whichever prey is processed
    # first is captured and freezes both, so the other prey has no catcher left: +10, never -2 or +20
    rewards = set()
    for seed in range(20):
        env = make("predator_prey_p2")
        env.reset(seed=seed)
        _scene(env, {0: (5, 5), 1: (6, 6)}, {0: (5, 6), 1: (6, 5)})
        acts = _stay()
        acts[:2] = CATCH
        r = env.step(acts)
        rewards.add(r.reward)
        assert env.prey_alive[:2].sum() == 1 and env.frozen[:2].all()
    assert rewards == {10.0}


# ---------------------------------------------------------------------------------------------
# Episode ends
# ---------------------------------------------------------------------------------------------
def test_time_limit_truncates():
    env = make("predator_prey")
    env.reset(seed=1)
    for t in range(1, 201):
        r = env.step(_stay())
        assert not r.terminated and r.truncated == (t == 200)
    assert env.t == 200
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_stay())


def test_all_prey_caught_terminates():
    env = PredatorPreyEnv(-2.0, n_agents=4, n_prey=1, world_shape=(5, 5))
    env.reset(seed=0)
    env.set_positions([(2, 1), (1, 2), (4, 4), (0, 0)], [(2, 2)])
    r = env.step(np.array([CATCH, CATCH, STAY, STAY]))
    assert r.reward == 10.0 and r.terminated and not r.truncated
    with pytest.raises(RuntimeError):
        env.step(np.array([STAY] * 4))


def test_all_predators_frozen_terminates():
    # the paper's 8 predators can make at most 4 captures: then every predator is frozen
    env = make("predator_prey")
    agents = {0: (1, 0), 1: (0, 1), 2: (1, 9), 3: (0, 8), 4: (8, 0), 5: (9, 1), 6: (8, 9), 7: (9, 8)}
    _scene(env, agents, {0: (0, 0), 1: (0, 9), 2: (9, 0), 3: (9, 9), 4: (5, 5), 5: (4, 4), 6: (3, 5), 7: (5, 3)})
    r = env.step(np.full(8, CATCH))
    assert r.reward == 40.0 and r.terminated and not r.truncated
    assert env.frozen.all() and env.prey_alive.sum() == 4 and not r.info["active"].any()
    # three captures leave two predators: not the end
    _scene(env, agents, {0: (0, 0), 1: (0, 9), 2: (9, 0), 3: (9, 9), 4: (5, 5), 5: (4, 4), 6: (3, 5), 7: (5, 3)})
    acts = np.full(8, CATCH)
    acts[6:] = STAY
    r = env.step(acts)
    assert r.reward == 30.0 and not r.terminated and not r.truncated


def test_errors():
    env = make("predator_prey")
    with pytest.raises(RuntimeError, match="reset"):
        env.step(_stay())
    env.reset(seed=0)
    for bad in (np.full(7, STAY), np.full(8, 6), np.full(8, -1), np.full(8, 1.5)):
        with pytest.raises(ValueError, match="integer actions in 0..5"):
            env.step(bad)
    assert env.step(np.full(8, 4.0)).reward == 0.0  # integral floats are fine
    with pytest.raises(ValueError):
        PredatorPreyEnv(n_agents=60, n_prey=50)
    with pytest.raises(ValueError, match="one cell"):
        env.set_positions([(0, 0)] * 8, SPARE_PREY)


# ---------------------------------------------------------------------------------------------
# Seeds, pickling, vector envs
# ---------------------------------------------------------------------------------------------
def _rollout(env: PredatorPreyEnv, steps: int, seed: int = 123, avail: np.ndarray | None = None):
    """Random available actions (catch half the time where possible) from ``avail`` (None: reset
    first); resets without a seed at episode ends. Returns the outputs and the last ``avail``."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(steps):
        if avail is None:
            obs, state, avail = env.reset()
            out.append((obs, state, avail))
        acts = np.where(avail, rng.random(avail.shape), -1.0).argmax(1)
        acts[avail[:, CATCH] & (rng.random(len(acts)) < 0.5)] = CATCH
        r = env.step(acts)
        out.append(r)
        avail = None if (r.terminated or r.truncated) else r.avail
    return out, avail


def _same(a, b) -> bool:
    if isinstance(a, tuple):  # StepResult or a reset's (obs, state, avail)
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.dtype == b.dtype and np.array_equal(a, b)
    return a == b


def test_seeding_is_deterministic_and_reset_none_continues():
    a, b, c = make("predator_prey_p2"), make("predator_prey_p2"), make("predator_prey_p2")
    ra, _ = _rollout(a, 450, avail=a.reset(seed=7)[2])  # resets with None at episode ends
    rb, _ = _rollout(b, 450, avail=b.reset(seed=7)[2])
    rc, _ = _rollout(c, 450, avail=c.reset(seed=8)[2])
    assert len(ra) == len(rb) and all(_same(x, y) for x, y in zip(ra, rb))
    assert not all(_same(x, y) for x, y in zip(ra, rc))
    assert sum(not isinstance(x, StepResult) for x in ra) >= 2  # later episodes continued the stream
    assert {x.reward for x in ra if isinstance(x, StepResult)} & {-2.0, -4.0}  # lone catches happened
    # reset(seed) restarts the stream; reset(None) continues it (a new placement)
    first = a.reset(seed=7)[1]
    assert np.array_equal(first, b.reset(seed=7)[1]) and not np.array_equal(first, a.reset()[1])


def test_pickle_round_trip_mid_episode():
    env = make("predator_prey_p2")
    _, avail = _rollout(env, 57, avail=env.reset(seed=3)[2])
    assert avail is not None and env.t == 57
    clone = pickle.loads(env.get_state())
    assert clone.t == 57 and np.array_equal(clone.agent_positions, env.agent_positions)
    ra, _ = _rollout(env, 300, seed=9, avail=avail)
    rb, _ = _rollout(clone, 300, seed=9, avail=avail)
    assert len(ra) == len(rb) and all(_same(x, y) for x, y in zip(ra, rb))
    assert any(not isinstance(x, StepResult) for x in ra)  # crossed an episode end


@pytest.mark.parametrize("mode", ["inproc", "subproc"])
def test_process_vector_env(mode):
    fns = [functools.partial(make, "predator_prey_p2")] * 2
    kwargs = {"n_workers": 2} if mode == "subproc" else {}
    ref = [make("predator_prey_p2"), make("predator_prey_p2")]
    ref_out = [e.reset(seed=s) for e, s in zip(ref, (4, 5))]
    with ProcessVectorEnv(fns, mode=mode, **kwargs) as vec:
        assert vec.spec == ref[0].spec
        out = vec.reset([4, 5])
        assert np.array_equal(out.obs, np.stack([o[0] for o in ref_out]))
        assert np.array_equal(out.state, np.stack([o[1] for o in ref_out]))
        avail, rng = out.avail, np.random.default_rng(0)
        returns, lengths, n_ended = np.zeros(2), np.zeros(2, dtype=int), 0
        for _ in range(205):
            acts = np.where(avail, rng.random(avail.shape), -1.0).argmax(-1)
            step = vec.step(acts)
            refs = [e.step(a) for e, a in zip(ref, acts)]
            returns += [r.reward for r in refs]
            lengths += 1
            assert step.reward.tolist() == [r.reward for r in refs]
            assert step.terminated.tolist() == [r.terminated for r in refs]
            assert step.truncated.tolist() == [r.truncated for r in refs]
            assert np.array_equal(step.final_state, np.stack([r.state for r in refs]))
            assert np.array_equal(step.final_active, np.stack([r.info["active"] for r in refs]))
            for i, r in enumerate(refs):
                if r.terminated or r.truncated:  # auto-reset: the env continues its own stream
                    n_ended += 1
                    assert step.episode_length[i] == lengths[i] and np.isclose(step.episode_return[i], returns[i])
                    returns[i], lengths[i] = 0.0, 0
                    o = ref[i].reset()
                    r = StepResult(o[0], o[1], o[2], 0.0, False, False, {"active": np.ones(8, dtype=bool)})
                assert np.array_equal(step.obs[i], r.obs) and np.array_equal(step.state[i], r.state)
                assert np.array_equal(step.avail[i], r.avail) and np.array_equal(step.active[i], r.info["active"])
            avail = step.avail
        assert n_ended >= 2  # 205 steps cross the 200-step limit (or an earlier end)


def test_configs_compose():
    for name in MAPS:
        cfg = make_config("algo=mappo", "env=games", f"map={name}")
        assert cfg.env.map_name == name and cfg.env.vector == "inproc"
        assert cfg.model.recurrent and cfg.rollout_length == 200
    cfg = make_config("algo=mappo", "env=games", "map=pymarl2_matrix")
    assert cfg.rollout_length == 10 and not cfg.model.recurrent


# ---------------------------------------------------------------------------------------------
# Step-by-step comparison with a plain (slow, loop-and-grid) statement of the rules
# ---------------------------------------------------------------------------------------------
_MOVES = {RIGHT: (0, 1), DOWN: (1, 0), LEFT: (0, -1), UP: (-1, 0)}


class _Recorder:
    """Wraps the env's Generator and keeps the draws of the last step."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng, self.last = rng, None

    def random(self, n):
        self.last = self.rng.random(n)
        return self.last


def _reference_step(env: PredatorPreyEnv, agents, prey, alive, frozen, acts, draws):
    """The rules of the module docstring, written out with a grid and loops."""
    h, w, n, m = env.height, env.width, env.n_agents, env.n_prey
    occupied = np.zeros((h, w), dtype=bool)
    for i in range(n):
        if not frozen[i]:
            occupied[agents[i]] = True
    for j in range(m):
        if alive[j]:
            occupied[prey[j]] = True
    inside = lambda r, c: 0 <= r < h and 0 <= c < w  # noqa: E731
    for i in np.argsort(draws[:n], kind="stable"):
        if frozen[i] or acts[i] not in _MOVES:
            continue
        r, c = agents[i]
        nr, nc = r + _MOVES[acts[i]][0], c + _MOVES[acts[i]][1]
        if inside(nr, nc) and not occupied[nr, nc]:
            occupied[r, c], occupied[nr, nc], agents[i] = False, True, (nr, nc)
    reward = 0.0
    for j in np.argsort(draws[n:n + m], kind="stable"):
        if not alive[j]:
            continue
        r, c = prey[j]
        catchers = [i for i in range(n) if acts[i] == CATCH and not frozen[i]
                    and abs(agents[i][0] - r) + abs(agents[i][1] - c) == 1]
        if len(catchers) >= 2:
            alive[j], occupied[r, c] = False, False
            reward += 10.0
            for i in catchers:
                frozen[i], occupied[agents[i]] = True, False
            continue
        if catchers:
            reward += env.miscapture_punishment
        free = [(r + dr, c + dc) for dr, dc in _MOVES.values()
                if inside(r + dr, c + dc) and not occupied[r + dr, c + dc]]
        if free:
            nr, nc = free[int(draws[n + m + j] * len(free))]
            occupied[r, c], occupied[nr, nc], prey[j] = False, True, (nr, nc)
    return reward


def _reference_view(env: PredatorPreyEnv, agents, prey, alive, frozen):
    h, w, n = env.height, env.width, env.n_agents
    grid = np.zeros((h, w, 3), dtype=np.float32)
    for i in range(n):
        if not frozen[i]:
            grid[agents[i] + (0,)] = 1
    for j in range(env.n_prey):
        if alive[j]:
            grid[prey[j] + (1,)] = 1
    obs = np.zeros((n, 5, 5, 3), dtype=np.float32)
    avail = np.zeros((n, 6), dtype=bool)
    for i in range(n):
        if frozen[i]:
            avail[i, STAY] = True
            continue
        r, c = agents[i]
        for dr in range(-2, 3):
            for dc in range(-2, 3):
                if 0 <= r + dr < h and 0 <= c + dc < w:
                    obs[i, dr + 2, dc + 2] = grid[r + dr, c + dc]
        for u, (dr, dc) in _MOVES.items():
            inside = 0 <= r + dr < h and 0 <= c + dc < w
            avail[i, u] = inside
            avail[i, CATCH] |= inside and bool(grid[r + dr, c + dc, 1])
        avail[i, STAY] = True
    return obs.reshape(n, -1), grid.reshape(1, -1), avail


@pytest.mark.parametrize(
    "kwargs",
    [
        {"miscapture_punishment": 0.0},
        {"miscapture_punishment": -2.0},
        {"miscapture_punishment": -2.0, "n_agents": 6, "n_prey": 5, "world_shape": (3, 4), "episode_limit": 60},
        {"miscapture_punishment": -1.0, "n_agents": 4, "n_prey": 2, "world_shape": (5, 5), "episode_limit": 80},
    ],
)
def test_matches_a_plain_statement_of_the_rules(kwargs):
    env = PredatorPreyEnv(**kwargs)
    rng = np.random.default_rng(11)
    obs, state, avail = env.reset(seed=5)
    rewards, ends = set(), 0
    for _ in range(1500):
        agents = [tuple(p) for p in env.agent_positions.tolist()]
        prey = [tuple(p) for p in env.prey_positions.tolist()]
        alive, frozen = env.prey_alive.tolist(), env.frozen.tolist()
        ref_obs, ref_state, ref_avail = _reference_view(env, agents, prey, alive, frozen)
        assert np.array_equal(obs, ref_obs) and np.array_equal(state, ref_state) and np.array_equal(avail, ref_avail)
        scores = rng.random(avail.shape)
        acts = np.where(rng.random(avail.shape) < 0.95, np.where(avail, scores, -1.0), scores).argmax(1)
        acts[avail[:, CATCH] & (rng.random(len(acts)) < 0.6)] = CATCH  # (sometimes an unavailable action)
        recorder = _Recorder(env._rng)
        env._rng = recorder
        r = env.step(acts)
        env._rng = recorder.rng
        ref_reward = _reference_step(env, agents, prey, alive, frozen, acts.tolist(), recorder.last.tolist())
        assert r.reward == pytest.approx(ref_reward)
        rewards.add(r.reward)
        assert [tuple(p) for p in env.agent_positions.tolist()] == agents
        assert [tuple(p) for p in env.prey_positions.tolist()] == prey
        assert env.prey_alive.tolist() == alive and env.frozen.tolist() == frozen
        assert r.info["active"].tolist() == [not f for f in frozen]
        assert r.terminated == (not any(alive) or all(frozen))
        assert r.truncated == (not r.terminated and env.t == env.spec.episode_limit)
        if r.terminated or r.truncated:
            ends += 1
            obs, state, avail = env.reset()
        else:
            obs, state, avail = r.obs, r.state, r.avail
    assert ends >= 3 and any(x >= 10 for x in rewards)  # several episodes, captures happened
    if kwargs["miscapture_punishment"]:
        assert any(x < 0 for x in rewards)
