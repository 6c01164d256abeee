"""Update-time ratios at equal batch, and GRASP's QP solve time.

    python scripts/bench_update.py [--repeats 7] [--device cpu] [--out docs/bench/update_times.json]

One real rollout batch of MPE ``simple_spread`` (3 agents) is collected once; then each update rule
(MAPPO, HAPPO, HATRPO, GRASP, MAGPO — same network sizes, same epochs and minibatches) runs ``update``
on that same batch (MAGPO on a batch of the same size that its guider collected), interleaved round-robin over ``--repeats`` rounds so that machine load affects
all alike; the median time per rule and the ratio to MAPPO are reported. Then
``min_norm_coefficients`` is timed on random gradients for n = 3, 10, 27 agents (p = 50k) against
the cvxpy reference.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from marlopt.cli import compose
from marlopt.config import to_objects
from marlopt.runners.on_policy import OnPolicyRunner

SETTINGS = {
    "mlp": ["model.recurrent=false", "model.hidden_sizes=[128,128]", "n_envs=8", "rollout_length=200"],
    "gru": ["model.recurrent=true", "model.hidden_sizes=[64]", "n_envs=8", "rollout_length=200"],
}
RULES = {  # every rule with the same epochs / minibatches
    "mappo": ["algo=mappo", "model.sharing=shared"],
    "mappo_separate": ["algo=mappo", "model.sharing=separate"],
    "happo": ["algo=happo", "algo.critic_epochs=5"],
    "hatrpo": ["algo=hatrpo", "algo.critic_epochs=5"],
    "grasp": ["algo=grasp", "model.sharing=hybrid"],
    "magpo": ["algo=magpo", "model.sharing=shared"],  # guider + learner + critic
}
#: Rules whose batch carries more than the runner's common fields (MAGPO: the guider acted, and the
#: learner's rollout pass is in ``batch.extras``): they collect their own batch of the same size.
OWN_BATCH = {"magpo"}


def build(setting: str, rule: str, device: str) -> OnPolicyRunner:
    overrides = ["env=mpe", "map=simple_spread", "progress=false", "env.vector=inproc", f"device={device}",
                 "algo.ppo_epochs=5", "algo.num_minibatches=1", *RULES[rule], *SETTINGS[setting]]
    return OnPolicyRunner(to_objects(compose(overrides)), Path(tempfile.mkdtemp()))


def time_updates(setting: str, repeats: int, device: str) -> dict[str, float]:
    runners = {name: build(setting, name, device) for name in RULES}
    base = runners["mappo"]
    base.collect()
    batches = {}
    for name, runner in runners.items():
        if name in OWN_BATCH:
            runner.collect()
        batches[name] = runner.batch if name in OWN_BATCH else base.batch
    states = {name: copy.deepcopy(r.rule.state_dict()) for name, r in runners.items()}
    times: dict[str, list[float]] = {name: [] for name in RULES}
    for _ in range(repeats):
        for name, runner in runners.items():
            runner.rule.load_state_dict(states[name])
            torch.manual_seed(0)
            if device != "cpu":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            runner.rule.update(copy.copy(batches[name]))
            if device != "cpu":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    for r in runners.values():
        r.close()
    return {name: statistics.median(t) for name, t in times.items()}


def time_qp(device: str) -> dict[str, dict[str, float]]:
    from marlopt.objectives import min_norm_coefficients, min_norm_coefficients_cvxpy, min_norm_coefficients_from_gram

    def per_call(fn, reps: int = 50) -> float:
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device != "cpu":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    min_norm_coefficients_cvxpy(torch.randn(3, 10).double().numpy() @ torch.randn(10, 3).double().numpy())  # warm-up
    out = {}
    for n in (3, 10, 27):
        g = torch.randn(n, 50_000, device=device)
        gram = g @ g.T
        gram_np = gram.double().cpu().numpy()
        out[str(n)] = {
            "solve_ms": 1e3 * per_call(lambda: min_norm_coefficients_from_gram(gram_np)),
            "total_ms": 1e3 * per_call(lambda: min_norm_coefficients(g)),  # Gram on the device + solve
            "cvxpy_ms": 1e3 * per_call(lambda: min_norm_coefficients_cvxpy(gram_np), reps=3),
        }
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="docs/bench/update_times.json")
    p.add_argument("--qp-only", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    result = {"device": args.device, "updates": {}, "qp": time_qp(args.device)}
    for setting in [] if args.qp_only else SETTINGS:
        med = time_updates(setting, args.repeats, args.device)
        result["updates"][setting] = {name: {"seconds": t, "ratio_to_mappo": t / med["mappo"]} for name, t in med.items()}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for setting, rows in result["updates"].items():
        print(f"\n{setting}: update time per iteration (1600 frames, 5 epochs, 1 minibatch)")
        for name, row in rows.items():
            print(f"  {name:15s} {row['seconds'] * 1e3:8.1f} ms   x{row['ratio_to_mappo']:.2f}")
    print("\nmin-norm QP (p = 50k):")
    for n, row in result["qp"].items():
        print(f"  n={n:>2}: solve on the Gram {row['solve_ms']:.3f} ms, with the Gram {row['total_ms']:.3f} ms, "
              f"cvxpy {row['cvxpy_ms']:.1f} ms")


if __name__ == "__main__":
    main()
