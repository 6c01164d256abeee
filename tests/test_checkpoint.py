"""Checkpoint files: atomic writes that leave nothing behind when they fail, stale temporaries,
and the choice of the checkpoint a resume continues from."""

from __future__ import annotations

import pytest
import torch

from marlopt.checkpoint import (LATEST, CheckpointError, checkpoint_dir, load_checkpoint, newest_checkpoint,
                                remove_stale_temporaries, save_checkpoint)


def _save(run, name: str, frames: int) -> None:
    save_checkpoint(checkpoint_dir(run) / name, {"rule": {"w": torch.full((2,), float(frames))},
                                                  "counters": {"frames": frames}})


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    _save(tmp_path, LATEST, 100)
    before = (checkpoint_dir(tmp_path) / LATEST).read_bytes()

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\n"
                           "PytorchStreamWriter failed writing file data/0: file write failed")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(RuntimeError, match="file write failed"):
        _save(tmp_path, LATEST, 200)
    assert (checkpoint_dir(tmp_path) / LATEST).read_bytes() == before
    assert sorted(p.name for p in checkpoint_dir(tmp_path).iterdir()) == [LATEST]


def test_stale_temporaries_are_removed_and_named(tmp_path):
    _save(tmp_path, LATEST, 100)
    stale = checkpoint_dir(tmp_path) / ".latest.pt.tmp4242"
    stale.write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(tmp_path) == [".latest.pt.tmp4242"]
    assert not stale.exists() and (checkpoint_dir(tmp_path) / LATEST).is_file()
    assert remove_stale_temporaries(tmp_path / "nothing-here") == []


def test_newest_checkpoint_prefers_the_most_frames(tmp_path):
    _save(tmp_path, "step_100.pt", 100)
    _save(tmp_path, "step_200.pt", 200)
    _save(tmp_path, LATEST, 150)  # latest_interval > save_interval: latest.pt lags behind step_200
    path, payload, notes = newest_checkpoint(tmp_path)
    assert path.name == "step_200.pt" and payload["counters"]["frames"] == 200 and notes == []
    _save(tmp_path, LATEST, 250)
    path, payload, notes = newest_checkpoint(tmp_path)
    assert path.name == LATEST and payload["counters"]["frames"] == 250


def test_newest_checkpoint_falls_back_past_unreadable_files_and_says_so(tmp_path):
    _save(tmp_path, "step_100.pt", 100)
    _save(tmp_path, "step_200.pt", 200)
    (checkpoint_dir(tmp_path) / LATEST).write_bytes(b"garbage")
    (checkpoint_dir(tmp_path) / "step_200.pt").write_bytes(b"cut sho")
    path, payload, notes = newest_checkpoint(tmp_path)
    assert path.name == "step_100.pt" and payload["counters"]["frames"] == 100
    assert [n.split(":")[0] for n in notes] == ["skipped latest.pt", "skipped step_200.pt"]
    assert (checkpoint_dir(tmp_path) / LATEST).read_bytes() == b"garbage", "bad files stay for inspection"
    (checkpoint_dir(tmp_path) / "step_100.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="no readable checkpoint in .*skipped latest.pt"):
        newest_checkpoint(tmp_path)


def test_load_checkpoint_refuses_a_payload_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not a marlopt checkpoint"):
        load_checkpoint(path)
