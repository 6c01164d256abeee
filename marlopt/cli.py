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


def search_dirs(argv: list[str] | None = None) -> list[Path]:
    """marlopt's config directory, then the ``file://`` directories of ``hydra.searchpath=[...]``."""
    dirs = [CONFIG_DIR]
    value = parse_overrides(argv or []).get("hydra.searchpath", "")
    for item in value.strip("[]").split(","):
        item = item.strip().strip("'\"")
        if item.startswith("file://"):
            dirs.append(Path(item[len("file://"):]))
    return dirs


def config_file(group: str, name: str, argv: list[str] | None = None) -> Path | None:
    """The YAML of ``group=name`` (the last search directory that has it wins, as in Hydra)."""
    found = [d / group / f"{name}.yaml" for d in search_dirs(argv) if (d / group / f"{name}.yaml").is_file()]
    return found[-1] if found else None


def choices(group: str, argv: list[str] | None = None) -> list[str]:
    return sorted({p.stem for d in search_dirs(argv) for p in (d / group).glob("*.yaml")})


def map_envs(map_name: str, argv: list[str] | None = None) -> list[str]:
    """The envs a map exists in (its YAML's ``map_envs``)."""
    path = config_file("map", map_name, argv)
    return [] if path is None else [str(e) for e in OmegaConf.load(path).get("map_envs", [])]


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
        valid = choices(group, argv)
        for value in values:
            if value not in valid:
                raise ConfigError(f"unknown {group} '{value}'; valid choices: {', '.join(valid)}")
        selected[group] = values
    for env in selected["env"]:
        for map_name in selected["map"]:
            owners = map_envs(map_name, argv)
            if env not in owners:
                if "map" not in given and "env" in given:
                    valid = [m for m in choices("map", argv) if env in map_envs(m, argv)]
                    raise ConfigError(f"env={env} needs a map (the default map belongs to env={owners[0]}); "
                                      f"valid maps for env={env}: {', '.join(valid)}")
                raise ConfigError(f"map '{map_name}' belongs to env={'|'.join(owners)}, not env={env}; "
                                  f"use env={owners[0]} map={map_name}")


def job_overrides(argv: list[str]) -> list[str]:
    """The overrides that make up one job's config: ``key=value`` arguments, and of Hydra's own
    settings only ``hydra.searchpath`` (it decides which YAMLs exist)."""
    out = []
    for arg in argv:
        if "=" not in arg or arg.startswith("-"):
            continue
        key = arg.lstrip("+~").split("=", 1)[0]
        if not key.startswith("hydra.") or key == "hydra.searchpath":
            out.append(arg)
    return out


_RENAME_NOTES: set[str] = set()  # old names already announced in this process (one notice each)


def renamed_to(name: str, argv: list[str] | None = None) -> str | None:
    """The new name of an old algorithm name: its YAML's ``renamed_to`` (``None`` for current names)."""
    path = config_file("algo", name, argv)
    if path is None:
        return None
    value = OmegaConf.load(path).get("renamed_to")
    return None if value is None else str(value)


def apply_renames(argv: list[str]) -> list[str]:
    """``argv`` with every old algorithm name of ``algo=`` (comma lists in sweeps too) replaced by
    its new name, so that the run, its directory and the tuned configs picked by name are the new
    name's; prints ``marlopt: note: algo=<old> is now algo=<new> (same settings)`` once per old name."""
    out = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and not arg.startswith("-") and key.lstrip("+~") == "algo":
            names = []
            for name in value.split(","):
                new = renamed_to(name.strip(), argv)
                if new is not None:
                    if name not in _RENAME_NOTES:
                        _RENAME_NOTES.add(name)
                        print(f"marlopt: note: algo={name} is now algo={new} (same settings)", file=sys.stderr,
                              flush=True)
                    name = new
                names.append(name)
            arg = f"{key}={','.join(names)}"
        out.append(arg)
    return out


