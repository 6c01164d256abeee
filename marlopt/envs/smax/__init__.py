"""SMAX: JaxMARL's JAX re-implementation of SMAC micromanagement, behind marlopt's protocols.

Two ways to run it, one behaviour:

- ``make(map_name, **options) -> SMAXEnv``: one ``MultiAgentEnv`` (for ``ProcessVectorEnv``,
  evaluation, anything that takes an env). ``reset``/``step`` are JAX functions compiled once per SMAX
  configuration per process (every env object of that configuration shares them).
- ``make_vector(map_name, n_envs, **options) -> SmaxVectorEnv``: E copies stepped by one
  ``jax.jit(jax.vmap(...))`` call, implementing the ``VectorEnv`` protocol (``spec``,
  ``num_envs``, ``reset(seeds)``, ``step(actions) -> VecStep``, auto-reset, ``get_state`` /
  ``set_state``, ``close``). Env ``i`` of it follows the same random stream, and so the same
  trajectory, as ``SMAXEnv`` ``i`` of a ``ProcessVectorEnv`` reset with the same seeds and given the
  same actions (``tests/envs/smax/test_vector.py`` checks this).

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
print to stdout); see ``loading._load_smax``.

Modules: ``config`` (maps, options, ``SmaxConfig``), ``loading`` (importing JAX and JaxMARL),
``core`` (the jitted functions of one configuration), ``env`` (``SMAXEnv``, ``make``), ``vector``
(``SmaxVectorEnv``, ``make_vector``).
"""

from marlopt.envs.jax_core import seed_to_key
from marlopt.envs.smax.config import MAPS, OPTIONS, SmaxConfig
from marlopt.envs.smax.env import SMAXEnv, _unpickle_env, check_available, make
from marlopt.envs.smax.loading import INSTALL
from marlopt.envs.smax.vector import SmaxVectorEnv, make_vector

# ``SMAXEnv`` and ``_unpickle_env`` are pickled under this package's name (see ``env.PICKLE_MODULE``).
__all__ = [
    "INSTALL",
    "MAPS",
    "OPTIONS",
    "SMAXEnv",
    "SmaxConfig",
    "SmaxVectorEnv",
    "_unpickle_env",
    "check_available",
    "make",
    "make_vector",
    "seed_to_key",
]
