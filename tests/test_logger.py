"""RunLogger's progress line (non-terminal output): frames/s, return, ETA."""

from __future__ import annotations

import io

from rich.console import Console

from marlopt.logger import RunLogger


def test_progress_line_never_shows_a_negative_eta_and_ignores_eval_events(tmp_path):
    logger = RunLogger(tmp_path, total_frames=4000, progress=True, tensorboard=False)
    out = io.StringIO()
    logger.console = Console(file=out, force_terminal=False, width=200)
    logger.log(1600, {"time/fps": 2000.0, "train/return_mean": -80.0})
    logger.log(4800, {"time/fps": 2400.0, "train/return_mean": -70.0})  # the last iteration overshoots
    logger.log(4800, {"eval/return_mean": -60.0})  # not a training iteration: no progress line
    logger.close()
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("[1,600/4,000 frames] 2,000 frames/s  return -80.00  ETA 00:00:")
    assert lines[-1] == "[4,800/4,000 frames] 2,400 frames/s  return -70.00  ETA 00:00:00"
    assert len(lines) == 2
