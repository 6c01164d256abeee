"""The off-policy runner: ε-greedy episodes from ``E`` envs into episode replay, then gradient steps.

One round::

    step all E envs (ε-greedy on the agents' utilities, unavailable actions never drawn) until E
    episodes have finished; each finished episode goes into the replay buffer whole (with its
    final inputs); an episode a crashed env lost is dropped, never stored
    if the buffer holds batch_size episodes: updates_per_round × rule.update(sampled episodes)
    log, evaluate, checkpoint (the same cadence, files and resume as on-policy)

Envs run continuously (an env whose episode ends starts the next one at once) rather than in
lock-step batches, so no env idles while the longest episode finishes; one round still adds ``E``
episodes per ``updates_per_round`` gradient steps, PyMARL's update-to-data ratio for its episode
runner (``n_envs=1``) and PyMARL2's for its parallel runner (``n_envs=8``). Frames are env steps
summed over the envs, as on-policy. Acting runs on the CPU (a CPU copy of the agent network when
training on CUDA, refreshed after every round's updates).

Checkpoints hold the rule (networks, targets, optimiser, GPVD's count table), the envs, the
episodes in flight, the RNG states and, when it is at most ``algo.buffer_checkpoint_mb``, the
replay buffer: then a resumed run continues exactly. A larger buffer is not saved, and resume says
in one line that it restarts empty.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from marlopt.algos.registry import build_rule
from marlopt.algos.q_learning import QPolicy
from marlopt.checkpoint import decode_numpy, encode_numpy, save_checkpoint
from marlopt.config import TrainConfig
from marlopt.envs.common import usable_cpus
from marlopt.guard import NonFiniteGuard, check_parameters
from marlopt.logger import RunLogger
from marlopt.replay import EpisodeBuffer
from marlopt.runners.common import RunnerCommon, Schedule, StopFlag, finish, fresh_tensor, make_envs, resolve_device
from marlopt.seeding import env_seeds, seed_everything, set_rng_state

CPU = torch.device("cpu")
#: The policy's inputs, staged per step for each env's episode in flight (plus the final ones).
INPUTS = ("obs", "state", "avail")


class OffPolicyRunner(RunnerCommon):
    """Owns the envs, the replay buffer, logging and checkpoints; the rule owns the learning."""

    def __init__(self, cfg: TrainConfig, run_dir: Path, resume_payload: dict[str, Any] | None = None):
        self.cfg, self.run_dir, self.algo = cfg, run_dir, cfg.algo
        self.device = resolve_device(cfg.device)
        self.update_threads = cfg.torch_threads or usable_cpus()
        torch.set_num_threads(1)
        seed_everything(cfg.seed)
        self.env_fns, self.envs = make_envs(cfg)
        self.spec = spec = self.envs.spec
        if spec.continuous:
            raise ValueError(f"algo={cfg.algo.name} needs discrete actions; env {cfg.env.name} map "
                             f"{cfg.env.map_name} was built with continuous ones (set env.continuous=false)")
        self.rule = build_rule(spec, cfg.algo, cfg.model, self.device)
        self.guard = NonFiniteGuard(cfg.nonfinite_patience)  # its counts are not checkpointed
        self.buffer = EpisodeBuffer(spec, cfg.algo.buffer_size)
        e, t = cfg.n_envs, spec.episode_limit
        n, a = spec.n_agents, spec.n_actions
        self.staging = {
            "obs": np.zeros((e, t + 1, n, spec.obs_dim), np.float32),
            "state": np.zeros((e, t + 1, spec.state_rows, spec.state_dim), np.float32),
            "avail": np.zeros((e, t + 1, n, a), bool),
            "actions": np.zeros((e, t, n), np.int64), "reward": np.zeros((e, t), np.float32),
            "terminated": np.zeros((e, t), bool),
        }
        self.step_index = np.zeros(e, dtype=np.int64)  # the step each env's episode in flight is at
        self._refresh_acting_agent()
        self.total_frames = int(cfg.total_steps)
        self.frames = self.rounds = self.episodes = 0
        self.pending: dict[str, list[float]] = {}
        self.schedule = Schedule(cfg)
        if resume_payload is None:
            first = self.envs.reset(env_seeds(cfg.seed, e))
            self.carry = {"obs": torch.tensor(first.obs), "state": torch.tensor(first.state),
                          "avail": torch.tensor(first.avail), "policy": self.policy.initial_state(e)}
        else:
            self._load(resume_payload)

    def _refresh_acting_agent(self) -> None:
        if self.device.type == "cpu":
            agent = self.rule.agent
        else:
            if not hasattr(self, "_cpu_agent"):
                self._cpu_agent = copy.deepcopy(self.rule.agent).to(CPU)
            self._cpu_agent.load_state_dict(self.rule.agent.state_dict())
            agent = self._cpu_agent
        self.policy = QPolicy(agent, self.algo.epsilon_finish)

    # -- collection -----------------------------------------------------------------------------
    @torch.inference_mode()
    def collect_round(self) -> dict[str, float]:
        """Step the envs until ``E`` episodes have finished; store each finished one."""
        c, stage, index = self.carry, self.staging, self.step_index
        e = self.cfg.n_envs
        rows = np.arange(e)
        returns: list[float] = []
        lengths: list[float] = []
        wins: list[float] = []
        restarts_before = self.envs.restarts
        epsilon = self.rule.epsilon(self.frames)
        all_avail = bool(c["avail"].all())
        while len(returns) < e:
            epsilon = self.rule.epsilon(self.frames)
            for key in INPUTS:
                stage[key][rows, index] = c[key].numpy()
            # an all-true mask changes nothing: leave it out (cheaper draws)
            actions, c["policy"] = self.policy.step(c["obs"], None if all_avail else c["avail"], c["policy"], epsilon)
            actions_np = actions.numpy()
            step = self.envs.step(actions_np)
            stage["actions"][rows, index] = actions_np
            stage["reward"][rows, index] = step.reward
            stage["terminated"][rows, index] = step.terminated
            self.frames += e
            index += 1
            done = step.terminated | step.truncated | step.dropped  # a dropped episode is lost: never stored
            if done.any():
                for i in np.flatnonzero(step.terminated | step.truncated):
                    t = int(index[i])
                    stage["obs"][i, t], stage["state"][i, t], stage["avail"][i, t] = (
                        step.final_obs[i], step.final_state[i], step.final_avail[i])
                    episode = {k: v[i] for k, v in stage.items()}
                    self.buffer.insert(episode, t)
                    self.rule.observe(episode, t)
                    returns.append(float(step.episode_return[i]))
                    lengths.append(float(step.episode_length[i]))
                    if self.spec.has_won:
                        wins.append(float(step.won[i]))
                index[done] = 0
                if c["policy"] is not None:
                    fresh = self.policy.initial_state(e)
                    mask = torch.from_numpy(done)
                    c["policy"][mask] = fresh[mask]
            if index.max() >= self.spec.episode_limit:
                raise RuntimeError(f"env {self.cfg.env.name} map {self.cfg.env.map_name} ran an episode past its "
                                   f"episode_limit={self.spec.episode_limit} without a time limit; the replay "
                                   "buffer stores at most episode_limit steps per episode")
            c["obs"], c["state"], c["avail"] = (fresh_tensor(x) for x in (step.obs, step.state, step.avail))
            all_avail = bool(step.avail.all())
        self.episodes += len(returns)
        stats = {"env/restarts": float(self.envs.restarts), "train/epsilon": epsilon,
                 "train/return_mean": float(np.mean(returns)), "train/episode_length": float(np.mean(lengths)),
                 "buffer/episodes": float(self.buffer.size)}
        if wins:
            stats["train/win_rate"] = float(np.mean(wins))
        if self.envs.restarts != restarts_before:
            self.message(f"env restarts: {self.envs.restarts} in total (episodes in flight were dropped)")
        return stats

    def learn(self) -> dict[str, float]:
        """``updates_per_round`` gradient steps once the buffer holds a batch (else none)."""
        if not self.buffer.can_sample(self.algo.batch_size):
            return {}
        metrics: dict[str, float] = {}
        torch.set_num_threads(self.update_threads)
        try:
            for _ in range(self.algo.updates_per_round):
                with self.guard.watch():  # marlopt.guard: non-finite steps skipped, counted; too many in a row raise
                    metrics = self.rule.update(self.buffer.sample(self.algo.batch_size), self.buffer.inserted)
                check_parameters(self.rule.modules(), f"after update {self.guard.updates}")  # before any save
        finally:
            torch.set_num_threads(1)
        metrics.update(self.guard.take_metrics())  # steps skipped in all of this round's updates
        self._refresh_acting_agent()
        return metrics

    # -- training loop ----------------------------------------------------------------------------
    def train(self, logger: RunLogger) -> str:
        """Run until ``total_steps`` frames (or a signal / ``max_iterations`` rounds)."""
        self.logger = logger
        calls = 0
        pending = self.pending  # metrics of the rounds since the last log event (checkpointed)
        with StopFlag() as stop:
            while self.frames < self.total_frames:
                t0, frames0 = time.perf_counter(), self.frames
                stats = self.collect_round()
                t1 = time.perf_counter()
                update_metrics = self.learn()
                t2 = time.perf_counter()
                self.rounds += 1
                calls += 1
                metrics = {**stats, **update_metrics, "time/fps": (self.frames - frames0) / (t2 - t0),
                           "time/rollout_s": t1 - t0, "time/update_s": t2 - t1}
                for key, value in metrics.items():  # averaged over the rounds between log events
                    pending.setdefault(key, []).append(value)
                evaluated = ({f"eval/{k}": v for k, v in self.evaluate().items()}
                             if self.schedule.eval_due(self.frames, self.total_frames) else {})
                if self.rounds % self.cfg.log_interval == 0 or evaluated:
                    logger.log(self.frames, {**{k: float(np.mean(v)) for k, v in pending.items()}, **evaluated})
                    pending.clear()
                reason = self.schedule.after_iteration(self, stop, calls)
                if reason is not None:
                    return reason
        return finish(self, logger)

    # -- checkpoints ----------------------------------------------------------------------------
    def buffer_fits(self) -> bool:
        return self.buffer.nbytes() <= self.algo.buffer_checkpoint_mb * 2**20

    def save(self, path: Path) -> None:
        save_checkpoint(path, {
            **self.checkpoint_payload(self.rounds),
            "staging": encode_numpy({**self.staging, "step_index": self.step_index}),
            "buffer": self.buffer.state_dict() if self.buffer_fits() else None,
            "pending": {k: list(v) for k, v in self.pending.items()},
        })

    def _load(self, payload: dict[str, Any]) -> None:
        self.rule.load_state_dict(payload["rule"])
        self._refresh_acting_agent()
        restored = self.envs.set_state(decode_numpy(payload["envs"]))
        self.carry = {"policy": None, **{k: v.clone() for k, v in payload["carry"].items()}}
        staging = decode_numpy(payload["staging"])
        self.step_index = staging.pop("step_index")
        self.staging = staging
        if payload["buffer"] is not None:
            self.buffer.load_state_dict(payload["buffer"])
        else:
            print(f"marlopt: the replay buffer ({self.buffer.nbytes() / 2**20:.0f} MB > algo.buffer_checkpoint_mb="
                  f"{self.algo.buffer_checkpoint_mb:g}) was not saved with the checkpoint: it restarts empty")
        # envs that cannot be pickled (StarCraft II) were reset instead: their episodes in flight are lost
        fresh = self.policy.initial_state(self.cfg.n_envs)
        for e in np.flatnonzero(self.envs.last_restore_reset):
            for key in INPUTS:
                self.carry[key][e] = torch.tensor(getattr(restored, key)[e])
            if fresh is not None:
                self.carry["policy"][e] = fresh[e]
            self.step_index[e] = 0
        self.pending = {k: list(v) for k, v in payload["pending"].items()}
        n = payload["counters"]
        self.frames, self.rounds, self.episodes = n["frames"], n["iteration"], n["episodes"]
        self.schedule.load(n)
        set_rng_state(payload["rng"])
