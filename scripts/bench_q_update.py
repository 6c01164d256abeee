"""Time of one value-decomposition gradient step, and the two choices made for its speed.

1. ``update``: ``QLearningRule.update`` on 32 sampled MPE ``simple_spread`` episodes (26 inputs,
   3 agents) for the GRU agent (PyMARL's) and the MLP agent (EPyMARL's QMIX setting), 1 thread.
2. ``gru``: the GRU over a sequence, forward + backward, stepping with ``gates_x[t]`` (each
   indexing's backward fills a zero tensor of the whole sequence) vs ``gates_x.unbind(0)`` (one
   stack), as ``GroupedGRUCell.forward`` does now.
3. ``mixer``: QMIX's per-sample ``[1, N] @ [N, E]`` products as ``torch.bmm`` vs broadcast-and-sum,
   as ``QMixer.forward`` does now (832 samples, N = 3, E = 32), forward + backward.

    python scripts/bench_q_update.py --out docs/bench/q_update.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def timed(fn, repeats: int) -> float:
    for _ in range(max(3, repeats // 10)):
        fn()
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t0) / repeats * 1e3


def update_ms(overrides: list[str], repeats: int) -> float:
    from marlopt.algos.registry import build_rule
    from marlopt.cli import compose
    from marlopt.config import to_objects
    from marlopt.envs import env_fn
    from marlopt.replay import EpisodeBuffer

    cfg = to_objects(compose(["algo=qmix", *overrides]))
    spec = env_fn("mpe", "simple_spread", cfg.env.maker_options())().spec
    torch.manual_seed(0)
    rule = build_rule(spec, cfg.algo, cfg.model, torch.device("cpu"))
    buf = EpisodeBuffer(spec, 64)
    rng = np.random.default_rng(0)
    t, n = spec.episode_limit, spec.n_agents
    for _ in range(64):
        buf.insert({"obs": rng.normal(size=(t + 1, n, spec.obs_dim)).astype(np.float32),
                    "state": rng.normal(size=(t + 1, 1, spec.state_dim)).astype(np.float32),
                    "avail": np.ones((t + 1, n, spec.n_actions), bool), "actions": rng.integers(0, 5, (t, n)),
                    "reward": rng.normal(size=t).astype(np.float32), "terminated": np.zeros(t, bool)}, t)
    return timed(lambda: rule.update(buf.sample(32), 0), repeats)


def gru_ms(unbind: bool, repeats: int) -> float:
    torch.manual_seed(0)
    gates = torch.randn(26, 96, 192, requires_grad=True)
    w = torch.randn(64, 192) * 0.1

    def run() -> None:
        h = torch.zeros(96, 64)
        steps = gates.unbind(0) if unbind else (gates[t] for t in range(gates.shape[0]))
        outs = []
        for g in steps:
            r, z, n = (g + h @ w).chunk(3, -1)
            h = torch.tanh(n) * torch.sigmoid(z) + h * torch.sigmoid(r)
            outs.append(h)
        torch.stack(outs).sum().backward()

    return timed(run, repeats)


def mixer_ms(broadcast: bool, repeats: int) -> float:
    torch.manual_seed(0)
    q = torch.randn(832, 3, requires_grad=True)
    w1 = torch.randn(832, 3, 32, requires_grad=True)
    b1 = torch.randn(832, 32)
    w2 = torch.randn(832, 32, requires_grad=True)

    def run() -> None:
        if broadcast:
            hidden = F.elu((q.unsqueeze(-1) * w1).sum(1) + b1)
            out = (hidden * w2).sum(-1)
        else:
            hidden = F.elu(torch.bmm(q.unsqueeze(1), w1) + b1.unsqueeze(1))
            out = torch.bmm(hidden, w2.unsqueeze(-1)).view(-1)
        out.sum().backward()

    return timed(run, repeats)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    mlp = ["model.recurrent=false", "model.hidden_sizes=[64,64]", "algo.obs_last_action=false"]
    out = {
        "threads": 1,
        "update_ms": {"gru_pymarl": update_ms([], args.repeats // 4), "mlp_epymarl": update_ms(mlp, args.repeats // 2)},
        "gru_sequence_ms": {"index": gru_ms(False, args.repeats), "unbind": gru_ms(True, args.repeats)},
        "mixer_ms": {"bmm": mixer_ms(False, args.repeats), "broadcast": mixer_ms(True, args.repeats)},
    }
    print(json.dumps(out, indent=2))
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
