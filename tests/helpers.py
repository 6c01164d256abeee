"""Shared test helpers: compose a config, run training in-process or through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from marlopt.cli import compose
from marlopt.config import TrainConfig, to_objects

REPO = Path(__file__).resolve().parents[1]


def make_config(*overrides: str) -> TrainConfig:
    return to_objects(compose(["progress=false", *overrides]))


def read_metrics(run_dir: Path, drop_time: bool = True) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    if drop_time:
        rows = [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]
    return rows


def run_cli(module: str, *args: str, cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{module} {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc
