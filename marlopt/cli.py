"""What the command-line entry points share: config discovery, early checks, run-config loading.

Wrong input fails before anything is built or written, with one line that names the problem and
the fix: unknown ``algo``/``env``/``map`` (listing the valid choices), a map of another env, a bad
value (naming the key).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

from omegaconf import DictConfig, OmegaConf

from marlopt.config import ConfigError, TrainConfig, register_configs, to_objects

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
GROUPS = ("algo", "env", "map")
DEFAULTS = {"algo": "mappo", "env": "mpe", "map": "simple_spread"}


def fail(message: str, code: int = 2) -> NoReturn:
    print(f"marlopt: error: {message}", file=sys.stderr)
    sys.exit(code)


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def map_envs(map_name: str) -> list[str]:
    """The envs a map exists in (its YAML's ``map_envs``)."""
    return [str(e) for e in OmegaConf.load(CONFIG_DIR / "map" / f"{map_name}.yaml").get("map_envs", [])]


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """``key=value`` pairs of the command line (flags such as ``-m`` skipped)."""
    out = {}
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            out[key.lstrip("+~")] = value
    return out


def check_choices(argv: list[str]) -> None:
    """Validate ``algo=``, ``env=``, ``map=`` (comma lists in sweeps) against ``configs/``."""
    given = parse_overrides(argv)
    selected: dict[str, list[str]] = {}
    for group in GROUPS:
        values = given.get(group, DEFAULTS[group]).split(",")
        valid = choices(group)
        for value in values:
            if value not in valid:
                raise ConfigError(f"unknown {group} '{value}'; valid choices: {', '.join(valid)}")
        selected[group] = values
    for env in selected["env"]:
        for map_name in selected["map"]:
            owners = map_envs(map_name)
            if env not in owners:
                if "map" not in given and "env" in given:
                    valid = [m for m in choices("map") if env in map_envs(m)]
                    raise ConfigError(f"env={env} needs a map (the default map belongs to env={owners[0]}); "
                                      f"valid maps for env={env}: {', '.join(valid)}")
                raise ConfigError(f"map '{map_name}' belongs to env={'|'.join(owners)}, not env={env}; "
                                  f"use env={owners[0]} map={map_name}")


def compose(overrides: list[str]) -> DictConfig:
    """Compose the config like ``python -m marlopt.train`` would, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def parse_value(text: str) -> object:
    """A command-line value as Hydra would read it (numbers such as ``2e6``, booleans, null)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"x={text}").value()


def load_run_config(run_dir: Path, changes: dict[str, str] | None = None) -> tuple[DictConfig, TrainConfig]:
    """The saved config of a run directory, typed and validated (``changes`` applied on top)."""
    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a marlopt run directory (no .hydra/config.yaml)")
    saved = OmegaConf.load(hydra_dir / "config.yaml")
    overrides_file = hydra_dir / "overrides.yaml"
    overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("resume=")]
    composed = compose(overrides)
    cfg = OmegaConf.merge(composed, saved)
    for key, value in (changes or {}).items():
        OmegaConf.update(cfg, key, parse_value(value), merge=False)
    assert isinstance(cfg, DictConfig)
    return cfg, to_objects(cfg)
