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
from marlopt.config import MAX_SEED, ConfigError

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


def _whole_number(text: str, key: str) -> int:
    value = parse_value(text)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
        raise ConfigError(f"{key}: must be a whole number (got {text!r}); {USAGE}")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    from marlopt.checkpoint import CheckpointError

    args = parse_overrides(argv)
    unknown = sorted(set(args) - {"run", "episodes", "checkpoint", "stochastic", "seed"})
    if "run" not in args or unknown:
        fail(f"{'unknown argument ' + ', '.join(unknown) + '; ' if unknown else ''}{USAGE}")
    try:
        episodes = _whole_number(args.get("episodes", "32"), "episodes")
        if episodes <= 0:
            raise ConfigError(f"episodes: must be > 0 (got {episodes})")
        seed = None if "seed" not in args else _whole_number(args["seed"], "seed")
        if seed is not None and not 0 <= seed <= MAX_SEED:
            raise ConfigError(f"seed: must be in 0..{MAX_SEED} (got {seed})")
        stochastic = parse_value(args.get("stochastic", "false"))
        if not isinstance(stochastic, bool):
            raise ConfigError(f"stochastic: must be true or false (got {args['stochastic']!r})")
        result = evaluate_run(Path(args["run"]), episodes, args.get("checkpoint", "latest"), stochastic, seed)
    except (ConfigError, CheckpointError, ImportError) as exc:
        fail(str(exc))
    line = f"return {result['return_mean']:.3f} ± {result['return_std']:.3f} over {int(result['episodes'])} episodes"
    if "win_rate" in result:
        line += f", win rate {result['win_rate']:.3f}"
    print(f"{line} (checkpoint at {int(result['frames']):,} frames)")


if __name__ == "__main__":
    main()
