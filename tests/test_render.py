"""``marlopt.render`` through ``python -m marlopt.evaluate render=true``: a GIF of greedy episodes
of a trained policy (MPE, SMAX), its frame count, and one-line errors for bad arguments."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest

from marlopt import evaluate
from tests.helpers import run_cli

MPE_LENGTH = 25  # MPE episodes always last max_cycles (25) steps

#: The video tests need the render extra (imageio, Pillow); the argument checks run without it.
needs_render = pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in ("imageio", "PIL")),
    reason='needs the render extra: pip install -e ".[render]"')


@pytest.fixture(scope="module")
def mpe_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("render") / "mpe"
    run_cli("marlopt.train", "total_steps=2000", "n_envs=2", "rollout_length=100", "progress=false", "eval_episodes=2",
            "env.vector=inproc", f"hydra.run.dir={run}", cwd=run.parent)
    return run


def _frames(path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(image)]


def _first_episodes(run, episodes: int) -> dict[str, float]:
    """The first ``episodes`` episodes of env 0 of ``marlopt.evaluate``'s evaluation, played by
    ``evaluate_policy`` (no rendering): what the video must show."""
    from marlopt.cli import load_run_config
    from marlopt.envs import env_fn
    from marlopt.evaluation import evaluate_policy
    from marlopt.policy import load_policy
    from marlopt.seeding import EVAL_OFFSET, env_seeds

    cfg = load_run_config(run)[1]
    seed = env_seeds(cfg.seed, 1, offset=EVAL_OFFSET + 10_000)[0]
    make = env_fn(cfg.env.name, cfg.env.map_name, cfg.env.maker_options())
    return evaluate_policy(load_policy(run), [make], episodes, [seed])


@needs_render
def test_mpe_gif_has_one_frame_per_step_plus_the_start_and_shows_the_evaluated_episodes(mpe_run):
    result = evaluate.evaluate_run(mpe_run, episodes=2, render_episodes=2)

    gif = mpe_run / "eval" / "latest.gif"
    assert result["video"] == str(gif) and gif.stat().st_size > 0
    frames = _frames(gif)
    assert len(frames) == 2 * (MPE_LENGTH + 1)
    scene = [f[:700] for f in frames]  # above the caption strip: mpe2's 700x700 picture
    assert frames[0].shape == (700 + 24, 700, 3)
    assert any(not np.array_equal(scene[0], s) for s in scene[1:MPE_LENGTH + 1]), "the agents never move"
    saved = json.loads((mpe_run / "eval" / "latest.json").read_text())
    assert saved["video"] == str(gif) and saved["video_frames"] == len(frames)
    # the rendered episodes are the evaluation's first ones (env 0, greedy), played by the same policy
    reference = _first_episodes(mpe_run, 2)
    rendered = saved["video_episodes"]
    assert [e["length"] for e in rendered] == [MPE_LENGTH, MPE_LENGTH]
    assert np.mean([e["return"] for e in rendered]) == pytest.approx(reference["return_mean"], rel=1e-6)


@needs_render
def test_cli_renders_one_episode_by_default(mpe_run, capsys):
    evaluate.main([f"run={mpe_run}", "episodes=1", "render=true", "checkpoint=latest"])
    out = capsys.readouterr().out
    gif = mpe_run / "eval" / "latest.gif"
    assert f"video: {gif}" in out
    assert len(_frames(gif)) == MPE_LENGTH + 1


@needs_render
def test_mp4_has_the_same_frames_as_the_gif(mpe_run):
    pytest.importorskip("imageio_ffmpeg")
    import imageio

    evaluate.evaluate_run(mpe_run, episodes=1, render_episodes=1, render_format="mp4")
    mp4 = mpe_run / "eval" / "latest.mp4"
    reader = imageio.get_reader(mp4)
    try:
        frames = [np.asarray(frame) for frame in reader]
        fps = reader.get_meta_data()["fps"]
    finally:
        reader.close()
    assert len(frames) == MPE_LENGTH + 1 and fps == 10
    assert frames[0].shape[:2] == (700 + 24, 700)  # not resized to the codec's 16-pixel blocks
    assert json.loads((mpe_run / "eval" / "latest.json").read_text())["video"] == str(mp4)


def _error_line(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        evaluate.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("marlopt: error: "), err
    return err[0]


@pytest.mark.parametrize(("args", "expected"), [
    (["render=maybe"], "render: must be true or false (got 'maybe')"),
    (["render=true", "render_episodes=0"], "render_episodes: must be > 0 (got 0)"),
    (["render=true", "render_episodes=1.5"], "render_episodes: must be a whole number"),
    (["render=true", "render_format=avi"], "render_format: must be one of gif, mp4 (got 'avi')"),
    (["render_episodes=2"], "render_episodes goes with render=true"),
    (["render=false", "render_format=gif"], "render_format goes with render=true"),
])
def test_bad_render_arguments_fail_in_one_line_before_the_run_is_read(capsys, tmp_path, args, expected):
    # tmp_path is no run at all: the arguments are checked first
    assert expected in _error_line(capsys, [f"run={tmp_path}", *args])
    assert not (tmp_path / "eval").exists()


@needs_render
def test_missing_writers_are_one_line_with_the_install_hint(capsys, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    for absent, expected in (("PIL", 'needs Pillow; install them with: pip install -e ".[render]"'),
                             ("imageio_ffmpeg", "render_format=mp4 needs imageio-ffmpeg")):
        monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, _absent=absent: None if name == _absent
                            else real(name, *a))
        line = _error_line(capsys, [f"run={tmp_path}", "render=true", "render_format=mp4"])
        assert expected in line


@needs_render
def test_env_without_a_renderer_is_one_line_naming_what_is_supported(capsys, tmp_path):
    from marlopt.envs.smac import OWN_OPTIONS
    from marlopt.render import check_renderable

    run = tmp_path / "games"
    run_cli("marlopt.train", "algo=mappo", "env=games", "map=gpvd_matrix", "total_steps=40", "n_envs=2",
            "rollout_length=10", "eval_episodes=1", "progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    line = _error_line(capsys, [f"run={run}", "render=true"])
    assert "env=games has no frame renderer; videos are made for env=mpe and env=smax" in line
    assert not (run / "eval").exists()
    # StarCraft II: the error points to replays, an option the SC2 wrappers take
    with pytest.raises(ValueError, match="env.options.save_replay=true"):
        check_renderable("smac")
    assert "save_replay" in OWN_OPTIONS


@needs_render
@pytest.mark.slow  # ~35 s on 2 busy cores: JAX compiles SMAX in the training run and again here
def test_smax_gif_frames_follow_the_episode_lengths(tmp_path):
    pytest.importorskip("jaxmarl")
    run = tmp_path / "smax"
    run_cli("marlopt.train", "env=smax", "map=3m", "total_steps=400", "n_envs=2", "rollout_length=100",
            "eval_episodes=2", "progress=false", f"hydra.run.dir={run}", cwd=tmp_path)
    evaluate.evaluate_run(run, episodes=1, render_episodes=2)

    frames = _frames(run / "eval" / "latest.gif")
    rendered = json.loads((run / "eval" / "latest.json").read_text())["video_episodes"]
    assert len(frames) == sum(int(e["length"]) + 1 for e in rendered)
    assert frames[0].shape == (512 + 24, 512, 3)
    assert any(not np.array_equal(frames[0][:512], f[:512]) for f in frames[1:]), "the units never move"
    reference = _first_episodes(run, 2)
    assert np.mean([e["length"] for e in rendered]) == reference["length_mean"]
    assert np.mean([e["return"] for e in rendered]) == pytest.approx(reference["return_mean"], rel=1e-6)
    assert np.mean([e["won"] for e in rendered]) == reference["win_rate"]
