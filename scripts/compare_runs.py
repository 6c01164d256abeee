"""Same seed, same metrics: tiny training runs of two versions of marlopt, compared row by row.

    python scripts/compare_runs.py --baseline da15f28                  # baseline commit vs this checkout
    python scripts/compare_runs.py --baseline da15f28 --new HEAD~3     # two commits
    python scripts/compare_runs.py --baseline da15f28 --keep /tmp/cmp --cases mappo-mpe grasp-games

Each side is a directory holding a ``marlopt/`` package: a commit is extracted with
``git archive <commit> marlopt | tar -x`` into a temporary directory, a path is used as it is, and
the default new side is this checkout. Both sides run ``python -m marlopt.train`` with the same
command line, in the same Python (``sys.executable``), with ``PYTHONPATH=<side>`` and a scratch
``cwd``; the baseline and the new run of one case run at the same time (one torch thread each).
Their ``metrics.jsonl`` rows must be equal once the timing keys (``time/...``, durations such as
``grasp/qp_ms``) are dropped: same keys, same values (floats with ``==``, NaN equal to NaN, an int
is not a float). Exit status 0 when every case matches, 1 on a difference, 2 when a side cannot be
prepared.

The overrides below exist in the config schema of every version since the baseline (top-level
keys, ``env.vector``/``env.continuous``, ``model.*``); keep them that way when moving the
baseline forward. ``tests/test_behaviour_unchanged.py`` runs every case in CI.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from marlopt.logger import read_metrics as marlopt_metrics

REPO = Path(__file__).resolve().parents[1]

# 2 envs x 20 steps = 40 frames per iteration, 4 iterations (MPE episodes of 25 steps cross the
# iteration boundaries), a greedy evaluation after iteration 2 and the final one; rollouts of 20 are
# a multiple of the GRU's data_chunk_length (10). One torch thread: the two sides run side by side
# and the update's float reductions do not depend on the machine's core count.
COMMON = ("seed=1", "n_envs=2", "rollout_length=20", "total_steps=160", "eval_interval=80",
          "eval_episodes=2", "eval_envs=2", "progress=false", "save_interval=1000000",
          "latest_interval=1000000", "torch_threads=1")

ALGOS = ("mappo", "mars", "happo", "hatrpo", "grasp")
ENVS = {
    # MAPPO keeps MPE's default vector mode (hybrid: env workers in subprocesses); the rest step the
    # envs in-process, which is the same rollout bit for bit (tests/envs/vector/test_process_env.py) and faster.
    "mpe": ("env=mpe", "map=simple_spread"),
    "games": ("env=games", "map=gpvd_matrix"),
}


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]

    def argv(self, run_dir: Path) -> list[str]:
        return [*self.overrides, *COMMON, f"hydra.run.dir={run_dir}"]


# MAPPO and the MARS family pick up HARL Table 6 on MPE (tuned/env_algo/mpe_mappo.yaml, MLP [128, 128])
# since after the baseline: their MPE cases name the model the baseline composed (its defaults, GRU 64
# after one 64-unit layer), so both sides build the same network. n_envs and rollout_length are in COMMON.
MPE_MODEL_BEFORE_TABLE6 = ("model.recurrent=true", "model.hidden_sizes=[64]")
GAINED_MPE_TUNING = {"mappo", "mars"}


def _cases() -> list[Case]:
    cases = []
    for env, overrides in ENVS.items():
        for algo in ALGOS:
            extra = ("env.vector=inproc",) if env == "mpe" and algo != "mappo" else ()
            if env == "mpe" and algo in GAINED_MPE_TUNING:
                extra = (*extra, *MPE_MODEL_BEFORE_TABLE6)
            cases.append(Case(f"{algo}-{env}", (f"algo={algo}", *overrides, *extra)))
    cases.append(Case("mappo-mpe-continuous", ("algo=mappo", "env=mpe", "map=simple_speaker_listener",
                                               "env.continuous=true", "env.vector=inproc",
                                               *MPE_MODEL_BEFORE_TABLE6)))
    return cases


#: Each case is one pair of runs; GRASP/HAPPO/HATRPO get their tuned actor sharing (hybrid /
#: separate) from configs/tuned, the matrix game its MLP policy.
CASES: list[Case] = _cases()


class CompareError(RuntimeError):
    """A side cannot be prepared or a run failed; the message is meant to be shown as it is."""


# ------------------------------------------------------------------------------------------- sides


def extract(commit: str, dest: Path, repo: Path = REPO) -> Path:
    """``git archive <commit> marlopt | tar -x -C dest``; returns ``dest`` (which then holds marlopt/)."""
    if shutil.which("git") is None:
        raise CompareError("git is not installed: it is needed to extract the baseline commit")
    known = subprocess.run(["git", "-C", str(repo), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
                           capture_output=True, text=True)
    if known.returncode != 0:
        raise CompareError(f"commit {commit} is not in the clone at {repo} (shallow clone?): fetch full history "
                           f"(git fetch --unshallow; in CI actions/checkout with fetch-depth: 0)")
    archive = subprocess.run(["git", "-C", str(repo), "archive", "--format=tar", commit, "marlopt"],
                             capture_output=True)
    if archive.returncode != 0:
        raise CompareError(f"git archive {commit} marlopt failed: {archive.stderr.decode(errors='replace').strip()}")
    dest.mkdir(parents=True, exist_ok=True)
    untar = subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, capture_output=True)
    if untar.returncode != 0:
        raise CompareError(f"tar -x of commit {commit} failed: {untar.stderr.decode(errors='replace').strip()}")
    if not (dest / "marlopt" / "train.py").is_file():
        raise CompareError(f"git archive {commit} marlopt has no marlopt/train.py (extracted into {dest})")
    return dest


def resolve_side(spec: str | None, scratch: Path, repo: Path = REPO) -> Path:
    """A directory holding ``marlopt/`` (used as it is), a commit (extracted under ``scratch``), or
    None for this checkout."""
    if spec is None:
        return repo
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "marlopt" / "train.py").is_file():
            raise CompareError(f"{path} has no marlopt/train.py: give a directory that holds the marlopt package")
        return path.resolve()
    return extract(spec, scratch, repo)


def check_imports_from(root: Path) -> None:
    """The subprocesses must import marlopt from ``root``, not from an installed copy (the editable
    install's finder comes after PYTHONPATH; this checks it)."""
    with tempfile.TemporaryDirectory() as empty:  # cwd comes first on sys.path: an empty one
        proc = subprocess.run([sys.executable, "-c", "import marlopt; print(marlopt.__file__)"],
                              env=_env(root), cwd=empty, capture_output=True, text=True)
    where = Path(proc.stdout.strip()).resolve() if proc.returncode == 0 else None
    if where != (root / "marlopt" / "__init__.py").resolve():
        raise CompareError(f"with PYTHONPATH={root} marlopt imports from {where or proc.stderr.strip()[-300:]}, "
                           f"not from {root}")


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(root), "HYDRA_FULL_ERROR": "1"}


