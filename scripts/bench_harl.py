"""The HARL anchor: HARL's own MAPPO on MPE ``simple_spread`` beside marlopt at HARL's settings.

Runs, back to back (never concurrently), HARL's entry point ``examples/train.py`` from a local checkout
of its public code (https://github.com/PKU-MARL/HARL, tested at d539bad), in its own venv, with the
command line recorded in ``docs/bench/harl_mappo_mpe/README.md``::

    cd <harl-dir>/examples && python train.py --algo mappo --env pettingzoo_mpe --exp_name bench \\
      --scenario simple_spread_v3 --continuous_actions False --n_rollout_threads 4 --episode_length 200 \\
      --num_env_steps <frames> --hidden_sizes "[128,128]" --ppo_epoch 5 --actor_num_mini_batch 1 \\
      --critic_epoch 5 --critic_num_mini_batch 1 --cuda False --seed <seed> --seed_specify True \\
      --use_eval False --log_dir <workdir>/results

(``--log_dir`` only moves HARL's results folder out of the checkout; everything else is
``algos_cfgs/mappo.yaml``'s defaults), and ``python -m marlopt.train`` with the same settings
(``benchmark.harl_overrides``, the ``harl-settings`` runs of ``scripts/benchmark.py``).

Per side: frames/s, wall time, peak memory of the process tree and the final training return.

- ``frames``: env steps summed over the 4 parallel envs; both sides run ``frames // 800`` whole
  updates of 4 envs x 200 steps (HARL's ``num_env_steps // 200 // 4``).
- ``fps_logged``: each library's own logged figure. HARL: the last ``FPS`` it prints (every 5 updates;
  total frames / seconds since its logger started, i.e. after env construction and the first reset,
  so cumulative over the training loop: rollouts, updates, logging, its model saves every 25
  updates). marlopt: the median over its training rows of ``time/fps`` (one iteration's frames /
  that iteration's rollout + update seconds).
- ``fps_loop``: frames / the training loop's time. HARL: the same as ``fps_logged`` (already
  cumulative); marlopt: frames / the sum of ``time/rollout_s + time/update_s`` (its cumulative figure).
- ``fps_wall`` = frames / process wall time (imports, env construction, teardown; marlopt's final
  greedy evaluation and checkpoint).
- peak memory: sum of RSS / PSS over the process and all its children (HARL's 4 env processes,
  marlopt's env workers), sampled every ``--sample-interval`` s (``benchmark.run_monitored``).
- return: team return per episode (the sum of the 3 agents' rewards over 25 steps) in both. HARL:
  its logged ``average episode reward`` (the training episodes that ended since its previous print,
  5 updates = 160 episodes); marlopt: ``train/return_mean``, averaged over blocks of 5 iterations
  (the same 160 episodes). ``return_final`` = the last print / the last block.
- ratios: marlopt / HARL per pair (a pair = one repeat, the same seed on both sides), and their
  median over the pairs.

Compatibility edits to HARL: ``scripts/patches/harl_mpe_compat.patch`` (applied to the checkout by
this script, idempotent): ``simple_spread_v3`` is added to the scenario whitelist of
``utils/envs_tools.py::make_train_env`` (PettingZoo 1.24 ships only v3), and
``PettingZooMPEEnv.reset`` unpacks the ``(observations, infos)`` pair that PettingZoo >= 1.23
returns. HARL's other env imports are already lazy; its ``harl/envs/__init__.py`` imports ``absl``
(installed). No algorithm, model, buffer or logger code is changed.

Usage::

    # once: the checkout (HARL's public code) and its venv (torch 2.13.0 CPU, PettingZoo 1.24.3's MPE,
    # SuperSuit, ...; versions written to <venv>/freeze.txt); also applies the patch
    python scripts/bench_harl.py --setup --harl-dir /work/anchors/HARL
    python scripts/benchmark.py --vs harl --harl-dir /work/anchors/HARL --frames 300000 --repeats 3 \\
        --out docs/bench/harl_mpe.json
    python scripts/bench_harl.py --frames 20000 --out /tmp/harl_smoke.json         # a smoke pair
    python scripts/bench_harl.py --print-commands                                   # show, run nothing
"""

from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))
from benchmark import (
    _fmt,
    anchor_workdir,
    apply_recorded_patch,
    failed_row,
    harl_overrides,
    make_anchor_venv,
    marlopt_command,
    meta,
    pair_ratios,
    run_alternating,
    run_marlopt,
    run_monitored,
    run_settings,
    table_start,
    write_report,
)

