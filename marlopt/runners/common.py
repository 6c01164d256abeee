"""What every runner shares: the device, the vector env, signals and greedy evaluation."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from marlopt.checkpoint import LATEST, checkpoint_dir, encode_numpy
from marlopt.config import TrainConfig
from marlopt.envs import MultiAgentEnv, ProcessVectorEnv, VectorEnv, env_fn
from marlopt.envs.common import usable_cpus
from marlopt.envs.registry import make_vector_env
from marlopt.evaluation import evaluate_policy
from marlopt.seeding import EVAL_OFFSET, env_seeds, rng_state


def resolve_device(name: str) -> torch.device:
    """``auto``: CUDA where available. ``cuda``/``cuda:N`` without that GPU raises ConfigError (the
    CLI checks this before anything is written: marlopt/preflight.py)."""
    from marlopt.preflight import check_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    check_device(name)
    return torch.device(name)


def vector_mode(cfg: TrainConfig) -> tuple[str, int]:
    """``(mode, n_workers)``. ``auto``: subprocess workers when there are several envs and more
    than one core. ``hybrid`` needs two envs and two cores, else it runs in-process."""
    cores = usable_cpus()
    mode = cfg.env.vector
    if mode == "hybrid":
        if cfg.n_envs < 2 or (cores < 2 and not cfg.env.n_workers):
            return "inproc", 0
        return mode, min(cfg.n_envs - 1, cfg.env.n_workers or cores - 1)
    workers = cfg.env.n_workers or min(cfg.n_envs, cores)
    if mode == "auto":
        mode = "subproc" if (cfg.n_envs > 1 and workers > 1) else "inproc"
    return mode, workers


def fresh_tensor(x: np.ndarray) -> Tensor:
    """A tensor of an env output: shares the memory of a fresh writable array (vector envs return
    new arrays every step), copies a read-only one (e.g. a JAX array's view)."""
    return torch.from_numpy(x) if x.flags.writeable else torch.tensor(x)


class StopFlag:
    """SIGINT/SIGTERM set a flag; the runner saves a checkpoint at the end of the iteration. In a
    job that submitit started, its preemption/timeout signal (``SIGUSR2``) too: then
    ``marlopt.sweep.hand_over`` gives it to submitit (requeue) once the checkpoint is written."""

    def __init__(self) -> None:
        from marlopt.sweep import preemption_signals

        self.requested = False
        self.signal_name = ""
        self._signals = (signal.SIGINT, signal.SIGTERM, *preemption_signals())
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "StopFlag":
        for sig in self._signals:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        if not self.requested:  # the first signal names the stop (a SIGTERM after SIGUSR2 keeps the requeue)
            self.requested, self.signal_name = True, signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def make_envs(cfg: TrainConfig) -> tuple[list[Callable[[], MultiAgentEnv]], VectorEnv]:
    """The env constructors (one per env, evaluation reuses the first) and the vector env of a run."""
    options = cfg.env.maker_options()
    env_fns = [env_fn(cfg.env.name, cfg.env.map_name, options) for _ in range(cfg.n_envs)]
    mode, workers = vector_mode(cfg)
    if mode == "batched":
        return env_fns, make_vector_env(cfg.env.name, cfg.env.map_name, options, cfg.n_envs)
    return env_fns, ProcessVectorEnv(env_fns, mode=mode, n_workers=workers or None, step_timeout=cfg.env.step_timeout)


def evaluate_rule(cfg: TrainConfig, env_fns: list[Callable[[], MultiAgentEnv]], rule: Any,
                  episodes: int | None = None) -> dict[str, float]:
    """Greedy episodes of the rule's deployed policy (and of its extra policies, prefixed), on
    envs seeded apart from training (``EVAL_OFFSET``)."""
    episodes = episodes or cfg.eval_episodes
    n = min(episodes, cfg.eval_envs or 16)
    seeds = env_seeds(cfg.seed, n, offset=EVAL_OFFSET)
    out = evaluate_policy(rule.eval_policy(), env_fns[:1] * n, episodes, seeds)
    for prefix, policy in rule.extra_eval_policies().items():
        out.update({f"{prefix}{k}": v for k, v in evaluate_policy(policy, env_fns[:1] * n, episodes, seeds).items()})
    return out


class Schedule:
    """When a runner evaluates and writes checkpoints, by env frames; its state goes into every
    checkpoint (``counters()``), so a resumed run keeps the same cadence."""

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.next_save = cfg.save_interval
        self.next_latest = cfg.latest_interval
        self.next_eval = cfg.eval_interval if cfg.eval_interval > 0 else float("inf")

    def eval_due(self, frames: int, total_frames: int) -> bool:
        """A greedy evaluation is due (and is then scheduled for the next interval)."""
        if frames >= self.next_eval and frames < total_frames:
            self.next_eval = (frames // self.cfg.eval_interval + 1) * self.cfg.eval_interval
            return True
        return False

    def after_iteration(self, runner: Any, stop: StopFlag, calls: int) -> str | None:
        """Write the checkpoints that are due; the reason to stop (a signal, ``max_iterations``
        calls in this process) after saving ``latest.pt``, else ``None``."""
        frames, cfg = runner.frames, self.cfg
        if frames >= self.next_save:
            runner.save(checkpoint_dir(runner.run_dir) / f"step_{frames}.pt")
            self.next_save = (frames // cfg.save_interval + 1) * cfg.save_interval
        if frames >= self.next_latest:
            runner.save_latest()
            self.next_latest = (frames // cfg.latest_interval + 1) * cfg.latest_interval
        if stop.requested:
            runner.save_latest()
            return f"stopped by {stop.signal_name}"
        if cfg.max_iterations is not None and calls >= cfg.max_iterations:
            runner.save_latest()
            return "max_iterations reached"
        return None

    def counters(self) -> dict[str, float]:
        return {"next_save": self.next_save, "next_latest": self.next_latest,
                "next_eval": self.next_eval if np.isfinite(self.next_eval) else -1.0}

    def load(self, counters: dict[str, float]) -> None:
        self.next_save, self.next_latest = counters["next_save"], counters["next_latest"]
        self.next_eval = float("inf") if counters["next_eval"] < 0 else counters["next_eval"]


def finish(runner: Any, logger: Any) -> str:
    """The end of training: the final greedy evaluation, logged at the last frame, and ``latest.pt``
    marked finished (resuming it then does nothing unless ``total_steps`` grew)."""
    runner.final_eval = runner.evaluate()
    logger.log(runner.frames, {f"eval/{k}": v for k, v in runner.final_eval.items()})
    runner.finished = True
    runner.save_latest()
    return "finished"


class RunnerCommon:
    """The members both runners share; a runner sets ``cfg``, ``run_dir``, ``env_fns``, ``envs``,
    ``rule`` and ``save(path)``."""

    logger: Any = None  # the RunLogger while training
    finished = False  # the final evaluation is done and logged
    final_eval: dict[str, float] | None = None

    def checkpoint_payload(self, iteration: int) -> dict[str, Any]:
        """What every runner's checkpoint holds: the rule, RNG states, the envs (mid-episode), the
        carried tensors, the counters and the logs' position (``metrics.jsonl``'s row count and the
        run's wall time, so a resume cuts the logs back to this moment)."""
        return {
            "rule": self.rule.state_dict(),  # type: ignore[attr-defined]
            "rng": rng_state(),
            "envs": encode_numpy(self.envs.get_state()),  # type: ignore[attr-defined]
            "carry": {k: v.clone() for k, v in self.carry.items() if v is not None},  # type: ignore[attr-defined]
            "counters": {"frames": self.frames, "iteration": iteration,  # type: ignore[attr-defined]
                         "episodes": self.episodes, "finished": self.finished,  # type: ignore[attr-defined]
                         **self.schedule.counters()},  # type: ignore[attr-defined]
            "log": {} if self.logger is None else self.logger.state(),
        }

    def evaluate(self, episodes: int | None = None) -> dict[str, float]:
        """Greedy episodes of the deployed policy (and of the rule's extra policies, prefixed)."""
        return evaluate_rule(self.cfg, self.env_fns, self.rule, episodes)  # type: ignore[attr-defined]

    def message(self, text: str) -> None:
        if self.logger is not None:
            self.logger.message(text)

    def save_latest(self) -> None:
        self.save(checkpoint_dir(self.run_dir) / LATEST)  # type: ignore[attr-defined]

    def close(self) -> None:
        self.envs.close()  # type: ignore[attr-defined]
