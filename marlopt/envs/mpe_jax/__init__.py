"""MPE on JaxMARL's JAX port (``env=mpe env.backend=jax``), behind marlopt's protocols.

``env=mpe`` has two simulators (``env.backend``, default ``mpe2``):

- ``mpe2``: ``marlopt.envs.mpe`` (the maintained PettingZoo MPE; one env per object, stepped by
  ``ProcessVectorEnv`` in any of its modes).
- ``jax``: JaxMARL's MPE (``jaxmarl.environments.mpe``), all E envs stepped by one
  ``jax.jit(jax.vmap(...))`` call through the batched vector env path SMAX uses
  (``env.vector=batched``: ``make_vector(map_name, n_envs, **options) -> MpeJaxVectorEnv``).
  ``make(map_name, backend="jax", ...)`` gives one ``MPEJaxEnv`` (evaluation, anything that takes an
  env). Needs the ``smax`` extra (jax, jaxmarl): ``pip install -e ".[smax]"``.

Same maps (simple_spread, simple_reference, simple_speaker_listener), options (``n_agents``,
``continuous``, ``max_cycles``, ``local_ratio``, ``team_reward``) and conventions as
``marlopt.envs.mpe``: team reward = the sum (or mean) of the agents' rewards, truncated after
``max_cycles`` steps, never terminated, observations zero-padded to the largest agent's, state = all agents' unpadded observations in one
row, discrete ids padded with ``avail`` masking the padding, continuous actions in mpe2's Box
(``[0, 1]``, clipped) padded to the largest dimension. ``tests/envs/test_mpe_jax.py`` checks that
both backends give the same observations, state, rewards and truncation (1e-4) from the same world
state and actions, for all three maps, discrete and continuous. Random worlds differ: JAX's PRNG
(``reset(seed)``: the key of the 64-bit seed, as SMAX) draws other starts than mpe2's numpy RNG, so
seeded runs of the two backends differ (statistically the same task).

JAX and JaxMARL are imported when the first JAX env is built (never by ``import marlopt.envs``), and
only JaxMARL's three MPE scenario modules are loaded (``core._load_scenarios``).

Modules: ``core`` (``MpeJaxConfig``, the jitted functions of one configuration), ``env``
(``MPEJaxEnv``, ``make``: the registered maker of ``env=mpe``, which picks the backend), ``vector``
(``MpeJaxVectorEnv``, ``make_vector``).
"""

from marlopt.envs.mpe_jax.core import INSTALL, MpeJaxConfig
from marlopt.envs.mpe_jax.env import BACKENDS, MPEJaxEnv, make
from marlopt.envs.mpe_jax.vector import MpeJaxVectorEnv, make_vector

__all__ = ["BACKENDS", "INSTALL", "MPEJaxEnv", "MpeJaxConfig", "MpeJaxVectorEnv", "make", "make_vector"]