PATCH = REPO / "scripts" / "patches" / "harl_mpe_compat.patch"
DEFAULT_CHECKOUT = Path("/work/anchors/HARL")
DEFAULT_VENV = Path("/work/anchors/harl-venv")
TESTED_COMMIT = "d539bad20f677bc4ce9fa200fa5de31b5f0b9d37"
THREADS, EPISODE_LENGTH = 4, 200
FRAMES_PER_UPDATE = THREADS * EPISODE_LENGTH
LOG_INTERVAL = 5  # HARL's mappo.yaml train.log_interval: one return print per 5 updates
TORCH = "torch==2.13.0"  # installed first, alone: the local CPU wheel
PACKAGES = ["pettingzoo[mpe]==1.24.3", "supersuit", "gymnasium", "numpy", "pyyaml", "tensorboardX", "setproctitle",
            "absl-py"]
HARL_SETTINGS = ["--algo", "mappo", "--env", "pettingzoo_mpe", "--exp_name", "bench", "--scenario", "simple_spread_v3",
                 "--continuous_actions", "False", "--n_rollout_threads", str(THREADS),
                 "--episode_length", str(EPISODE_LENGTH), "--hidden_sizes", "[128,128]", "--ppo_epoch", "5",
                 "--actor_num_mini_batch", "1", "--critic_epoch", "5", "--critic_num_mini_batch", "1",
                 "--cuda", "False", "--seed_specify", "True", "--use_eval", "False"]
UNMATCHED = [
    ("Threads: HARL's mappo.yaml sets torch_threads 4 (rollout and update); marlopt's default torch_threads=0 "
     "runs rollout inference on 1 thread and the update on all cores (--marlopt-threads changes it)."),
    ("Env stepping: HARL steps 4 PettingZoo 1.24.3 MPE envs (SuperSuit padding wrappers) in 4 subprocesses "
     "(ShareSubprocVecEnv, one pipe round trip per step); marlopt drives mpe2's simple_spread_v3 with its MPE "
     "default env.vector (hybrid; --marlopt-vector changes it)."),
    ("Frames/s: HARL's logged FPS is cumulative since its logger started; marlopt's time/fps is per iteration "
     "(median reported); fps_loop is cumulative on both sides."),
    ("After the loop: marlopt runs one greedy evaluation (eval_episodes=1) and writes a checkpoint (in its wall "
     "time, not its loop time); HARL saves its models every 25 updates inside the loop and once at the end."),
]
FPS_LINE = re.compile(r"updates (\d+)/(\d+) episodes, total num timesteps (\d+)/(\d+), FPS (\d+)\.")
RETURN_LINE = re.compile(r"average episode reward is ([-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|nan|inf))\.")


