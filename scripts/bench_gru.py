"""GRU over a BPTT chunk, forward + backward: the cell loop vs the speed kit's fused sequence
(its Python loop and its C++ kernel).

    python scripts/bench_gru.py [--repeats 7] [--steps 128] [--threads 0] [--clock wall|cpu] [--all]
                                [--update] [--profile] [--out FILE.json]

For each shape (``L`` steps, ``B`` chunks, ``N`` agents, input width, hidden 128, shared weights
``G = 1`` or one set per agent ``G = N``, episode resets synchronised every 25 steps as in MPE or
at random per row as in SMAX), each candidate runs forward, a loss and backward to the inputs,
the initial state and every weight, interleaved round-robin over ``--repeats`` rounds so that
machine load affects all alike; the median milliseconds and the speed-up over the loop are printed.
``--clock cpu`` times this process's CPU time instead of wall-clock (steadier on a loaded machine,
with ``--threads 1``). ``--all`` adds the slower candidates (torch.gru, jit) to the default loop/fused.

``--update`` also times whole MAPPO updates (``rule.update`` on one collected batch) at JaxMARL's
MPE settings (``UPDATE_OVERRIDES``: GRU 128, BPTT over the whole 128-step rollout, 4 epochs × 4
minibatches, 16 envs), shared and separate actors, with the GRU as the cell loop, the fused Python
loop and the fused C++ kernel (every other speed-kit trick on in all three) on one intra-op thread,
then the kernel on two threads with the critic's steps after the actor's (``kernel_2t``) and
beside them on a second thread (``beside``, :func:`marlopt.optim.side_by_side`; the default),
interleaved over ``--repeats`` rounds. ``--profile``: torch.profiler over one such update (shared actor, kernel on),
self CPU time per op and the shares of the kernel, the other matmuls, Adam and the rest.

Candidates:
- ``loop``: ``GroupedGRUCell`` with the speed kit off (today's cell loop, autograd per op);
- ``fused``: ``GroupedGRUCell`` with the speed kit on and its C++ kernel off (:mod:`marlopt.models.fast_gru`'s
  Python loop);
- ``kernel``: the speed kit on, its C++ kernel on (:mod:`marlopt.models.gru_kernel`; the default);
- ``torch.gru``: torch's own GRU (``torch.gru``, C++ loop, autograd per op), run over the segments
  between the steps where any row resets (the reset rows zeroed at each segment's start; exact),
  one call per weight group;
- ``jit``: the cell loop under ``torch.jit.script`` (autograd per op, no Python per step).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor

from marlopt.models import gru_kernel
from marlopt.models.layers import GroupedGRUCell, _stack
from marlopt.optim import set_speed_kit

SHAPES = [  # (label, B chunks, N agents, input width, groups, resets)
    ("MPE 16x128 /4 mb, shared", 4, 3, 64, 1, "mpe"),
    ("MPE 16x128 /4 mb, separate", 4, 3, 64, 3, "mpe"),
    ("MPE in=128, shared", 4, 3, 128, 1, "mpe"),
    ("SMAX 128x128 /4 mb, shared", 32, 5, 64, 1, "random"),
    ("SMAX 128x128 /4 mb, separate", 32, 5, 64, 5, "random"),
]
HIDDEN = 128
UPDATE_OVERRIDES = ["env=mpe", "map=simple_spread", "progress=false", "model.recurrent=true", "model.rnn_hidden=128",
                    "rollout_length=128", "n_envs=16", "model.data_chunk_length=128", "algo=mappo",
                    "algo.ppo_epochs=4", "algo.num_minibatches=4", "algo.lr=2e-3"]


def make_starts(kind: str, steps: int, batch: int, n: int, gen: torch.Generator) -> Tensor:
    if kind == "mpe":  # every env resets together every 25 steps (MPE's time limit), not at step 0
        starts = torch.zeros(steps, batch, 1)
        starts[25::25] = 1.0
        return starts
    return (torch.rand(steps, batch, 1, generator=gen) < 1 / 40).float()  # SMAX: episodes end anywhere


def _torch_gru_segments(cell: GroupedGRUCell, x: Tensor, h: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
    """torch.gru over the segments between resets, one call per weight group."""
    steps, batch, n, _ = x.shape
    cut = [0, *[t for t in starts.flatten(1).any(1).nonzero().flatten().tolist() if t > 0], steps]
    groups = cell.groups
    w_i, b_i = _stack(cell.input_map.weight) if groups > 1 else cell.input_map.weight.unsqueeze(0), \
        _stack(cell.input_map.bias) if groups > 1 else cell.input_map.bias.unsqueeze(0)
    w_h, b_h = _stack(cell.hidden_map.weight) if groups > 1 else cell.hidden_map.weight.unsqueeze(0), \
        _stack(cell.hidden_map.bias) if groups > 1 else cell.hidden_map.bias.unsqueeze(0)
    keep = (1.0 - starts).expand(steps, batch, n)
    if groups == 1:
        xs, hs, ks = [x.reshape(steps, batch * n, -1)], [h.reshape(batch * n, -1)], [keep.reshape(steps, -1)]
    else:
        xs = [x[:, :, i] for i in range(n)]
        hs = [h[:, i] for i in range(n)]
        ks = [keep[:, :, i] for i in range(n)]
    outs, lasts = [], []
    for g in range(groups):
        hg, pieces = hs[g], []
        params = [w_i[g], w_h[g], b_i[g], b_h[g]]
        for a, b in zip(cut[:-1], cut[1:]):
            hg = hg * ks[g][a].unsqueeze(-1)
            out, hg = torch.gru(xs[g][a:b], hg.unsqueeze(0), params, True, 1, 0.0, True, False, False)
            hg = hg[0]
            pieces.append(out)
        outs.append(torch.cat(pieces))
        lasts.append(hg)
    if groups == 1:
        return outs[0].view(steps, batch, n, -1), lasts[0].view(batch, n, -1)
    return torch.stack(outs, 2), torch.stack(lasts, 1)


def _jit_loop():
    @torch.jit.script
    def scan(gates_x: Tensor, h: Tensor, w: Tensor, b: Tensor, keep: Tensor) -> tuple[Tensor, Tensor]:
        outs: list[Tensor] = []
        hidden = h.shape[-1]
        for t in range(gates_x.shape[0]):
            h = h * keep[t]
            g = torch.nn.functional.linear(h, w, b)
            xr, xz, xn = gates_x[t].split(hidden, -1)
            gr, gz, gn = g.split(hidden, -1)
            r, z = torch.sigmoid(xr + gr), torch.sigmoid(xz + gz)
            nn_ = torch.tanh(xn + r * gn)
            h = nn_ + z * (h - nn_)
            outs.append(h)
        return torch.stack(outs), h

    def run(cell: GroupedGRUCell, x: Tensor, h: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        steps, batch, n, _ = x.shape
        gx = cell.input_map.forward(x).reshape(steps, batch * n, -1)
        keep = (1.0 - starts).expand(steps, batch, n).reshape(steps, batch * n, 1)
        out, last = scan(gx, h.reshape(batch * n, -1), cell.hidden_map.weight, cell.hidden_map.bias, keep)
        return out.view(steps, batch, n, -1), last.view(batch, n, -1)

    return run


def use_kernel(on: bool) -> None:
    """The fused sequence through the C++ kernel (``on``) or its Python loop."""
    gru_kernel._loaded.clear()
    if not on:
        gru_kernel._loaded["ops"] = None
    elif gru_kernel.ops() is None:
        raise SystemExit(f"bench_gru: the C++ GRU kernel is unavailable ({gru_kernel.unavailable_reason()})")


def _cell(kit: bool, kernel: bool = False) -> Callable:
    def run(cell: GroupedGRUCell, x: Tensor, h: Tensor, starts: Tensor) -> tuple[Tensor, Tensor]:
        set_speed_kit(kit)
        use_kernel(kernel)
        try:
            return cell(x, h, starts)
        finally:
            set_speed_kit(True)

    return run


CLOCK = time.perf_counter


def time_once(run: Callable, cell: GroupedGRUCell, x: Tensor, h: Tensor, starts: Tensor, cot: Tensor) -> float:
    for p in [x, h, *cell.parameters()]:
        p.grad = None
    start = CLOCK()
    out, last = run(cell, x, h, starts)
    ((out * cot).sum() + last.sum()).backward()
    return CLOCK() - start


def time_updates(repeats: int) -> list[dict]:
    """Median seconds per MAPPO update at JaxMARL's MPE settings: cell loop, fused Python loop, kernel."""
    import copy
    import tempfile

    import marlopt.models.layers as layers
    from marlopt.algos.base import OnPolicyRule
    from marlopt.cli import compose
    from marlopt.config import to_objects
    from marlopt.runners.on_policy import OnPolicyRunner

    rows = []
    for sharing in ("shared", "separate"):
        cfg = to_objects(compose([*UPDATE_OVERRIDES, f"model.sharing={sharing}"]))
        runner = OnPolicyRunner(cfg, Path(tempfile.mkdtemp()))
        runner.collect()
        state = copy.deepcopy(runner.rule.state_dict())
        variants = {"loop": (False, False, 1, False), "fused": (True, False, 1, False),  # (fused, kernel,
                    "kernel": (True, True, 1, False), "kernel_2t": (True, True, 2, False),  # intra-op threads,
                    "beside": (True, True, 2, True)}  # critic step beside the actor's)
        beside_default = OnPolicyRule.critic_beside_actor
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(repeats):
            for name, (fused, kernel, threads, beside) in variants.items():
                layers.speed_kit_enabled = (lambda: True) if fused else (lambda: False)  # the GRU's switch only
                use_kernel(kernel)
                OnPolicyRule.critic_beside_actor = beside_default if beside else property(lambda self: False)
                torch.set_num_threads(threads)
                runner.rule.load_state_dict(state)
                torch.manual_seed(0)
                start = CLOCK()
                runner.rule.update(copy.copy(runner.batch))
                times[name].append(CLOCK() - start)
        layers.speed_kit_enabled = lambda: True
        use_kernel(True)
        OnPolicyRule.critic_beside_actor = beside_default
        torch.set_num_threads(1)
        runner.close()
        med = {name: statistics.median(v) for name, v in times.items()}
        rows.append({"sharing": sharing, **{f"{name}_s": t for name, t in med.items()}})
        print(f"MAPPO update, MPE JaxMARL settings, {sharing:8s}: loop {med['loop']:.2f} s, "
              f"fused {med['fused']:.2f} s, kernel {med['kernel']:.2f} s ({med['loop'] / med['kernel']:.2f}x the loop); "
              f"2 threads: kernel {med['kernel_2t']:.2f} s, critic beside {med['beside']:.2f} s")
    return rows


