"""The on-policy runner: collect ``T`` steps from ``E`` envs, hand the batch to the update rule.

One iteration::

    for t in 0..T-1:  act (the rule's rollout actor) → env step → store; zero hidden states of
                      finished episodes
    rule.estimate_values(batch, …)   values, critic states and time-limit bootstraps, one pass
    rule.update(batch)               GAE, ValueNorm, the algorithm's objective → log, evaluate,
                                     checkpoint

The runner knows the acting policy, the envs and the buffer; everything about values and
learning belongs to the rule. Rollout inference runs on the CPU even when training on CUDA
(per-step inference for a few envs is launch-bound on a GPU; docs/benchmarks.md): with
``device=cuda`` the runner keeps a CPU copy of the rollout actor, refreshed after every update,
and moves the finished batch to the GPU.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlopt.algos.registry import build_rule
from marlopt.buffers import RolloutBatch, RolloutBuffer, RolloutTail
from marlopt.checkpoint import decode_numpy, save_checkpoint
from marlopt.config import TrainConfig
from marlopt.envs import VectorEnv
from marlopt.envs.common import usable_cpus
from marlopt.guard import NonFiniteGuard, check_parameters
from marlopt.logger import RunLogger
from marlopt.runners.common import RunnerCommon, Schedule, StopFlag, finish, fresh_tensor, make_envs, resolve_device
from marlopt.seeding import env_seeds, seed_everything, set_rng_state

CPU = torch.device("cpu")


class OnPolicyRunner(RunnerCommon):
    """Owns the envs, the buffer, logging and checkpoints; the update rule owns the learning."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume_payload: dict[str, Any] | None = None):
        self.cfg, self.run_dir = cfg, run_dir
        self.device = resolve_device(cfg.device)
        # per-step inference of small nets runs fastest on one thread; the update's large matmuls
        # scale with cores (env workers sit idle during the update)
        self.update_threads = cfg.torch_threads or usable_cpus()
        torch.set_num_threads(1)
        seed_everything(cfg.seed)
        self.envs: VectorEnv
        self.env_fns, self.envs = make_envs(cfg)
        self.spec = spec = self.envs.spec
        self.rule = build_rule(spec, cfg.algo, cfg.model, self.device)
        self.guard = NonFiniteGuard(cfg.nonfinite_patience)  # its counts are not checkpointed
        self.on_cpu = self.device.type == "cpu"
        self._refresh_rollout_actor()
        t, e = cfg.rollout_length, cfg.n_envs
        self.buffer = RolloutBuffer(spec, e, t, self.actor.hidden_size, CPU,
                                    hidden_rows=getattr(self.actor, "hidden_rows", spec.n_agents))
        self.batch: RolloutBatch = self.buffer.batch  # the last rollout, on the training device
        self.frames_per_iteration = t * e
        self.total_frames = int(cfg.total_steps)
        self.frames = self.iteration = self.episodes = 0
        self.schedule = Schedule(cfg)
        if resume_payload is None:
            first = self.envs.reset(env_seeds(cfg.seed, e))
            self.carry = {
                "obs": torch.tensor(first.obs), "state": torch.tensor(first.state),
                "avail": torch.tensor(first.avail), "active": torch.tensor(first.active),
                "starts": torch.ones(e, 1),
                # the rule's value-estimation memory (a recurrent critic's state), kept between rollouts
                "h_actor": self.actor.initial_hidden(e), "h_critic": self.rule.initial_value_state(e),
                "episode_start": torch.zeros(e, dtype=torch.long),
            }
        else:
            self._load(resume_payload)

    # -- the network that acts in rollouts (a CPU copy when training on CUDA) ------------------------
    def _refresh_rollout_actor(self) -> None:
        if self.on_cpu:
            self.actor = self.rule.rollout_actor
            return
        if not hasattr(self, "_cpu_actor"):
            self._cpu_actor = copy.deepcopy(self.rule.rollout_actor).to(CPU)
        self._cpu_actor.load_state_dict(self.rule.rollout_actor.state_dict())
        self.actor = self._cpu_actor

    # -- collection -----------------------------------------------------------------------------
    def collect(self) -> dict[str, float]:
        """Fill the batch with ``T`` steps of every env and let the rule estimate its values;
        returns the episode statistics. ``self.batch`` is the rollout on the training device."""
        stats, tail = self._step_envs()
        self.batch = self.buffer.batch if self.on_cpu else self.buffer.batch.to(self.device)
        self.carry["h_critic"] = self.rule.estimate_values(self.batch, self.carry["h_critic"], tail)
        return stats

    @torch.inference_mode()
    def _step_envs(self) -> tuple[dict[str, float], RolloutTail]:
        """The acting loop: only the actor runs per step (the critic does not influence acting;
        its values are estimated afterwards, for the whole rollout at once)."""
        c, buf = self.carry, self.buffer
        returns: list[float] = []
        lengths: list[float] = []
        wins: list[float] = []
        truncations: list[tuple[int, np.ndarray, np.ndarray]] = []
        restarts_before = self.envs.restarts
        c["episode_start"].zero_()
        all_avail = bool(c["avail"].all())
        for t in range(buf.length):
            buf.insert(t, obs=c["obs"], state=c["state"], avail=c["avail"], active=c["active"], starts=c["starts"])
            if self.actor.hidden_size:
                buf.insert(t, h_actor=c["h_actor"])
            # an all-true mask changes nothing (same logits, same draws): leave it out
            actions, logp, h_actor = self.actor.act(c["obs"], None if all_avail else c["avail"], c["h_actor"],
                                                    env_state=c["state"])
            actions_np = actions.numpy()
            step = self.envs.step(actions_np)
            buf.insert(t, actions=actions_np, logp=logp, rewards=step.reward[:, None],
                       terminated=step.terminated[:, None], truncated=step.truncated[:, None])
            truncated = np.flatnonzero(step.truncated)
            if truncated.size:  # proper time limits: the rule bootstraps from V(final state)
                truncations.append((t, truncated, step.final_state[truncated]))
            for e in np.flatnonzero(step.dropped):  # crashed env: lose its episode, fabricate nothing
                buf.drop_episode(int(e), int(c["episode_start"][e]), t)
            ended = step.terminated | step.truncated
            done = ended | step.dropped
            if done.any():
                for e in np.flatnonzero(ended):
                    returns.append(float(step.episode_return[e]))
                    lengths.append(float(step.episode_length[e]))
                    if self.spec.has_won:
                        wins.append(float(step.won[e]))
                c["episode_start"].numpy()[done] = t + 1
                if h_actor is not None:
                    h_actor = h_actor * torch.from_numpy(~done).float().view(-1, 1, 1)
            c["starts"] = torch.from_numpy(done.astype(np.float32)[:, None])
            if h_actor is not None:
                c["h_actor"] = h_actor
            c["obs"], c["state"] = fresh_tensor(step.obs), fresh_tensor(step.state)
            c["avail"], c["active"] = fresh_tensor(step.avail), fresh_tensor(step.active)
            all_avail = bool(step.avail.all())
        self.episodes += len(returns)
        stats: dict[str, float] = {"env/restarts": float(self.envs.restarts)}
        if self.envs.restarts != restarts_before:
            self.message(f"env restarts: {self.envs.restarts} in total (episodes in flight were dropped)")
        if returns:
            stats["train/return_mean"] = float(np.mean(returns))
            stats["train/episode_length"] = float(np.mean(lengths))
            if wins:
                stats["train/win_rate"] = float(np.mean(wins))
        return stats, RolloutTail(next_state=c["state"], next_starts=c["starts"], truncations=truncations)

    # -- training loop ----------------------------------------------------------------------------
    def train(self, logger: RunLogger) -> str:
        """Run until ``total_steps`` frames (or a signal / ``max_iterations``). Returns why it stopped."""
        self.logger = logger
        calls = 0
        with StopFlag() as stop:
            while self.frames < self.total_frames:
                t0 = time.perf_counter()
                stats = self.collect()
                t1 = time.perf_counter()
                torch.set_num_threads(self.update_threads)
                self.rule.schedule_learning_rates(self.frames, self.total_frames)
                try:
                    with self.guard.watch():  # marlopt.guard: non-finite steps skipped, counted; too many in a row raise
                        update_metrics = self.rule.update(self.batch)
                finally:
                    torch.set_num_threads(1)
                update_metrics.update(self.guard.take_metrics())
                check_parameters(self.rule.modules(), f"after update {self.guard.updates}")  # before any save
                self._refresh_rollout_actor()
                t2 = time.perf_counter()
                self.frames += self.frames_per_iteration
                self.iteration += 1
                calls += 1
                metrics = {**stats, **update_metrics, "time/fps": self.frames_per_iteration / (t2 - t0),
                           "time/rollout_s": t1 - t0, "time/update_s": t2 - t1}
                if self.schedule.eval_due(self.frames, self.total_frames):
                    metrics.update({f"eval/{k}": v for k, v in self.evaluate().items()})
                if self.iteration % self.cfg.log_interval == 0:
                    logger.log(self.frames, metrics)
                reason = self.schedule.after_iteration(self, stop, calls)
                if reason is not None:
                    return reason
        return finish(self, logger)

    # -- checkpoints ----------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        save_checkpoint(path, self.checkpoint_payload(self.iteration))

    def _load(self, payload: dict[str, Any]) -> None:
        self.rule.load_state_dict(payload["rule"])
        self._refresh_rollout_actor()
        restored = self.envs.set_state(decode_numpy(payload["envs"]))
        self.carry = {k: v.clone() for k, v in payload["carry"].items()}
        # envs that cannot be pickled (StarCraft II) were reset instead: start a new episode there
        for e in np.flatnonzero(self.envs.last_restore_reset):
            for key, value in restored._asdict().items():
                self.carry[key][e] = torch.tensor(value[e])
            self.carry["h_actor"][e] = 0.0
            self.carry["h_critic"][e] = 0.0
            self.carry["starts"][e] = 1.0
        n = payload["counters"]
        self.frames, self.iteration, self.episodes = n["frames"], n["iteration"], n["episodes"]
        self.schedule.load(n)
        set_rng_state(payload["rng"])
