"""Is StarCraft II installed here? Checks that fail in one line naming the fix (``SC2UnavailableError``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

INSTALL_SC2 = "bash scripts/install_sc2.sh"  # StarCraft II 4.10 + the SMAC/SMACv2 maps into $SC2PATH


class SC2UnavailableError(ImportError):
    """The simulator cannot run here (package or StarCraft II missing). The message is one line
    that names the fix."""



def sc2_path() -> Path:
    """Where pysc2 looks for StarCraft II on Linux: ``$SC2PATH``, else ``~/StarCraftII``."""
    return Path(os.environ.get("SC2PATH") or "~/StarCraftII").expanduser()


def check_sc2_install(map_file: str) -> None:
    """Raise ``SC2UnavailableError`` unless StarCraft II and ``Maps/SMAC_Maps/<map_file>`` exist."""
    root = sc2_path()
    where = f"$SC2PATH={os.environ['SC2PATH']}" if os.environ.get("SC2PATH") else "SC2PATH unset"
    fix = f"install it with `{INSTALL_SC2}` (StarCraft II 4.10 + SMAC/SMACv2 maps) and export SC2PATH=<that dir>"
    if not root.is_dir():
        raise SC2UnavailableError(f"StarCraft II not found at {root} ({where}); {fix}")
    if not any((root / "Versions").glob("Base*/SC2_x64")):
        raise SC2UnavailableError(
            f"no StarCraft II binary under {root}/Versions/Base*/SC2_x64 ({where}); {fix}"
        )
    map_path = root / "Maps" / "SMAC_Maps" / map_file
    if not map_path.is_file():
        raise SC2UnavailableError(
            f"map file {map_path} is missing; install the SMAC/SMACv2 maps with `{INSTALL_SC2}`"
        )


def import_attr(module: str, attr: str, fix: str) -> Any:
    """``module.attr``, or ``SC2UnavailableError`` with the install line ``fix``."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ImportError as err:
        reason = (str(err).splitlines() or [type(err).__name__])[0]
        raise SC2UnavailableError(f"{module} could not be imported ({reason}); {fix}") from err
    try:
        return getattr(mod, attr)
    except AttributeError as err:
        raise SC2UnavailableError(f"{module} has no {attr} (wrong package installed?); {fix}") from err