def profile_update(sharing: str = "shared", top: int = 15) -> dict:
    """torch.profiler over one MAPPO update at JaxMARL's MPE settings (kernel on): self CPU time per op,
    and the shares of the GRU kernel, of the other matmuls and of everything else."""
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    from marlopt.cli import compose
    from marlopt.config import to_objects
    from marlopt.runners.on_policy import OnPolicyRunner

    use_kernel(True)
    cfg = to_objects(compose([*UPDATE_OVERRIDES, f"model.sharing={sharing}"]))
    runner = OnPolicyRunner(cfg, Path(tempfile.mkdtemp()))
    runner.collect()
    runner.rule.update(runner.batch)  # warm-up
    runner.collect()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        runner.rule.update(runner.batch)
        wall = time.perf_counter() - start
    runner.close()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    groups = {"GRU kernel (marlopt_gru::forward/backward)": ("marlopt_gru::",),
              "other matmuls (addmm, mm, bmm, baddbmm)": ("aten::addmm", "aten::mm", "aten::bmm", "aten::baddbmm"),
              "Adam steps": ("aten::_fused_adam_", "aten::_foreach"),
              "autograd engine": ("autograd::engine",)}
    shares = {name: sum(e.self_cpu_time_total for e in events if e.key.startswith(prefixes)) / total
              for name, prefixes in groups.items()}
    shares["everything else"] = 1.0 - sum(shares.values())
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    rows = [{"op": e.key, "calls": e.count, "self_ms": e.self_cpu_time_total / 1e3,
             "share": e.self_cpu_time_total / total} for e in ops]
    print(f"profile of one MAPPO update ({sharing}, wall {wall:.2f} s under the profiler, self CPU {total / 1e6:.2f} s)")
    for name, share in shares.items():
        print(f"  {name:45s} {share:6.1%}")
    for r in rows:
        print(f"  {r['op']:45s} {r['calls']:7d} calls {r['self_ms']:9.1f} ms {r['share']:6.1%}")
    return {"sharing": sharing, "wall_s": wall, "self_cpu_s": total / 1e6, "shares": shares, "top_ops": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall")
    parser.add_argument("--all", action="store_true", help="also time torch.gru over segments and the jit loop")
    parser.add_argument("--update", action="store_true", help="also time whole MAPPO updates (JaxMARL's MPE settings)")
    parser.add_argument("--profile", action="store_true", help="also profile one MAPPO update (kernel on)")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.perf_counter if args.clock == "wall" else time.process_time
    jit = _jit_loop() if args.all else None
    gen = torch.Generator().manual_seed(0)
    rows = []
    print(f"L={args.steps}, H={HIDDEN}, median of {args.repeats} ({args.clock} ms, forward+backward); "
          f"torch threads {torch.get_num_threads()}")
    print(f"{'shape':32s} {'loop':>8s} {'fused':>8s} {'kernel':>8s} {'torch.gru':>10s} {'jit':>8s}  kernel speed-up")
    for label, batch, n, width, groups, resets in SHAPES:
        torch.manual_seed(0)
        cell = GroupedGRUCell(groups, width, HIDDEN)
        x = torch.randn(args.steps, batch, n, width, requires_grad=True)
        h = torch.randn(batch, n, HIDDEN, requires_grad=True)
        starts = make_starts(resets, args.steps, batch, n, gen)
        cot = torch.randn(args.steps, batch, n, HIDDEN)
        candidates = {"loop": _cell(False), "fused": _cell(True), "kernel": _cell(True, kernel=True)}
        if args.all:
            candidates["torch.gru"] = _torch_gru_segments
            if groups == 1:
                candidates["jit"] = jit
        for run in candidates.values():  # warm-up (the jit's profiling runs included)
            for _ in range(3):
                time_once(run, cell, x, h, starts, cot)
        times: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.repeats):
            for name, run in candidates.items():
                times[name].append(time_once(run, cell, x, h, starts, cot))
        ms = {name: 1e3 * statistics.median(v) for name, v in times.items()}
        rows.append({"shape": label, "steps": args.steps, "batch": batch, "agents": n, "in": width,
                     "groups": groups, "resets": resets, "ms": ms})
        print(f"{label:32s} {ms['loop']:8.1f} {ms['fused']:8.1f} {ms['kernel']:8.1f} "
              f"{ms.get('torch.gru', float('nan')):10.1f} {ms.get('jit', float('nan')):8.1f}  "
              f"{ms['loop'] / ms['kernel']:.2f}x")
    updates = time_updates(args.repeats) if args.update else []
    profiled = profile_update() if args.profile else None
    if args.out is not None:
        args.out.write_text(json.dumps({"sequences": rows, "updates": updates, "profile": profiled}, indent=1))


if __name__ == "__main__":
    main()
