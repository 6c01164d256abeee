"""Which StarCraft backend the SC2 tests run against, and how the stand-in is switched on.

- ``backend("smac")`` / ``backend("smacv2")``: ``"real"`` where the real package is installed (the
  tests then run against it and StarCraft II, marked ``sc2``), else ``"standin"``.
- ``activate(monkeypatch, tmp_path)``: for the stand-in, put ``tests/standins`` first on
  ``sys.path`` and ``PYTHONPATH`` (spawned env workers and subprocesses see it too) and point
  ``SC2PATH`` at a fake StarCraft II install (``Versions/Base*/SC2_x64``, ``Maps/SMAC_Maps/*``);
  for the real backend, require ``SC2PATH`` (skip otherwise).
- ``forget_modules()``: drop the imported ``smac*`` modules so other tests never see the stand-in.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import sys
from pathlib import Path

import pytest

STANDINS = Path(__file__).resolve().parent
SMAC_MAPS = ["3m", "8m", "25m", "5m_vs_6m", "8m_vs_9m", "10m_vs_11m", "27m_vs_30m", "MMM", "MMM2", "2s3z",
             "3s5z", "3s5z_vs_3s6z", "3s_vs_3z", "3s_vs_4z", "3s_vs_5z", "1c3s5z", "2m_vs_1z", "corridor",
             "6h_vs_8z", "2s_vs_1sc", "so_many_baneling", "bane_vs_bane", "2c_vs_64zg", "32x32_flat"]


def _same(path: str) -> bool:
    try:
        return Path(path or ".").resolve() == STANDINS
    except OSError:
        return False


@functools.lru_cache(maxsize=None)
def backend(package: str) -> str:
    """``"real"`` if the real ``<package>.env`` is importable without the stand-ins, else
    ``"standin"`` (PyPI's ``smac``, the SMAC3 optimiser, has no ``smac.env``: stand-in)."""
    def ours(name: str) -> bool:
        return name == package or name.startswith(package + ".")

    saved_path = sys.path[:]
    saved_modules = {k: sys.modules.pop(k) for k in list(sys.modules) if ours(k)}
    try:
        sys.path[:] = [p for p in sys.path if not _same(p)]
        importlib.invalidate_caches()
        return "real" if importlib.util.find_spec(f"{package}.env") is not None else "standin"
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return "standin"
    finally:
        for k in [k for k in sys.modules if ours(k)]:
            del sys.modules[k]
        sys.modules.update(saved_modules)
        sys.path[:] = saved_path


def forget_modules() -> None:
    for name in list(sys.modules):
        if name.split(".")[0] in ("smac", "smacv2", "_sc2_standin_core"):
            mod = sys.modules[name]
            path = getattr(mod, "__file__", None)
            if path and STANDINS in Path(path).resolve().parents:
                del sys.modules[name]


def fake_sc2_install(root: Path) -> Path:
    """A directory that looks like a StarCraft II install with the SMAC/SMACv2 maps."""
    (root / "Versions" / "Base75689").mkdir(parents=True, exist_ok=True)
    (root / "Versions" / "Base75689" / "SC2_x64").write_text("stand-in\n")
    maps = root / "Maps" / "SMAC_Maps"
    maps.mkdir(parents=True, exist_ok=True)
    for name in SMAC_MAPS:
        (maps / f"{name}.SC2Map").write_text("stand-in\n")
    return root


def activate(package: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """Switch the stand-in on for one test (see the module docstring); returns the backend."""
    which = backend(package)
    if which == "real":
        if not os.environ.get("SC2PATH") and not Path("~/StarCraftII").expanduser().is_dir():
            pytest.skip("real smac/smacv2 installed but StarCraft II is not (set SC2PATH)")
        return which
    monkeypatch.syspath_prepend(str(STANDINS))
    paths = [str(STANDINS)] + [p for p in [os.environ.get("PYTHONPATH", "")] if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(paths))
    monkeypatch.setenv("SC2PATH", str(fake_sc2_install(tmp_path / "StarCraftII")))
    for var in ("CRASH_PROB", "CRASH_AT_STEP", "CRASH_KIND", "CRASH_SEED", "HANG_AT_STEP", "EXIT_AT_STEP",
                "FAULT_ONCE", "PID_DIR"):
        monkeypatch.delenv(f"MARLOPT_STANDIN_{var}", raising=False)
    return which


# -- small policies and process checks shared by the SC2 tests --------------------------------
def random_actions(avail, rng):
    """One available action per agent, uniformly."""
    import numpy as np

    return np.array([rng.choice(np.flatnonzero(row)) for row in avail])


def greedy_actions(avail, n_no_attack: int = 6):
    """Attack the first enemy in range, else move east (towards the enemy), else stop."""
    import numpy as np

    out = []
    for row in avail:
        attack = np.flatnonzero(row[n_no_attack:])
        if row[0]:
            out.append(0)
        elif attack.size:
            out.append(n_no_attack + int(attack[0]))
        elif row[4]:
            out.append(4)
        else:
            out.append(1)
    return np.array(out)


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs (zombies count as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