# -------------------------------------------------------------------------------------------- runs


def _start(root: Path, case: Case, run_dir: Path, cwd: Path) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.log", "w")  # noqa: SIM115 - closed in _finish
    proc = subprocess.Popen([sys.executable, "-m", "marlopt.train", *case.argv(run_dir)], cwd=cwd, env=_env(root),
                            stdout=log, stderr=subprocess.STDOUT, text=True)
    proc.log = log  # type: ignore[attr-defined]
    return proc


def _finish(proc: subprocess.Popen, label: str, timeout: float) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    proc.log.close()  # type: ignore[attr-defined]
    if proc.returncode != 0:
        tail = Path(proc.log.name).read_text(errors="replace")[-3000:]  # type: ignore[attr-defined]
        why = "timed out" if proc.returncode < 0 else f"exit status {proc.returncode}"
        raise CompareError(f"{label} run failed ({why}); command:\n  {' '.join(proc.args)}\n{tail}")


def run_pair(case: Case, baseline: Path, new: Path, workdir: Path, timeout: float = 600) -> tuple[Path, Path]:
    """Run one case on both sides at once; returns the two run directories."""
    out = workdir / case.name
    out.mkdir(parents=True, exist_ok=True)
    runs = {"baseline": out / "baseline", "new": out / "new"}
    procs = {side: _start(root, case, runs[side], out) for side, root in (("baseline", baseline), ("new", new))}
    errors = []
    for side, proc in procs.items():
        try:
            _finish(proc, f"{case.name}: {side} ({baseline if side == 'baseline' else new})", timeout)
        except CompareError as exc:
            errors.append(str(exc))
    if errors:
        raise CompareError("\n".join(errors))
    return runs["baseline"], runs["new"]


# ------------------------------------------------------------------------------------- comparison


#: Last components of wall-clock keys outside ``time/`` (durations such as GRASP's ``grasp/qp_ms``).
WALL_CLOCK_NAMES = frozenset({"time", "timestamp", "wall_time", "walltime", "elapsed"})
WALL_CLOCK_SUFFIXES = ("_ms", "_s", "_sec", "_seconds")


def dropped(key: str) -> bool:
    """Timing keys, which differ from run to run: ``time/...`` and any wall-clock field."""
    name = key.rsplit("/", 1)[-1]
    return key.startswith("time/") or name in WALL_CLOCK_NAMES or name.endswith(WALL_CLOCK_SUFFIXES)


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise CompareError(f"{path} is missing")
    rows = marlopt_metrics(path)  # non-finite values as floats, a torn last line skipped
    return [{k: v for k, v in row.items() if not dropped(k)} for row in rows]


