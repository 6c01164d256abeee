"""SMAC (the StarCraft Multi-Agent Challenge) over the real ``smac`` package's ``StarCraft2Env``.

``make(map_name, **options)``; ``map_name`` is any SMAC map (``MAPS``). Options:

- ``state_type``: ``"EP"`` (default; SMAC's own ``get_state()``, one row) or ``"FP"`` (the
  feature-pruned agent-specific state of the MAPPO reference, one row per agent, all zeros but the
  agent's one-hot id once it is dead; see ``marlopt.envs.sc2.fp_state.fp_state``). Set it with ``env.state_type=EP|FP``.
- ``save_replay``: save a StarCraft II replay at the end of every episode (use it for evaluation
  runs; ``replay_dir``/``replay_prefix`` say where). ``StarCraftEnv.save_replay()`` saves one now.
- ``stacked_frames``: concatenate the last ``k`` observations/states (the MAPPO reference's
  ``--use_stacked_frames`` for 3s_vs_4z/3s_vs_5z with an MLP policy); default 1.
- anything else goes to ``smac.env.StarCraft2Env`` unchanged (``difficulty``, ``step_mul``,
  ``reward_sparse``, ``obs_last_action``, ``replay_dir``, ``game_version``, ``debug``, ...).
  ``continuing_episode`` is always True (it makes SMAC report time limits, which marlopt turns into
  ``truncated``).

Install (``SC2UnavailableError`` says the same in one line): the StarCraft ``smac`` package is not
on PyPI (PyPI's ``smac`` is SMAC3, an unrelated hyperparameter optimiser):
``pip install "smac @ git+https://github.com/oxwhirl/smac.git"``; StarCraft II 4.10 and the SMAC
maps: ``bash scripts/install_sc2.sh`` (into ``$SC2PATH``, default ``~/StarCraftII``).
"""

from __future__ import annotations

from typing import Any

from marlopt.envs.sc2 import (
    SC2UnavailableError,
    StarCraftEnv,
    check_continuous,
    check_sc2_install,
    import_attr,
    split_options,
)

PIP_SMAC = 'pip install "smac @ git+https://github.com/oxwhirl/smac.git"'
FIX = (f"install the StarCraft SMAC package with: {PIP_SMAC} (PyPI's 'smac' is the unrelated SMAC3 "
       "optimiser), then StarCraft II 4.10 + maps with: bash scripts/install_sc2.sh")

# map -> (n_agents, n_enemies, episode limit); the map file is Maps/SMAC_Maps/<map>.SC2Map
MAPS: dict[str, tuple[int, int, int]] = {
    "3m": (3, 3, 60),
    "8m": (8, 8, 120),
    "25m": (25, 25, 150),
    "5m_vs_6m": (5, 6, 70),
    "8m_vs_9m": (8, 9, 120),
    "10m_vs_11m": (10, 11, 150),
    "27m_vs_30m": (27, 30, 180),
    "MMM": (10, 10, 150),
    "MMM2": (10, 12, 180),
    "2s3z": (5, 5, 120),
    "3s5z": (8, 8, 150),
    "3s5z_vs_3s6z": (8, 9, 170),
    "3s_vs_3z": (3, 3, 150),
    "3s_vs_4z": (3, 4, 200),
    "3s_vs_5z": (3, 5, 250),
    "1c3s5z": (9, 9, 180),
    "2m_vs_1z": (2, 1, 150),
    "corridor": (6, 24, 400),
    "6h_vs_8z": (6, 8, 150),
    "2s_vs_1sc": (2, 1, 300),
    "so_many_baneling": (7, 32, 100),
    "bane_vs_bane": (24, 24, 200),
    "2c_vs_64zg": (2, 64, 400),
}

OWN_OPTIONS = ("state_type", "save_replay", "stacked_frames")
RESERVED = ("map_name", "continuing_episode")


class SMACEnv(StarCraftEnv):
    family = "smac"


def _check_map(map_name: str) -> None:
    if map_name not in MAPS:
        raise ValueError(f"unknown SMAC map {map_name!r}; valid maps: {sorted(MAPS)}")


def check_available(map_name: str) -> None:
    """Raise ``SC2UnavailableError`` (one line with the fix) unless ``map_name`` can run here."""
    _check_map(map_name)
    import_attr("smac.env", "StarCraft2Env", FIX)
    check_sc2_install(f"{map_name}.SC2Map")


def make(map_name: str, continuous: bool = False, **options: Any) -> SMACEnv:
    """Build SMAC map ``map_name`` (see the module docstring for the options)."""
    _check_map(map_name)
    check_continuous(continuous, "smac")
    mine, sc2_kwargs = split_options(options, OWN_OPTIONS, RESERVED, "smac")
    check_available(map_name)
    cls = import_attr("smac.env", "StarCraft2Env", FIX)
    try:
        raw = cls(map_name=map_name, continuing_episode=True, **sc2_kwargs)
    except TypeError as err:  # an option StarCraft2Env does not take
        raise ValueError(f"invalid smac option(s) {sorted(sc2_kwargs)}: {err}; valid options: "
                         f"{list(OWN_OPTIONS)} + smac.env.StarCraft2Env's keyword arguments") from err
    return SMACEnv(raw, raw, map_name, **mine)


__all__ = ["MAPS", "SC2UnavailableError", "SMACEnv", "check_available", "make"]
