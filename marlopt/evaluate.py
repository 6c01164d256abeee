"""``python -m marlopt.evaluate run=<run_dir> [episodes=32] [checkpoint=latest] [stochastic=false]``.

Loads a run's saved config and a checkpoint (``latest``, ``step_<frames>`` or a ``.pt`` path),
runs the deployed policy greedily (``stochastic=true`` samples instead), prints the mean return
(and win rate where the env has wins) and saves them to ``<run_dir>/eval/<checkpoint>.json``.

``render=true`` also writes a video of the first ``render_episodes`` (1) episodes beside it,
``<run_dir>/eval/<checkpoint>.gif`` (``render_format=mp4``: ``.mp4``, needs imageio-ffmpeg), for
MPE and SMAX (marlopt/render.py; docs/videos.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from marlopt.cli import fail, parse_overrides, parse_value
from marlopt.config import MAX_SEED, ConfigError

USAGE = ("usage: python -m marlopt.evaluate run=<run_dir> [episodes=32] [checkpoint=latest] [stochastic=false] "
         "[seed=N] [render=false] [render_episodes=1] [render_format=gif|mp4]")
ARGUMENTS = ("run", "episodes", "checkpoint", "stochastic", "seed", "render", "render_episodes", "render_format")


def evaluate_run(run_dir: Path, episodes: int = 32, checkpoint: str = "latest", stochastic: bool = False,
                 seed: int | None = None, render_episodes: int = 0, render_format: str = "gif") -> dict[str, float]:
    """Evaluate a run's checkpoint and save the result as ``<run_dir>/eval/<checkpoint>.json``;
    ``render_episodes > 0`` also writes a video of that many episodes beside it (``render_format``
    gif | mp4), named in the result's and the JSON's ``video``."""
    from marlopt.envs import env_fn
    from marlopt.evaluation import evaluate_policy
    from marlopt.policy import load_run
    from marlopt.seeding import EVAL_OFFSET, env_seeds

    if render_episodes:  # before anything heavy: the env has a renderer and the writers are installed
        from marlopt.cli import load_run_config
        from marlopt.render import check_render_packages, check_renderable

        check_render_packages(render_format)
        check_renderable(load_run_config(run_dir)[1].env.name)
    loaded = load_run(run_dir, checkpoint)
    cfg = loaded.cfg
    make = env_fn(cfg.env.name, cfg.env.map_name, cfg.env.maker_options())
    n = min(episodes, cfg.eval_envs or 16)
    seeds = env_seeds(cfg.seed if seed is None else seed, n, offset=EVAL_OFFSET + 10_000)
    result = evaluate_policy(loaded.policy, [make] * n, episodes, seeds, greedy=not stochastic)
    result["frames"] = float(loaded.frames)
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    extra = {}
    if render_episodes:
        from marlopt.render import render_policy

        video = render_policy(loaded.policy, cfg.env.name, make, out_dir / f"{loaded.checkpoint.stem}.{render_format}",
                              render_episodes, seeds[0], greedy=not stochastic)
        extra = {"video": video["path"], "video_frames": video["frames"], "video_episodes": video["episodes"]}
        result["video"] = video["path"]  # type: ignore[assignment]
    (out_dir / f"{loaded.checkpoint.stem}.json").write_text(
        json.dumps({"checkpoint": str(loaded.checkpoint), **result, **extra}, indent=2) + "\n")
    return result


def _whole_number(text: str, key: str) -> int:
    value = parse_value(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{key}: must be a whole number (got {text!r}); {USAGE}")
    return int(value)


def _flag(args: dict[str, str], key: str) -> bool:
    value = parse_value(args.get(key, "false"))
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: must be true or false (got {args[key]!r})")
    return value


def _render_arguments(args: dict[str, str]) -> tuple[int, str]:
    """``(render_episodes, render_format)`` of the command line; ``(0, ...)`` without
    ``render=true``. Checks the values and that the video writers are installed (one line)."""
    render = _flag(args, "render")
    given = [key for key in ("render_episodes", "render_format") if key in args]
    if given and not render:
        raise ConfigError(f"{' and '.join(given)} go{'es' if len(given) == 1 else ''} with render=true; {USAGE}")
    if not render:
        return 0, "gif"
    episodes = _whole_number(args.get("render_episodes", "1"), "render_episodes")
    if episodes <= 0:
        raise ConfigError(f"render_episodes: must be > 0 (got {episodes})")
    fmt = args.get("render_format", "gif")
    from marlopt.render import check_render_packages

    check_render_packages(fmt)
    return episodes, fmt


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from marlopt.checkpoint import CheckpointError

    args = parse_overrides(argv)
    unknown = sorted(set(args) - set(ARGUMENTS))
    if "run" not in args or unknown:
        fail(f"{'unknown argument ' + ', '.join(unknown) + '; ' if unknown else ''}{USAGE}")
    try:
        episodes = _whole_number(args.get("episodes", "32"), "episodes")
        if episodes <= 0:
            raise ConfigError(f"episodes: must be > 0 (got {episodes})")
        seed = None if "seed" not in args else _whole_number(args["seed"], "seed")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in 0..{MAX_SEED} (got {seed})")
        stochastic = _flag(args, "stochastic")
        render_episodes, render_format = _render_arguments(args)
        result = evaluate_run(Path(args["run"]), episodes, args.get("checkpoint", "latest"), stochastic, seed,
                              render_episodes, render_format)
    except (ConfigError, CheckpointError, ImportError) as exc:
        fail(str(exc))
    line = f"return {result['return_mean']:.3f} ± {result['return_std']:.3f} over {int(result['episodes'])} episodes"
    if "win_rate" in result:
        line += f", win rate {result['win_rate']:.3f}"
    print(f"{line} (checkpoint at {int(result['frames']):,} frames)")
    if "video" in result:
        print(f"video: {result['video']}")


if __name__ == "__main__":
    main()