def same(a, b) -> bool:
    """Exact equality of JSON values: same type, floats with ``==``, NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def diff_metrics(case: str, baseline: list[dict], new: list[dict], max_rows: int = 5) -> list[str]:
    """Human-readable differences (empty when the rows are equal)."""
    lines = []
    if len(baseline) != len(new):
        lines.append(f"{case}: {len(baseline)} rows in the baseline, {len(new)} in the new run "
                     f"(steps {[r.get('step') for r in baseline]} vs {[r.get('step') for r in new]})")
    shown = 0
    for i, (b, n) in enumerate(zip(baseline, new)):
        if same(b, n):
            continue
        if shown == max_rows:
            lines.append(f"{case}: ... more differing rows")
            break
        shown += 1
        step = b.get("step") if same(b.get("step"), n.get("step")) else f"{b.get('step')!r} vs {n.get('step')!r}"
        lines.append(f"{case}: row {i} (step {step}):")
        for key in sorted(b.keys() - n.keys()):
            lines.append(f"    {key}: baseline={_show(b[key])}, new=<missing>")
        for key in sorted(n.keys() - b.keys()):
            lines.append(f"    {key}: baseline=<missing>, new={_show(n[key])}")
        for key in sorted(b.keys() & n.keys()):
            if not same(b[key], n[key]):
                lines.append(f"    {key}: baseline={_show(b[key])}, new={_show(n[key])}")
    return lines


#: Metrics added since the baseline, with the value every finite seeded run logs: a new row may hold
#: one where its baseline row does not (with any other value it is a difference).
ADDED = {"train/nonfinite_steps": 0.0}  # marlopt.guard: optimiser steps skipped as non-finite


def without_added(baseline: list[dict], new: list[dict]) -> list[dict]:
    """``new`` without the :data:`ADDED` metrics that its baseline rows lack and that hold their value."""
    out = []
    for i, row in enumerate(new):
        base = baseline[i] if i < len(baseline) else {}
        out.append({k: v for k, v in row.items() if not (k in ADDED and k not in base and same(v, ADDED[k]))})
    return out


def compare_case(case: Case, baseline: Path, new: Path, workdir: Path) -> list[str]:
    """Run one case on both sides; the differences (empty when equal)."""
    base_run, new_run = run_pair(case, baseline, new, workdir)
    base_rows = read_metrics(base_run)
    return diff_metrics(case.name, base_rows, without_added(base_rows, read_metrics(new_run)))


# -------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="commit (or directory holding marlopt/) to compare against")
    parser.add_argument("--new", default=None, help="commit or directory holding marlopt/ (default: this checkout)")
    parser.add_argument("--keep", type=Path, default=None, help="write the runs here and keep them")
    parser.add_argument("--cases", nargs="+", default=None, metavar="NAME",
                        help=f"subset of: {' '.join(c.name for c in CASES)}")
    args = parser.parse_args(argv)

    cases = CASES if args.cases is None else [c for c in CASES if c.name in args.cases]
    unknown = set(args.cases or ()) - {c.name for c in CASES}
    if unknown:
        parser.error(f"unknown case(s) {', '.join(sorted(unknown))}")
    with tempfile.TemporaryDirectory(prefix="marlopt-compare-") as scratch:
        workdir = args.keep.resolve() if args.keep else Path(scratch) / "runs"
        try:
            baseline = resolve_side(args.baseline, Path(scratch) / "baseline")
            new = resolve_side(args.new, Path(scratch) / "new")
            for root in {baseline, new}:
                check_imports_from(root)
        except CompareError as exc:
            print(f"compare_runs: error: {exc}", file=sys.stderr)
            return 2
        print(f"baseline: {baseline}\nnew:      {new}\nruns:     {workdir}")
        failed, t_all = [], time.perf_counter()
        for case in cases:
            t0 = time.perf_counter()
            verdict = "DIFFERENT"
            try:
                diffs = compare_case(case, baseline, new, workdir)
            except CompareError as exc:
                diffs, verdict = [f"{case.name}: {exc}"], "FAILED"
            verdict = "same" if not diffs else verdict
            print(f"{case.name:<22} {verdict:<9} {time.perf_counter() - t0:6.1f} s", flush=True)
            for line in diffs:
                print(f"  {line}")
            if diffs:
                failed.append(case.name)
        print(f"{len(cases) - len(failed)}/{len(cases)} cases the same in {time.perf_counter() - t_all:.1f} s"
              + (f"; not the same: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
