"""``python -m marlopt.evaluate run=<run_dir> [episodes=32] [checkpoint=latest] [stochastic=false]``.

Loads a run's saved config and a checkpoint (``latest``, ``step_<frames>`` or a ``.pt`` path),
runs the deployed policy greedily (``stochastic=true`` samples instead), prints the mean return
(and win rate where the env has wins) and saves them to ``<run_dir>/eval/<checkpoint>.json``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from marlopt.cli import fail, parse_overrides, parse_value
from marlopt.config import ConfigError

USAGE = "usage: python -m marlopt.evaluate run=<run_dir> [episodes=32] [checkpoint=latest] [stochastic=false] [seed=N]"


def evaluate_run(run_dir: Path, episodes: int = 32, checkpoint: str = "latest", stochastic: bool = False,
                 seed: int | None = None) -> dict[str, float]:
    from marlopt.envs import env_fn
    from marlopt.evaluation import evaluate_policy
    from marlopt.policy import load_run
    from marlopt.seeding import EVAL_OFFSET, env_seeds

    loaded = load_run(run_dir, checkpoint)
    cfg = loaded.cfg
    make = env_fn(cfg.env.name, cfg.env.map_name, cfg.env.maker_options())
    n = min(episodes, cfg.eval_envs or 16)
    seeds = env_seeds(cfg.seed if seed is None else seed, n, offset=EVAL_OFFSET + 10_000)
    result = evaluate_policy(loaded.policy, [make] * n, episodes, seeds, greedy=not stochastic)
    result["frames"] = float(loaded.frames)
    out_dir = run_dir / "eval"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{loaded.checkpoint.stem}.json").write_text(
        json.dumps({"checkpoint": str(loaded.checkpoint), **result}, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from marlopt.checkpoint import CheckpointError

    args = parse_overrides(argv)
    unknown = sorted(set(args) - {"run", "episodes", "checkpoint", "stochastic", "seed"})
    if "run" not in args or unknown:
        fail(f"{'unknown argument ' + ', '.join(unknown) + '; ' if unknown else ''}{USAGE}")
    try:
        episodes = int(parse_value(args.get("episodes", "32")))  # type: ignore[arg-type]
        if episodes <= 0:
            raise ConfigError(f"episodes: must be > 0 (got {episodes})")
        result = evaluate_run(Path(args["run"]), episodes, args.get("checkpoint", "latest"),
                              bool(parse_value(args.get("stochastic", "false"))),
                              None if "seed" not in args else int(parse_value(args["seed"])))  # type: ignore[arg-type]
    except (ConfigError, CheckpointError, ImportError) as exc:
        fail(str(exc))
    line = f"return {result['return_mean']:.3f} ± {result['return_std']:.3f} over {int(result['episodes'])} episodes"
    if "win_rate" in result:
        line += f", win rate {result['win_rate']:.3f}"
    print(f"{line} (checkpoint at {int(result['frames']):,} frames)")


if __name__ == "__main__":
    main()
