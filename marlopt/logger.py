"""Run outputs: ``metrics.jsonl``, TensorBoard event files, ``versions.json``, a progress bar.

Every log event is one JSON object per line, ``{"step": <env frames>, "<tag>": value, ...}``, and
the same tags go to TensorBoard (``tb/``). On resume, lines past the checkpoint's frame count are
cut from ``metrics.jsonl`` and TensorBoard purges its events past that step, so a resumed run's
logs read exactly like an uninterrupted run's.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

METRICS_FILE = "metrics.jsonl"
VERSIONS_FILE = "versions.json"
KEY_PACKAGES = ("torch", "numpy", "hydra-core", "omegaconf", "mpe2", "pettingzoo", "gymnasium", "tensorboard",
                "cvxpy", "smac", "smacv2", "gfootball", "jaxmarl", "jax")


def git_commit() -> str:
    """The commit marlopt was imported from (``unknown`` outside a git checkout)."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if out.returncode != 0:
        return "unknown"
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def collect_versions() -> dict[str, Any]:
    packages = {}
    for name in KEY_PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    from marlopt import __version__

    return {"python": sys.version.split()[0], "platform": platform.platform(), "marlopt": __version__,
            "marlopt_commit": git_commit(), "packages": packages}


def write_versions(run_dir: Path) -> None:
    (run_dir / VERSIONS_FILE).write_text(json.dumps(collect_versions(), indent=2) + "\n")


def truncate_metrics(path: Path, max_step: int) -> None:
    """Keep only the events with ``step <= max_step`` (used on resume)."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= max_step]
    path.write_text("".join(f"{line}\n" for line in kept))


class RunLogger:
    """Writes each event to ``metrics.jsonl`` and TensorBoard, and drives the progress bar."""

    def __init__(self, run_dir: Path, total_frames: int, start_frame: int = 0, progress: bool = True,
                 tensorboard: bool = True):
        self.run_dir = run_dir
        self.metrics_path = run_dir / METRICS_FILE
        if start_frame > 0:
            truncate_metrics(self.metrics_path, start_frame)
        self._file = open(self.metrics_path, "a", buffering=1)
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(run_dir / "tb"), purge_step=start_frame + 1 if start_frame else None)
        self.total_frames = total_frames
        self.console = Console(stderr=True)
        self.live = progress and self.console.is_terminal
        self._last_print = 0.0
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(),
                TextColumn("{task.completed:,.0f}/{task.total:,.0f} frames"),
                TextColumn("{task.fields[fps]:,.0f} frames/s"), TextColumn("return {task.fields[ret]}"),
                TextColumn("ETA"), TimeRemainingColumn(), console=self.console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task("train", total=total_frames, completed=start_frame, fps=0.0, ret="-")
        self.progress = progress
        self._start_frame, self._start_time = start_frame, time.perf_counter()

    def log(self, step: int, metrics: dict[str, float]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
        self._file.write(json.dumps({"step": int(step), **clean}) + "\n")
        if self._writer is not None:
            for k, v in clean.items():
                self._writer.add_scalar(k, v, int(step))
        self._show(step, clean)

    def _show(self, step: int, metrics: dict[str, float]) -> None:
        """Progress of training iterations only (events without ``time/fps``, e.g. the final
        evaluation, leave the display as it is)."""
        if "time/fps" not in metrics:
            return
        ret = metrics.get("train/return_mean")
        fps = metrics["time/fps"]
        if self._progress is not None:
            fields = {"fps": fps} | ({"ret": f"{ret:.2f}"} if ret is not None else {})
            self._progress.update(self._task, completed=step, **fields)
        elif self.progress and (time.perf_counter() - self._last_print > 10 or step >= self.total_frames):
            self._last_print = time.perf_counter()
            elapsed = time.perf_counter() - self._start_time
            rate = (step - self._start_frame) / max(elapsed, 1e-9)
            eta = max(0.0, self.total_frames - step) / max(rate, 1e-9)  # the last iteration may overshoot
            ret_s = f"{ret:.2f}" if ret is not None else "-"
            self.console.print(f"[{step:,}/{self.total_frames:,} frames] {fps:,.0f} frames/s  return {ret_s}  "
                               f"ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}", highlight=False)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None
        if not self._file.closed:
            self._file.close()
