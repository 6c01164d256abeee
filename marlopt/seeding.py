"""Seeds and RNG state: one place decides every seed a run uses, so runs never share seeds.

Training env ``i`` of a run with seed ``s`` gets ``s * 100_003 + i``; evaluation envs get
``s * 100_003 + 50_000 + i``: distinct across envs, across train/eval, and across seeds.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

_STRIDE = 100_003
EVAL_OFFSET = 50_000


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def env_seeds(seed: int, n: int, offset: int = 0) -> list[int]:
    return [seed * _STRIDE + offset + i for i in range(n)]


def rng_state() -> dict[str, Any]:
    """All global RNG states, as types ``torch.load(weights_only=True)`` accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
