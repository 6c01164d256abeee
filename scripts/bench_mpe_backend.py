"""Env steps per second of MPE: the batched JAX backend (``env.backend=jax``) vs the mpe2 path.

    python scripts/bench_mpe_backend.py [--envs 16 128] [--steps 200] [--repeats 5]
        [--map simple_spread] [--continuous] [--out FILE.json]

For each E in ``--envs``, each candidate steps E envs ``--steps`` times with pre-drawn random
actions (numpy in, numpy out, as the runner sees them: auto-resets every 25 steps included); the
candidates run interleaved round-robin over ``--repeats`` rounds so that machine load affects all
alike, and the median env steps/s (E x steps / seconds, frames as marlopt counts them) is printed with
the ratio to mpe2 ``inproc``. Compilation (JAX) and worker start-up are done before timing and
reported apart (``setup_s``). Candidates:

- ``mpe2 inproc``: ``ProcessVectorEnv`` of ``marlopt.envs.mpe.MPEEnv`` stepped in this process;
- ``mpe2 hybrid``: the same, workers + this process (MPE's default ``env.vector``);
- ``jax batched``: ``MpeJaxVectorEnv`` (one jitted ``vmap`` call per step for all E envs).

Only the env is timed (no policy, no learning); what it means for a run depends on the env's share
of the iteration (``docs/benchmarks.md``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from marlopt.envs import ProcessVectorEnv, env_fn
from marlopt.envs.common import usable_cpus
from marlopt.envs.mpe_jax import make_vector


def build(kind: str, map_name: str, n_envs: int, continuous: bool) -> Any:
    options = {"continuous": continuous}
    if kind == "jax batched":
        return make_vector(map_name, n_envs, backend="jax", **options)
    fns = [env_fn("mpe", map_name, {"backend": "mpe2", **options}) for _ in range(n_envs)]
    if kind == "mpe2 inproc":
        return ProcessVectorEnv(fns, mode="inproc")
    cores = usable_cpus()
    return ProcessVectorEnv(fns, mode="hybrid", n_workers=max(1, min(n_envs - 1, cores - 1)))


def actions_for(vec: Any, steps: int, rng: np.random.Generator) -> list[np.ndarray]:
    spec, E = vec.spec, vec.num_envs
    if spec.continuous:
        return [rng.uniform(0, 1, (E, spec.n_agents, spec.n_actions)).astype(np.float32) for _ in range(steps)]
    avail = vec.reset([0] * E).avail
    sizes = avail.sum(-1)
    return [(rng.random((E, spec.n_agents)) * sizes).astype(np.int64) for _ in range(steps)]


def run_once(vec: Any, acts: list[np.ndarray], seed: int) -> float:
    vec.reset([seed * 1000 + i for i in range(vec.num_envs)])
    t0 = time.perf_counter()
    for a in acts:
        vec.step(a)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", type=int, nargs="+", default=[16, 128])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--map", default="simple_spread")
    ap.add_argument("--continuous", action="store_true")
    ap.add_argument("--kinds", nargs="+", default=["mpe2 inproc", "mpe2 hybrid", "jax batched"])
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    results = []
    print(f"map={args.map} continuous={args.continuous} steps={args.steps} repeats={args.repeats} "
          f"cores={usable_cpus()}")
    for E in args.envs:
        vecs, setup, acts = {}, {}, {}
        for kind in args.kinds:
            t0 = time.perf_counter()
            vecs[kind] = build(kind, args.map, E, args.continuous)
            acts[kind] = actions_for(vecs[kind], args.steps, rng)
            run_once(vecs[kind], acts[kind][:30], seed=99)  # compile / warm up (an auto-reset included)
            setup[kind] = time.perf_counter() - t0
        times: dict[str, list[float]] = {k: [] for k in args.kinds}
        for r in range(args.repeats):
            for kind in args.kinds:
                times[kind].append(run_once(vecs[kind], acts[kind], seed=r))
        for v in vecs.values():
            v.close()
        base = E * args.steps / statistics.median(times[args.kinds[0]])
        for kind in args.kinds:
            sps = E * args.steps / statistics.median(times[kind])
            row = {"E": E, "kind": kind, "steps_per_s": sps, "ratio": sps / base, "setup_s": setup[kind],
                   "min_steps_per_s": E * args.steps / max(times[kind]),
                   "max_steps_per_s": E * args.steps / min(times[kind])}
            results.append(row)
            print(f"E={E:4d}  {kind:12s}  {sps:10,.0f} env steps/s  (range {row['min_steps_per_s']:,.0f}"
                  f"-{row['max_steps_per_s']:,.0f})  x{row['ratio']:.2f} vs {args.kinds[0]}  setup {setup[kind]:.1f} s")
    if args.out:
        args.out.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results},
                                       indent=1))


if __name__ == "__main__":
    main()