def usage(argv: list[str] | None = None) -> str:
    """``python -m marlopt.train --help``: the real choices of each group, read from the YAMLs."""
    algos = []
    for name in choices("algo", argv):
        path = config_file("algo", name, argv)
        algo = OmegaConf.load(path) if path is not None else {}
        if algo.get("renamed_to"):
            algos.append(f"{name} (old name of {algo.get('renamed_to')})")
            continue
        algos.append(f"{name} ({algo.get('family', '?')}, rule {algo.get('rule', '?')})")
    maps: dict[str, list[str]] = {}
    for name in choices("map", argv):
        for env in map_envs(name, argv):
            maps.setdefault(env, []).append(name)
    lines = [
        "usage: python -m marlopt.train [algo=NAME] [env=NAME] [map=NAME] [key=value ...] [-m] [resume=RUN_DIR]",
        "",
        f"defaults: algo={DEFAULTS['algo']} env={DEFAULTS['env']} map={DEFAULTS['map']}; -m sweeps comma lists "
        "(-m seed=0,1,2 algo=mappo,mars)",
        "",
        "algo:",
        *(f"  {a}" for a in algos),
        "env and its maps:",
        *(f"  {env}: {', '.join(names)}" for env, names in sorted(maps.items())),
        "",
        "Every key (seed, total_steps, n_envs, rollout_length, device, algo.*, env.*, model.*) is documented",
        "where it is defined, in marlopt/config.py; print a composed config with --cfg job.",
        "Your own algorithms: hydra.searchpath=[file://DIR] with DIR/algo/<name>.yaml (docs/architecture.md).",
    ]
    return "\n".join(lines)


def compose(overrides: list[str]) -> DictConfig:
    """Compose the config like ``python -m marlopt.train`` would, without running anything."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = apply_renames(list(overrides))  # an old algorithm name composes as its new name
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=overrides)


def parse_value(text: str) -> object:
    """A command-line value as Hydra would read it (numbers such as ``2e6``, booleans, null)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(f"x={text}").value()


def load_run_config(run_dir: Path, changes: dict[str, str] | None = None) -> tuple[DictConfig, TrainConfig]:
    """The saved config of a run directory, typed and validated: the changes earlier resumes kept
    (``.hydra/resume_changes.yaml``), then ``changes``, applied on top."""
    from marlopt.rundir import saved_changes

    hydra_dir = run_dir / ".hydra"
    if not (hydra_dir / "config.yaml").is_file():
        raise ConfigError(f"{run_dir} is not a marlopt run directory (no .hydra/config.yaml)")
    try:
        saved = OmegaConf.load(hydra_dir / "config.yaml")
        overrides_file = hydra_dir / "overrides.yaml"
        overrides = [str(o) for o in OmegaConf.load(overrides_file)] if overrides_file.is_file() else []
        hydra_file = hydra_dir / "hydra.yaml"  # the run's own algorithm directories, if it had any
        paths = [str(p) for p in OmegaConf.load(hydra_file).hydra.get("searchpath", [])] if hydra_file.is_file() else []
        kept = saved_changes(run_dir)
    except Exception as exc:  # noqa: BLE001 - YAML syntax or structure: one line naming the file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{hydra_dir} is damaged ({type(exc).__name__}: {first}); restore it from a copy, or "
                          "start a new run") from None
    if not isinstance(saved, DictConfig):
        raise ConfigError(f"{hydra_dir / 'config.yaml'} is damaged (not a mapping); restore it from a copy, or "
                          "start a new run")
    overrides = [o for o in overrides if not o.lstrip("+~").startswith("resume=")]
    if paths:
        overrides.append(f"hydra.searchpath=[{','.join(paths)}]")
    composed = compose(overrides)
    cfg = OmegaConf.merge(composed, saved)
    for key, value in {**kept, **(changes or {})}.items():
        OmegaConf.update(cfg, key, parse_value(value), merge=False)
    assert isinstance(cfg, DictConfig)
    return cfg, to_objects(cfg)
