"""Small helpers that several env wrappers and both vector envs share (numpy only).

- ``STATE_TYPES`` and ``resolve_state_type``: the critic-state choice of SMAC, SMACv2, SMAX and GRF.
- ``derive_seed``: a fresh, deterministic seed for an env that is reset behind the caller's back.
- ``VECTOR_STATE_FORMAT`` and ``check_vector_state``: the checkpoint format of the vector envs.
- ``usable_cpus``: the cores this process may run on.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from marlopt.envs.base import EnvSpec

#: The critic states an env may offer: ``EP`` the environment-provided global state (one row),
#: ``FP`` an agent-specific (feature-pruned) state, one row per agent.
STATE_TYPES = ("EP", "FP")


def resolve_state_type(state_type: str | None, env_name: str) -> str:
    """``state_type`` as ``"EP"`` or ``"FP"`` (``None`` is ``"EP"``; any case); else ``ValueError``."""
    resolved = "EP" if state_type is None else str(state_type).upper()
    if resolved not in STATE_TYPES:
        raise ValueError(f"{env_name} state_type must be one of {list(STATE_TYPES)}, got {state_type!r}")
    return resolved


def derive_seed(base: int | None, *stream: int, tag: int) -> int:
    """A fresh 32-bit seed derived from ``base`` and the ints ``stream`` (e.g. env index, restart
    count), on a stream other than ``base``'s own; ``tag`` tells the callers' streams apart."""
    entropy = [int(base or 0) % (2**63), *stream, tag]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint32)[0])


def usable_cpus() -> int:
    """The number of CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


#: ``get_state()`` of both vector envs: a dict with ``format`` (this string), ``num_envs``, ``spec``
#: (``dataclasses.asdict(EnvSpec)``), ``envs`` (one ``MultiAgentEnv.get_state()`` blob or ``None``
#: per env), ``episode_return`` / ``episode_length`` (the episodes in flight so far), ``seeds``,
#: ``restarts`` and ``last`` (the last ``VecObs`` returned, as a plain tuple of arrays). Nothing in
#: it names a marlopt class except inside the env blobs, so either vector env loads the other's.
VECTOR_STATE_FORMAT = "marlopt.VectorEnv/1"


def check_vector_state(state: dict[str, Any], num_envs: int, spec: EnvSpec) -> None:
    """Raise ``ValueError`` unless ``state`` is a vector env snapshot for ``num_envs`` envs of ``spec``."""
    if state.get("format") != VECTOR_STATE_FORMAT:
        raise ValueError(f"not a vector env state (format {state.get('format')!r}, "
                         f"expected {VECTOR_STATE_FORMAT!r})")
    if state["num_envs"] != num_envs:
        raise ValueError(f"state has {state['num_envs']} envs, this vector env has {num_envs}")
    if state["spec"] != dataclasses.asdict(spec):
        raise ValueError(f"state was saved for spec {state['spec']}, this env has {spec}")