def whole_frames(frames: int) -> int:
    """``frames`` rounded down to whole updates of 4 envs x 200 steps (at least one)."""
    return max(FRAMES_PER_UPDATE, frames // FRAMES_PER_UPDATE * FRAMES_PER_UPDATE)


def harl_command(python: str, checkout: Path, frames: int, seed: int, log_dir: Path) -> list[str]:
    """HARL's recorded command line (run in ``<checkout>/examples``) with the budget, seed and results folder."""
    return [python, str(checkout / "examples" / "train.py"), *HARL_SETTINGS,
            "--num_env_steps", str(whole_frames(frames)), "--seed", str(seed), "--log_dir", str(log_dir)]


def marlopt_overrides(seed: int, vector: str = "default", threads: int = 0,
                      extra: list[str] | None = None) -> list[str]:
    """marlopt.train overrides for HARL's settings (``benchmark.harl_overrides``), ``extra`` (``--override``)
    after them, so it wins over them."""
    ns = argparse.Namespace(seed=seed, marlopt_vector=vector, marlopt_threads=threads)
    return [*harl_overrides(ns), *(extra or [])]


def overrides_of(args: argparse.Namespace) -> list[str]:
    return marlopt_overrides(args.seed, args.marlopt_vector, args.marlopt_threads, args.override)


def full_overrides(args: argparse.Namespace) -> list[str]:
    """What ``benchmark.run_marlopt`` runs: the settings, then the budget (whole updates, no mid-run evaluation
    or checkpoint, one final evaluation episode)."""
    return [*overrides_of(args), *run_settings(whole_frames(args.frames), 1)]


# --------------------------------------------------------------------------------------------------
# HARL's log (pure)
# --------------------------------------------------------------------------------------------------
def parse_harl_log(text: str) -> dict[str, list]:
    """HARL's stdout -> ``prints``: (update, frames, FPS) per FPS print; ``returns``: (frames, average episode
    reward) per return print, stamped with the frames of the FPS print before it (the same ``episode_log``)."""
    prints: list[tuple[int, int, int]] = []
    returns: list[tuple[int, float]] = []
    for line in text.splitlines():
        m = FPS_LINE.search(line)
        if m:
            prints.append((int(m.group(1)), int(m.group(3)), int(m.group(5))))
            continue
        r = RETURN_LINE.search(line)
        if r and prints:
            returns.append((prints[-1][1], float(r.group(1))))
    return {"prints": prints, "returns": returns}


def harl_summary(parsed: dict[str, list]) -> dict[str, Any] | None:
    """Frames, the last logged FPS (cumulative over the loop) and the first and last logged returns."""
    if not parsed["prints"]:
        return None
    _, frames, fps = parsed["prints"][-1]
    rets = [r for _, r in parsed["returns"]]
    return {"frames": frames, "fps_logged": float(fps), "fps_loop": float(fps), "loop_s": frames / fps if fps else None,
            "fps_logged_prints": [p[2] for p in parsed["prints"]], "return_first": rets[0] if rets else None,
            "return_final": rets[-1] if rets else None, "curve": [list(r) for r in parsed["returns"]]}


def block_means(rows: list[dict[str, Any]], block: int = LOG_INTERVAL) -> list[tuple[int, float]]:
    """(frames at the block's end, mean ``train/return_mean``) per whole block of ``block`` iterations: HARL's
    print-to-print window (NaN rows skipped; a block without a return is left out)."""
    out = []
    for i in range(block, len(rows) + 1, block):
        vals = [v for r in rows[i - block:i] if (v := r.get("train/return_mean")) is not None and not math.isnan(v)]
        if vals:
            out.append((int(rows[i - 1]["step"]), sum(vals) / len(vals)))
    return out


def marlopt_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """From marlopt's training rows: the median ``time/fps`` and the block-averaged returns."""
    iters = [r for r in rows if "time/fps" in r]
    blocks = block_means(iters)
    return {"fps_logged": statistics.median(r["time/fps"] for r in iters) if iters else None,
            "return_first": blocks[0][1] if blocks else None, "return_final": blocks[-1][1] if blocks else None,
            "curve": [list(b) for b in blocks]}


# --------------------------------------------------------------------------------------------------
# Setup and patch
# --------------------------------------------------------------------------------------------------
def setup(checkout: Path, venv: Path) -> int:
    """Create the anchor venv (torch 2.13.0 first, then HARL's imports), write its freeze, apply the patch."""
    if not (checkout / "examples" / "train.py").is_file():
        print(f"bench_harl: {checkout} has no examples/train.py; get HARL's public code first "
              f"(https://github.com/PKU-MARL/HARL, tested at {TESTED_COMMIT[:7]})", file=sys.stderr)
        return 2
    make_anchor_venv(venv, [[TORCH], ["--prefer-binary", TORCH, *PACKAGES]], "bench_harl")
    if apply_patch(checkout) != 0:
        return 2
    return check_imports(str(venv / "bin" / "python"), checkout)


def apply_patch(checkout: Path, patch: Path = PATCH) -> int:
    """Apply the recorded compatibility patch to the checkout once (a no-op when already applied)."""
    return apply_recorded_patch(checkout, patch, "bench_harl", TESTED_COMMIT)


def check_imports(python: str, checkout: Path) -> int:
    """Import what HARL's MAPPO + MPE path needs, in the anchor venv."""
    code = "import harl.runners, harl.envs, pettingzoo.mpe.simple_spread_v3, supersuit; print('ok')"
    res = subprocess.run([python, "-c", code], capture_output=True, text=True, env=anchor_env(checkout), check=False)
    if res.returncode != 0:
        print(f"bench_harl: HARL's imports fail in the venv:\n{res.stderr[-2000:]}", file=sys.stderr)
        return 2
    print("bench_harl: HARL's MAPPO + pettingzoo_mpe imports work")
    return 0


def anchor_env(checkout: Path) -> dict[str, str]:
    """The environment of HARL's runs: its checkout importable, no marlopt venv leaking in, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": str(checkout), "PYTHONUNBUFFERED": "1"}


def checkout_head(checkout: Path) -> str | None:
    res = subprocess.run(["git", "log", "-1", "--format=%H %s"], cwd=checkout, capture_output=True, text=True,
                         check=False)
    return res.stdout.strip() or None


# --------------------------------------------------------------------------------------------------
# The two sides
# --------------------------------------------------------------------------------------------------
def run_harl(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    cmd = harl_command(args.harl_python, args.harl_dir, args.frames, args.seed, work / "results")
    log = work / "stdout.log"
    mon = run_monitored(cmd, log, args.sample_interval, timeout=args.timeout, env=anchor_env(args.harl_dir),
                        cwd=args.harl_dir / "examples")
    res: dict[str, Any] = {"name": "harl", "command": cmd, **mon}
    text = log.read_text(errors="replace")
    summary = harl_summary(parse_harl_log(text))
    if mon["returncode"] != 0 or summary is None:
        return {**res, "error": "\n".join(text.splitlines()[-15:])}
    res.update(summary)
    res["fps_wall"] = res["frames"] / mon["wall_s"]
    return res


def run_marlopt_side(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``benchmark.run_marlopt`` with HARL's settings, plus marlopt's logged fps and block returns."""
    from marlopt.logger import read_metrics

    res = run_marlopt("marlopt", overrides_of(args), whole_frames(args.frames), 1, work, args)
    if "error" in res:
        return res
    res.update(marlopt_summary(read_metrics(work / "run")))
    return res


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------
RATIOS = {"fps (logged)": "fps_logged", "fps (loop)": "fps_loop", "fps (wall)": "fps_wall", "wall s": "wall_s",
          "peak RSS": "peak_rss_mib"}
RUN_COLUMNS = ["run", "rep (seed)", "frames", "fps (logged)", "fps (loop)", "fps (wall)", "wall s",
               "peak RSS MiB (procs)", "peak PSS MiB", "return first -> final"]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per ratio in ``RATIOS``: marlopt / HARL for each complete pair (by repeat) and the median over them."""
    per_pair = pair_ratios(runs, "harl", list(RATIOS.values()))
    ratios = {label: {"per_pair": per_pair[key], "median": statistics.median(per_pair[key])}
              for label, key in RATIOS.items() if per_pair[key]}
    def ran(name: str) -> set[int]:
        return {r["repeat"] for r in runs if r["name"] == name and "error" not in r}

    return {"pairs": len(ran("harl") & ran("marlopt")), "ratios": ratios}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"{report['task']}; HARL {report.get('harl_head') or '-'} + {report['patch']}", "",
             *table_start(RUN_COLUMNS)]
    for r in report["runs"]:
        if "error" in r:
            lines.append(failed_row(r, len(RUN_COLUMNS)))
            continue
        lines.append(f"| {r['name']} | {r['repeat']} ({r['seed']}) | {_fmt(r['frames'])} | {_fmt(r['fps_logged'])} "
                     f"| {_fmt(r['fps_loop'])} | {_fmt(r['fps_wall'])} | {_fmt(r['wall_s'])} "
                     f"| {_fmt(r['peak_rss_mib'], 0)} ({r['peak_processes']}) | {_fmt(r['peak_pss_mib'], 0)} "
                     f"| {_fmt(r['return_first'], 2)} -> {_fmt(r['return_final'], 2)} |")
    ratios = report.get("summary", {}).get("ratios", {})
    if ratios:
        lines += ["", "| ratio marlopt / HARL | per pair | median |", "|---|---|---|"]
        lines += [f"| {k} | {', '.join(_fmt(v, 2) for v in r['per_pair'])} | {_fmt(r['median'], 2)} |"
                  for k, r in ratios.items()]
    lines += ["", ("fps (logged): HARL's last printed FPS (cumulative since its logger started); marlopt's median "
                   "time/fps over its training rows (per iteration). fps (loop): frames / training-loop time (HARL: "
                   "its logged FPS; marlopt: frames / sum of rollout + update s). Return: team return, HARL's last "
                   "printed average episode reward vs marlopt's train/return_mean over its last 5 iterations (160 "
                   "episodes each). Repeat k runs seed --seed + k on both sides; the order alternates.")]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harl-dir", type=Path, default=DEFAULT_CHECKOUT, help="checkout of HARL's public code")
    p.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the anchor venv (--setup creates it)")
    p.add_argument("--setup", action="store_true", help="create the venv, apply the patch, check imports, then exit")
    p.add_argument("--frames", type=int, default=300_000,
                   help="frame budget of each run, rounded down to whole 800-frame updates (default %(default)s)")
    p.add_argument("--repeats", type=int, default=1,
                   help="pairs, back to back; the order alternates; repeat k runs seed --seed + k on both sides")
    p.add_argument("--which", default="harl,marlopt", help="comma-separated subset of %(default)s (first goes first)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first repeat (default %(default)s)")
    p.add_argument("--marlopt-vector", choices=("default", "auto", "inproc", "subproc", "hybrid"), default="default",
                   help="env.vector for marlopt; default: the env config's own (MPE: hybrid)")
    p.add_argument("--marlopt-threads", type=int, default=0,
                   help="marlopt torch_threads (its default 0: all cores for the update, 1 for rollouts)")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="extra marlopt.train override, after the settings (repeatable; for ablations)")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "harl_mpe.json",
                   help="JSON report; the markdown table goes beside it as .md (default %(default)s)")
    p.add_argument("--workdir", type=Path, default=None,
                   help="run directories (default: a new /tmp dir, removed unless a run failed)")
    p.add_argument("--sample-interval", type=float, default=0.2, help="memory sampling period, s")
    p.add_argument("--timeout", type=float, default=None, help="kill a run after this many seconds")
    p.add_argument("--print-commands", action="store_true", help="print the commands and exit")
    args = p.parse_args(argv)
    args.harl_python = str(args.venv / "bin" / "python")
    args.which_list = [w.strip() for w in args.which.split(",") if w.strip()]
    if not args.which_list or set(args.which_list) - {"harl", "marlopt"}:
        p.error("--which: choose from harl,marlopt")
    if args.frames < 4000:
        p.error(f"--frames {args.frames}: HARL prints its FPS and returns every 5 updates of 800 frames; "
                "give at least 4000")
    return args


def main_vs(argv: list[str]) -> int:
    """``benchmark.py --vs harl [options]``: this script's ``main`` with the other options."""
    i = argv.index("--vs")
    return main(argv[:i] + argv[i + 2:])


def run_pairs(args: argparse.Namespace, work: Path, report: dict[str, Any]) -> bool:
    """All repeats, the order alternating; appends each run to ``report['runs']``; True if any failed."""
    def run(name: str, rep_args: argparse.Namespace, rdir: Path) -> dict[str, Any]:
        return (run_harl if name == "harl" else run_marlopt_side)(rep_args, rdir)

    def line(res: dict[str, Any]) -> str:
        return (f"{res['frames']} frames, fps logged {_fmt(res['fps_logged'])}, loop {_fmt(res['fps_loop'])}, "
                f"wall {_fmt(res['fps_wall'])}, final return {_fmt(res['return_final'], 2)}, "
                f"peak RSS {res['peak_rss_mib']:.0f} MiB")

    return run_alternating(args, work, report, "bench_harl", run, line)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.setup:
        return setup(args.harl_dir, args.venv)
    if args.print_commands:
        tmp = Path("<workdir>")
        print("harl:   ", f"(cd {args.harl_dir / 'examples'} &&", " ".join(harl_command(
            args.harl_python, args.harl_dir, args.frames, args.seed, tmp / "harl" / "results")) + ")")
        print("marlopt:", " ".join(marlopt_command(full_overrides(args), tmp / "marlopt" / "run")))
        return 0
    work = anchor_workdir("bench_harl", args.harl_python, f"python scripts/bench_harl.py --setup --harl-dir "
                          f"{args.harl_dir}", lambda: apply_patch(args.harl_dir), args.workdir,
                          check="harl" in args.which_list)
    if work is None:
        return 2
    freeze = args.venv / "freeze.txt"
    report: dict[str, Any] = {"meta": meta(args), "task": "MPE simple_spread_v3 (3 agents, 25 steps), 4 envs x 200",
                              "harl_dir": str(args.harl_dir), "harl_head": checkout_head(args.harl_dir),
                              "harl_tested_commit": TESTED_COMMIT, "patch": PATCH.name,
                              "harl_venv": freeze.read_text().split() if freeze.is_file() else None,
                              "marlopt_overrides": full_overrides(args), "unmatched": UNMATCHED, "runs": []}
    failed = run_pairs(args, work, report)
    report["summary"] = summarise(report["runs"])
    return write_report(report, markdown, args.out, "bench_harl", work, args.workdir is not None, failed)


if __name__ == "__main__":
    sys.exit(main())
