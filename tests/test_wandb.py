"""Weights & Biases mirroring (``logger.wandb=true``), offline only: every metrics row reaches a
local W&B run whose id is kept in the checkpoint, a resume continues that run, W&B is off by
default, and a missing package is one line before anything is written."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest
import torch

from marlopt.train import main
from tests.helpers import make_config, read_metrics, run_cli

SMALL = ["env=mpe", "map=simple_spread", "n_envs=2", "rollout_length=100", "total_steps=400", "eval_episodes=2",
         "env.vector=inproc", "progress=false"]


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network, no account: W&B writes offline runs only, quietly."""
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_default"))  # where W&B would write if marlopt did not say
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def wandb_records(path: Path) -> list:
    """The protobuf records of a ``.wandb`` file (W&B's LevelDB-style log: a 7-byte header, 32 KiB
    blocks of records, each with a 7-byte header ``<crc32, length, type>``; type 1 = a whole record,
    2/3/4 = its first/middle/last piece)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    block, pos, pending, records = 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # the zero padding at the end of a block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        pending = chunk if kind == 2 else pending + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def offline_history(session: Path) -> tuple[str, list[dict]]:
    """The W&B run id and the logged rows of one offline session directory."""
    (path,) = session.glob("run-*.wandb")
    records = wandb_records(path)
    run_ids = {r.run.run_id for r in records if r.WhichOneof("record_type") == "run"}
    rows = [{item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]
    assert len(run_ids) == 1
    return run_ids.pop(), rows


def _mirrored(row: dict) -> dict:
    """A W&B history row as marlopt logged it (without W&B's own ``_step``, ``_runtime`` ...)."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def test_offline_run_mirrors_every_row_and_resume_continues_the_same_wandb_run(offline, tmp_path):
    run = tmp_path / "run"
    run_cli("marlopt.train", *SMALL, "max_iterations=1", "logger.wandb=true", "logger.wandb_mode=offline",
            "logger.wandb_tags=[test]", f"hydra.run.dir={run}", cwd=tmp_path)
    first_id = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["log"]["wandb_id"]
    (session,) = sorted((run / "wandb").glob("offline-run-*"))
    assert session.name.endswith(f"-{first_id}")
    run_id, rows = offline_history(session)
    assert run_id == first_id
    assert [_mirrored(r) for r in rows] == read_metrics(run, drop_time=False)  # every row, the same values

    run_cli("marlopt.train", f"resume={run}", cwd=tmp_path)
    assert torch.load(run / "checkpoints" / "latest.pt", weights_only=True)["log"]["wandb_id"] == first_id
    sessions = sorted((run / "wandb").glob("offline-run-*"))
    assert len(sessions) == 2 and all(s.name.endswith(f"-{first_id}") for s in sessions)
    run_id, resumed_rows = offline_history(sessions[1])
    assert run_id == first_id
    # the two sessions together hold metrics.jsonl, step by step (x-axis: env frames)
    assert [_mirrored(r) for r in rows + resumed_rows] == read_metrics(run, drop_time=False)
    assert [r["step"] for r in resumed_rows] == [400, 400]  # the last iteration, then the final evaluation
    assert not (tmp_path / "wandb_default").exists()  # everything under the run directory
    # mirroring changes nothing of the run: the same metrics as the same run without W&B
    plain = tmp_path / "plain"
    run_cli("marlopt.train", *SMALL, f"hydra.run.dir={plain}", cwd=tmp_path)
    assert read_metrics(plain) == read_metrics(run) and not (plain / "wandb").exists()


def test_wandb_is_off_by_default_and_leaves_no_trace(tmp_path):
    from marlopt.logger import RunLogger

    assert make_config().logger.wandb is False
    logger = RunLogger(tmp_path, 100, progress=False, tensorboard=False, wandb=make_config().logger)
    logger.log(10, {"train/return_mean": 1.0})
    state = logger.state()
    logger.close()
    assert "wandb_id" not in state and not (tmp_path / "wandb").exists()
    assert read_metrics(tmp_path)[0]["step"] == 10


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("marlopt: error: "), err
    return err[0]


def test_missing_wandb_package_is_one_line_before_the_run_directory_exists(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # "not installed" for find_spec and import alike
    run = tmp_path / "run"
    line = _error_line(capsys, [*SMALL, "logger.wandb=true", f"hydra.run.dir={run}"])
    assert 'logger.wandb=true needs the wandb package; install it with: pip install -e ".[wandb]"' in line
    assert not run.exists()


@pytest.mark.parametrize(("override", "expected"), [
    ("logger.wandb_mode=sometimes", "logger.wandb_mode: must be one of online, offline (got 'sometimes')"),
    ("logger.wandb_project=' '", "logger.wandb_project: must not be empty"),
    ("+logger.wandb_projct=x", "logger.wandb_projct: unknown key (did you mean logger.wandb_project?"),
])
def test_bad_logger_values_are_one_line(capsys, tmp_path, override, expected):
    run = tmp_path / "run"
    assert expected in _error_line(capsys, [*SMALL, "logger.wandb=true", override, f"hydra.run.dir={run}"])
    assert not run.exists()


def test_online_mode_without_a_login_is_one_line_before_the_run_directory_exists(capsys, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    run = tmp_path / "run"
    line = _error_line(capsys, [*SMALL, "logger.wandb=true", f"hydra.run.dir={run}"])
    assert "logger.wandb=true in online mode needs a W&B login" in line and "logger.wandb_mode=offline" in line
    assert not run.exists()


def test_a_login_or_offline_mode_passes_the_check(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from marlopt.config import ConfigError, LoggerConfig
    from marlopt.logger import check_wandb

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    netrc = tmp_path / "netrc"
    monkeypatch.setenv("NETRC", str(netrc))
    online = LoggerConfig(wandb=True, wandb_mode="online")
    with pytest.raises(ConfigError):
        check_wandb(online)
    check_wandb(LoggerConfig(wandb=True, wandb_mode="offline"))
    monkeypatch.setenv("WANDB_MODE", "offline")
    check_wandb(LoggerConfig(wandb=True))  # unset mode: WANDB_MODE decides
    monkeypatch.delenv("WANDB_MODE")
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "0" * 40 + "\n")
    netrc.chmod(0o600)
    check_wandb(online)  # what `wandb login` writes
    netrc.unlink()
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    check_wandb(online)
