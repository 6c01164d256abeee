"""The documentation site: `mkdocs build --strict` passes (every page in the nav exists, no broken
link or anchor, no docstring warning) and the API reference renders every public objective,
`load_policy`/`load_run` and every config key with its documentation. Skipped without the `docs`
extra (pip install -e ".[docs]")."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

pytest.importorskip("mkdocs")
pytest.importorskip("material")
pytest.importorskip("mkdocstrings_handlers.python")

EXTENSION = REPO / "docs" / "api" / "griffe_marlopt.py"


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    if proc.returncode != 0:
        problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "WARNING" in line or "ERROR" in line]
        pytest.fail("mkdocs build --strict failed:\n" + "\n".join(problems or [proc.stderr[-3000:]]), pytrace=False)
    return out


def anchors(page: Path) -> set[str]:
    return set(re.findall(r'id="([\w.]+)"', page.read_text()))


def test_every_public_objective_is_in_the_api_reference(site):
    import marlopt.objectives

    ids = anchors(site / "api" / "objectives" / "index.html")
    missing = [name for name in marlopt.objectives.__all__ if f"marlopt.objectives.{name}" not in ids]
    assert not missing, f"not rendered (no docstring?): {missing}"
    assert {"marlopt.objectives.ppo_clip_loss", "marlopt.objectives.mars_loss", "marlopt.objectives.gae"} <= ids


def test_load_policy_is_in_the_api_reference(site):
    ids = anchors(site / "api" / "policy" / "index.html")
    assert {"marlopt.policy.load_policy", "marlopt.policy.load_run", "marlopt.policy.Policy"} <= ids


def test_every_config_key_is_rendered(site):
    import marlopt.config

    ids = anchors(site / "api" / "config" / "index.html")
    schemas = [c for c in vars(marlopt.config).values()
               if isinstance(c, type) and dataclasses.is_dataclass(c) and c.__module__ == "marlopt.config"]
    assert schemas
    for schema in schemas:
        for f in dataclasses.fields(schema):
            owner = next(c for c in schema.__mro__ if f.name in vars(c).get("__annotations__", {}))
            assert f"marlopt.config.{owner.__name__}.{f.name}" in ids, f"{owner.__name__}.{f.name} not rendered"


def test_no_rest_role_reaches_the_pages(site):
    for page in (site / "api").rglob("*.html"):
        roles = re.findall(r":(?:func|class|meth|mod|attr):", page.read_text())
        assert not roles, f"{page}: reST roles rendered literally"


def test_every_config_key_gets_its_comment_as_documentation():
    """The API reference's griffe extension turns each key's comment in marlopt/config.py into its
    docstring: a key without a comment (or a broken extension) leaves it undocumented."""
    griffe = pytest.importorskip("griffe")
    import marlopt.config

    extensions = griffe.load_extensions(f"{EXTENSION}:MarloptDocstrings")
    module = griffe.load("marlopt.config", extensions=extensions, search_paths=[str(REPO)])
    undocumented = []
    for name, schema in vars(marlopt.config).items():
        if isinstance(schema, type) and dataclasses.is_dataclass(schema) and schema.__module__ == "marlopt.config":
            for f in dataclasses.fields(schema):
                owner = next(c for c in schema.__mro__ if f.name in vars(c).get("__annotations__", {}))
                doc = module[owner.__name__].members[f.name].docstring
                if doc is None or not doc.value.strip():
                    undocumented.append(f"{owner.__name__}.{f.name}")
    assert not undocumented, f"config keys without a comment in marlopt/config.py: {sorted(set(undocumented))}"
    seed = module["TrainConfig"].members["seed"]
    line = (REPO / "marlopt" / "config.py").read_text().splitlines()[seed.lineno - 1]
    assert seed.docstring.value == line.split("#", 1)[1].strip()
