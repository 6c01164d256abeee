"""Run outputs: ``metrics.jsonl``, TensorBoard event files, ``versions.json``, a progress bar.

Every log event is one JSON object per line, ``{"step": <env frames>, "<tag>": value, ...,
"time/elapsed_s": <wall-clock seconds of the run>}``, and the same tags go to TensorBoard (``tb/``).
A non-finite value is written, not dropped: as the JSON string ``"nan"``, ``"inf"`` or ``"-inf"``
(strict JSON has no such numbers; :func:`read_metrics` turns them back into floats).
``time/elapsed_s`` sums the wall-clock time of every session of a resumed run up to its checkpoint.

With ``logger.wandb=true`` every event is also logged to a Weights & Biases run (:class:`WandbMirror`):
the same keys plus ``step`` (env frames, W&B's x-axis for every metric), the run's config uploaded
when the W&B run is created, its files under ``<run>/wandb/`` (offline mode: upload them later with
``wandb sync``). The W&B run id goes into every checkpoint (``state()``), so a resume continues the
same W&B run (docs/logging.md says what happens to the rows a resume cuts back).

On resume the file is cut back to the rows it had when the checkpoint was written (checkpoints
record the count; older ones: the rows up to the checkpoint's frame count) and TensorBoard purges
its events past that step, so a resumed run's logs read exactly like an uninterrupted run's. A last
line cut short by a crash is dropped with a note.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import secrets
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


_NONFINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


def encode_value(value: float) -> float | str:
    """A metric as written to ``metrics.jsonl``: finite floats as numbers, others as strings."""
    value = float(value)
    if math.isfinite(value):
        return value
    return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def decode_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: _NONFINITE.get(v, v) if isinstance(v, str) else v for k, v in row.items()}


def _parse_lines(path: Path) -> tuple[list[str], list[dict[str, Any]], list[int]]:
    """The parseable rows' lines and values, and the 1-based numbers of the lines that are not."""
    lines, rows, bad = [], [], []
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not an event")
        except ValueError:
            bad.append(number)
            continue
        lines.append(line)
        rows.append(row)
    return lines, rows, bad


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The events of ``run_dir/metrics.jsonl`` (or of that file), non-finite values as floats; lines
    that do not parse (a last line cut short by a crash) are skipped."""
    path = run_dir / METRICS_FILE if run_dir.is_dir() else run_dir
    return [decode_row(row) for row in _parse_lines(path)[1]]


def truncate_metrics(path: Path, max_step: int, max_rows: int | None = None) -> tuple[int, list[str]]:
    """Cut ``metrics.jsonl`` back to its state at a checkpoint (used on resume): the first
    ``max_rows`` events when the checkpoint recorded how many there were, else the events with
    ``step <= max_step``. Lines that do not parse are dropped. Returns the events kept and notes
    for the user."""
    if not path.is_file():
        return 0, []
    lines, rows, bad = _parse_lines(path)
    notes = [f"{METRICS_FILE}: dropped {len(bad)} unreadable line(s) (line {', '.join(map(str, bad[:5]))}"
             f"{', ...' if len(bad) > 5 else ''}; a write cut short by a crash)"] if bad else []
    if max_rows is not None:
        kept = lines[:max_rows]
    else:
        kept = [line for line, row in zip(lines, rows) if row["step"] <= max_step]
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)
    return len(kept), notes


WANDB_INSTALL = 'pip install -e ".[wandb]"'


def check_wandb(settings: Any = None) -> None:
    """``logger.wandb=true`` needs the wandb package: ``ImportError`` in one line with the install
    command unless it is installed. With ``settings`` (the run's ``LoggerConfig``), online mode
    (``logger.wandb_mode=online``, or unset with ``WANDB_MODE`` unset or online) also needs a login
    where wandb looks for one — ``WANDB_API_KEY``, or the W&B host in ``$NETRC``/``~/.netrc``
    (what ``wandb login`` writes) — else ``ConfigError``. Nothing is imported; marlopt/preflight.py
    calls this before the run directory exists."""
    if importlib.util.find_spec("wandb") is None:
        raise ImportError(f"logger.wandb=true needs the wandb package; install it with: {WANDB_INSTALL} "
                          "(or leave logger.wandb=false)")
    if settings is None:
        return
    mode = settings.wandb_mode or os.environ.get("WANDB_MODE") or "online"
    if mode != "online" or os.environ.get("WANDB_API_KEY"):
        return
    import netrc
    from urllib.parse import urlparse

    from marlopt.config import ConfigError

    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = Path(os.environ.get("NETRC") or Path.home() / ".netrc")
    try:
        if netrc.netrc(str(path)).authenticators(host):
            return
    except (OSError, netrc.NetrcParseError):
        pass
    raise ConfigError(f"logger.wandb=true in online mode needs a W&B login (no WANDB_API_KEY, no {host} in {path}): "
                      "run `wandb login`, or set logger.wandb_mode=offline (upload later with wandb sync)")


def config_dict(config: Any) -> dict[str, Any] | None:
    """A run's config as plain containers for W&B (a ``TrainConfig`` or a mapping; ``None`` stays)."""
    if config is None or isinstance(config, dict):
        return config
    from omegaconf import OmegaConf

    node = config if OmegaConf.is_config(config) else OmegaConf.structured(config)
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


class WandbMirror:
    """One W&B run that receives every metrics event of a marlopt run (``logger.*`` keys,
    :class:`marlopt.config.LoggerConfig`). ``run_id``: the W&B run to continue (a resume), else a
    new run is created with ``config`` uploaded; files go under ``<run_dir>/wandb/``."""

    def __init__(self, run_dir: Path, settings: Any, run_id: str | None = None, config: Any = None):
        import wandb

        # a new id from OS entropy (secrets), so the seeded RNG streams of training stay untouched
        self.run_id = run_id or secrets.token_hex(6)
        self.run = wandb.init(
            project=settings.wandb_project, entity=settings.wandb_entity, group=settings.wandb_group,
            tags=list(settings.wandb_tags) or None, name=settings.wandb_name or run_dir.name,
            mode=settings.wandb_mode, dir=str(run_dir), id=self.run_id, resume="allow",
            config=config_dict(config) if run_id is None else None,
            settings=wandb.Settings(console="off"),  # marlopt's own stderr lines stay as they are
        )
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")  # x-axis: env frames, as in metrics.jsonl

    def log(self, step: int, values: dict[str, float]) -> None:
        self.run.log({"step": int(step), **values})

    def close(self) -> None:
        self.run.finish()


class RunLogger:
    """Writes each event to ``metrics.jsonl`` and TensorBoard (and W&B where asked), and drives the
    progress bar."""

    def __init__(self, run_dir: Path, total_frames: int, start_frame: int = 0, progress: bool = True,
                 tensorboard: bool = True, rows: int | None = None, elapsed_s: float = 0.0,
                 wandb: Any = None, wandb_id: str | None = None, config: Any = None):
        """``start_frame``, ``rows``, ``elapsed_s``: where a resumed run's checkpoint left off (its
        frames, the events ``metrics.jsonl`` had then, the run's wall-clock seconds then).
        ``wandb``: the run's ``LoggerConfig`` (W&B mirroring when its ``wandb`` is true);
        ``wandb_id``: the W&B run a resumed checkpoint names; ``config``: uploaded to a new W&B run."""
        self.run_dir = run_dir
        self.metrics_path = run_dir / METRICS_FILE
        self.notes: list[str] = []
        if start_frame > 0 or rows is not None:
            self.rows, self.notes = truncate_metrics(self.metrics_path, start_frame, rows)
        else:  # a new run: its events so far (none, unless a test writes into an old directory)
            self.rows = len(_parse_lines(self.metrics_path)[0]) if self.metrics_path.is_file() else 0
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
        self._elapsed_before = elapsed_s
        self._wandb: WandbMirror | None = None
        if wandb is not None and wandb.wandb:
            self._start_wandb(wandb, wandb_id, config)

    def _start_wandb(self, settings: Any, run_id: str | None, config: Any) -> None:
        """Open the W&B run; a failure (not logged in, no network in online mode) closes the
        files and ends the process with one line and the fixes."""
        try:
            self._wandb = WandbMirror(self.run_dir, settings, run_id, config)
        except Exception as exc:  # noqa: BLE001 - wandb's errors (auth, network, usage): one line
            self.close()
            from marlopt.cli import fail

            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(f"W&B could not start ({type(exc).__name__}: {first}); run `wandb login`, or set "
                 "logger.wandb_mode=offline (upload later with wandb sync), or logger.wandb=false")

    def elapsed(self) -> float:
        """Wall-clock seconds of the run: this session's plus those of the sessions before it."""
        return self._elapsed_before + time.perf_counter() - self._start_time

    def state(self) -> dict[str, Any]:
        """What a checkpoint records so that a resume can cut the logs back to this moment (and,
        with W&B on, continue the same W&B run: ``wandb_id``)."""
        out: dict[str, Any] = {"metrics_rows": self.rows, "elapsed_s": self.elapsed()}
        if self._wandb is not None:
            out["wandb_id"] = self._wandb.run_id
        return out

    def log(self, step: int, metrics: dict[str, float]) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        values["time/elapsed_s"] = self.elapsed()
        self._file.write(json.dumps({"step": int(step), **{k: encode_value(v) for k, v in values.items()}}) + "\n")
        self.rows += 1
        if self._writer is not None:
            for k, v in values.items():
                self._writer.add_scalar(k, v, int(step))
        if self._wandb is not None:
            self._wandb.log(step, values)
        self._show(step, {k: v for k, v in values.items() if math.isfinite(v)})

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
        if self._wandb is not None:
            self._wandb.close()
            self._wandb = None
