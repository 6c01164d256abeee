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


def test_nonfinite_values_are_written_not_dropped_and_read_back(tmp_path):
    import json
    import math

    from marlopt.logger import read_metrics

    logger = RunLogger(tmp_path, total_frames=100, progress=False, tensorboard=False)
    logger.log(10, {"actor/loss": float("nan"), "critic/grad_norm": float("inf"), "x": -float("inf"), "ok": 1.5})
    logger.close()
    raw = json.loads((tmp_path / "metrics.jsonl").read_text())  # strict JSON: no NaN tokens
    assert raw["actor/loss"] == "nan" and raw["critic/grad_norm"] == "inf" and raw["x"] == "-inf"
    row = read_metrics(tmp_path)[0]
    assert math.isnan(row["actor/loss"]) and row["critic/grad_norm"] == math.inf and row["x"] == -math.inf
    assert row["ok"] == 1.5 and row["time/elapsed_s"] >= 0


def test_resume_cuts_the_metrics_back_to_the_checkpoint_and_drops_a_torn_line(tmp_path):
    from marlopt.logger import read_metrics

    logger = RunLogger(tmp_path, total_frames=100, progress=False, tensorboard=False)
    for step in (10, 20, 20, 30):  # two events at frame 20 (an iteration and an evaluation)
        logger.log(step, {"v": float(step)})
    state = {"metrics_rows": 2, "elapsed_s": 100.0}  # a checkpoint written after the second event
    logger.close()
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "v": 4')  # a crash mid-line
    resumed = RunLogger(tmp_path, 100, start_frame=20, progress=False, tensorboard=False,
                        rows=state["metrics_rows"], elapsed_s=state["elapsed_s"])
    assert resumed.notes == ["metrics.jsonl: dropped 1 unreadable line(s) (line 5; a write cut short by a crash)"]
    resumed.log(30, {"v": 30.0})
    resumed.close()
    rows = read_metrics(tmp_path)
    assert [r["step"] for r in rows] == [10, 20, 30], "the second frame-20 event came after the checkpoint"
    assert rows[-1]["time/elapsed_s"] >= 100.0, "wall-clock time continues from the checkpoint"
    old = RunLogger(tmp_path, 100, start_frame=20, progress=False, tensorboard=False)  # an old checkpoint: by step
    old.close()
    assert [r["step"] for r in read_metrics(tmp_path)] == [10, 20]
