"""Typed configuration schemas, registered with Hydra's ConfigStore.

Every YAML under ``configs/`` composes onto one of these dataclasses, so a mistyped key fails at
load time, and ``validate`` (called before anything is built) turns the composed config into
dataclass objects whose ``__post_init__`` checks values and names the offending key.

Layout of the composed config::

    seed, total_steps, n_envs, rollout_length, device, ...   # TrainConfig (this file)
    algo:  <the algorithm's schema, e.g. PPOConfig>           # configs/algo/<name>.yaml
    env:   EnvConfig (+ the map's fields)                     # configs/env/*.yaml, configs/map/*.yaml
    model: ModelConfig                                        # configs/config.yaml
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


#: The largest run seed: env seeds are ``seed * 100_003 + offset + i`` (marlopt/seeding.py) and
#: must stay below 2**32 (numpy's and JAX's seed range) with room for a million offsets.
MAX_SEED = (2**32 - 1 - 1_000_000) // 100_003


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the fix."""


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _positive(value: float, key: str) -> None:
    _require(value > 0, key, f"must be > 0 (got {value})")


def _nonnegative(value: float, key: str) -> None:
    _require(value >= 0, key, f"must be >= 0 (got {value})")


def _one_of(value: str, choices: tuple[str, ...], key: str) -> None:
    _require(value in choices, key, f"must be one of {', '.join(choices)} (got {value!r})")


@dataclass
class ModelConfig:
    """Actor and critic networks (MAPPO defaults: GRU 64, LayerNorm inputs, orthogonal init)."""

    hidden_sizes: list[int] = field(default_factory=lambda: [64])  # MLP layers before the GRU
    recurrent: bool = True  # GRU after the MLP; False = pure MLP policy
    rnn_hidden: int = 64  # GRU hidden size
    data_chunk_length: int = 10  # BPTT chunk length (recurrent only)
    rnn_layer_norm: bool = True  # LayerNorm on the GRU's output (the MAPPO reference's RNNLayer); recurrent only
    # MLP layers after the GRU, before the heads (recurrent only; JaxMARL's MAPPO: [128]); [] = the
    # heads read the GRU's (normalised) output
    post_rnn_sizes: list[int] = field(default_factory=list)
    sharing: str = "shared"  # shared | separate | hybrid (shared backbone, per-agent heads)
    agent_id: bool = True  # append the one-hot agent id to the actor input (shared/hybrid)
    critic_agent_id: bool = False  # append it to the critic's input too
    activation: str = "relu"  # relu | tanh
    feature_norm: bool = True  # LayerNorm on inputs
    layer_norm: bool = True  # LayerNorm after each hidden layer
    head_gain: float = 0.01  # orthogonal-init gain of the policy head
    log_std_init: float = -0.5  # continuous actions: initial log std of the Gaussian
    # continuous actions, how the learnable parameter p gives the Gaussian's std: log (std = exp(p),
    # p starts at log_std_init) | harl (HARL's DiagGaussian: std = sigmoid(p / std_x_coef) * std_y_coef,
    # p starts at std_x_coef; log_std_init unused)
    std_param: str = "log"
    std_x_coef: float = 1.0  # std_param=harl: HARL's std_x_coef (its configs: 1)
    std_y_coef: float = 0.5  # std_param=harl: HARL's std_y_coef, the largest std (its configs: 0.5)
    # the critic's own MLP layers; null = hidden_sizes (GRASP App. H Table 4: [64, 64, 64])
    critic_hidden_sizes: Optional[list[int]] = None
    # false: a feed-forward critic beside a recurrent actor (GRASP App. H Table 4); null = recurrent
    critic_recurrent: Optional[bool] = None

    def critic_config(self) -> "ModelConfig":
        """This config as the critic's trunk reads it: its own layers and recurrence where set."""
        import dataclasses

        return dataclasses.replace(
            self, hidden_sizes=self.hidden_sizes if self.critic_hidden_sizes is None else list(self.critic_hidden_sizes),
            recurrent=self.recurrent if self.critic_recurrent is None else self.critic_recurrent,
            critic_hidden_sizes=None, critic_recurrent=None)

    def __post_init__(self) -> None:
        if self.critic_hidden_sizes is not None:
            _require(len(self.critic_hidden_sizes) > 0, "model.critic_hidden_sizes", "needs at least one layer")
            for size in self.critic_hidden_sizes:
                _positive(size, "model.critic_hidden_sizes")
        _require(not (self.critic_recurrent and not self.recurrent), "model.critic_recurrent",
                 "a recurrent critic needs model.recurrent=true (the rollout is chunked for BPTT only then)")
        _require(len(self.hidden_sizes) > 0, "model.hidden_sizes", "needs at least one layer")
        for size in self.hidden_sizes:
            _positive(size, "model.hidden_sizes")
        _positive(self.rnn_hidden, "model.rnn_hidden")
        for size in self.post_rnn_sizes:
            _positive(size, "model.post_rnn_sizes")
        _positive(self.data_chunk_length, "model.data_chunk_length")
        _one_of(self.sharing, ("shared", "separate", "hybrid"), "model.sharing")
        _one_of(self.activation, ("relu", "tanh"), "model.activation")
        _one_of(self.std_param, ("log", "harl"), "model.std_param")
        _positive(self.std_x_coef, "model.std_x_coef")
        _positive(self.std_y_coef, "model.std_y_coef")


@dataclass
class AlgoConfig:
    """What every algorithm YAML names (``configs/algo/<name>.yaml``), whatever its family."""

    name: str = MISSING  # the algorithm's name: run directories and logs use it
    family: str = MISSING  # on_policy | off_policy: picks the runner (marlopt.algos.registry)
    rule: str = MISSING  # the update rule, a name registered in marlopt.algos.registry
    # Set only in an old algorithm name's YAML (e.g. configs/algo/mars_asym.yaml: mars_addsym): the
    # command line (marlopt.cli.apply_renames) swaps `algo=<old>` for the new name, with a one-line
    # notice, before composing; the composed config of either name is then the new name's.
    renamed_to: Optional[str] = None


@dataclass
class OnPolicyConfig(AlgoConfig):
    """Hyperparameters shared by every on-policy update rule (MAPPO defaults;
    docs/algorithms/on_policy_machinery.md)."""

    lr: float = 5e-4  # actor learning rate (Adam)
    critic_lr: float = 5e-4  # critic learning rate (Adam)
    adam_eps: float = 1e-5  # Adam's epsilon, actor and critic
    max_grad_norm: float = 10.0  # global gradient-norm clip of each optimiser step
    entropy_coef: float = 0.01  # weight of the policy-entropy bonus in the actor loss
    value_loss_coef: float = 1.0  # weight of the value loss in the critic step
    ppo_epochs: int = 5  # passes over the batch per iteration
    num_minibatches: int = 1  # minibatches per pass (split over BPTT chunks / samples)
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE's lambda
    use_valuenorm: bool = True  # critic targets normalised by running statistics (ValueNorm)
    value_clip: Optional[float] = 0.2  # clip of the value loss around the rollout values; None disables it
    huber_delta: Optional[float] = 10.0  # Huber threshold of the value loss; None = squared error
    advantage_norm: bool = True  # normalise advantages over active samples
    # when ValueNorm's statistics are updated: batch (once per iteration on the whole batch's returns,
    # the targets normalised once) | minibatch (the MAPPO/HARL reference: in every critic step, with
    # that minibatch's returns, which are then normalised with the just-updated statistics)
    value_norm_update: str = "batch"
    # learning rates over the run: constant | linear (every Adam learning rate of the rule falls
    # linearly from its configured value to 0 at total_steps, set before each iteration's update from
    # the frames so far: lr * (1 - frames / total_steps); the MAPPO reference's use_linear_lr_decay,
    # JaxMARL's ANNEAL_LR; docs/algorithms/on_policy_machinery.md)
    lr_schedule: str = "constant"

    def __post_init__(self) -> None:
        _positive(self.lr, "algo.lr")
        _positive(self.critic_lr, "algo.critic_lr")
        _positive(self.adam_eps, "algo.adam_eps")
        _positive(self.max_grad_norm, "algo.max_grad_norm")
        _nonnegative(self.entropy_coef, "algo.entropy_coef")
        _nonnegative(self.value_loss_coef, "algo.value_loss_coef")
        _positive(self.ppo_epochs, "algo.ppo_epochs")
        _positive(self.num_minibatches, "algo.num_minibatches")
        _require(0 < self.gamma <= 1, "algo.gamma", f"must be in (0, 1] (got {self.gamma})")
        _require(0 <= self.gae_lambda <= 1, "algo.gae_lambda", f"must be in [0, 1] (got {self.gae_lambda})")
        if self.value_clip is not None:
            _positive(self.value_clip, "algo.value_clip")
        if self.huber_delta is not None:
            _positive(self.huber_delta, "algo.huber_delta")
        _one_of(self.value_norm_update, ("batch", "minibatch"), "algo.value_norm_update")
        _one_of(self.lr_schedule, ("constant", "linear"), "algo.lr_schedule")


@dataclass
class RatioConfig(OnPolicyConfig):
    """MAPPO, MASPO, MARS and their ablations: one simultaneous update over a ratio objective.

    ``objective`` is the loss itself, an importable function named the Hydra way and called as
    ``objective(logp, logp_old, adv, mask=...)``::

        objective:
          _target_: marlopt.objectives.mars_loss   # any importable function, yours included
          _partial_: true
          rho_plus: 1.2                            # its keyword arguments
    """

    objective: Any = MISSING  # {_target_: pkg.module.fn, _partial_: true, <kwargs>}: the ratio loss
    # [low, high] counted by ratio/frac_outside; null = the objective's own region
    # (fn.ratio_region(**kwargs), as marlopt's losses define), else [0.8, 1.2]
    ratio_region: Optional[list[float]] = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            isinstance(self.objective, dict) and isinstance(self.objective.get("_target_"), str),
            "algo.objective",
            "must name the loss as {_target_: pkg.module.fn, _partial_: true, <kwargs>} "
            f"(got {self.objective!r})",
        )
        _require(self.objective.get("_partial_") is True, "algo.objective._partial_",
                 "must be true (the rule calls objective(logp, logp_old, adv, mask=...))")
        if self.ratio_region is not None:
            _require(len(self.ratio_region) == 2 and 0 <= self.ratio_region[0] < 1 < self.ratio_region[1],
                     "algo.ratio_region", f"must be [low, high] with 0 <= low < 1 < high (got {self.ratio_region})")


@dataclass
class GraspConfig(RatioConfig):
    """GRASP: PPO epochs on ``J_clip + κ <θ, u*>`` with ``u*`` the min-norm consensus of the
    agents' local gradients, computed once per iteration at ``θ_old`` (docs/algorithms/grasp.md)."""

    space: str = "heads"  # heads (hybrid actor: per-agent heads) | shared (full parameter sharing)
    kappa: float = 1.0  # weight κ of the consensus term
    solver: str = "active_set"  # active_set (exact, on the Gram matrix) | cvxpy (reference QP)

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.space, ("heads", "shared"), "algo.space")
        _one_of(self.solver, ("active_set", "cvxpy"), "algo.solver")
        _nonnegative(self.kappa, "algo.kappa")


@dataclass
class SequentialConfig(OnPolicyConfig):
    """HAPPO / HATRPO / HAA2C: agents updated one after another in a random order (HARL).

    Defaults from HARL Tables 4 and 6 (MPE); per-map SMAC values in ``configs/tuned/``.
    """

    variant: str = "happo"  # happo | hatrpo | haa2c
    clip: float = 0.2  # HAPPO's clip
    a2c_epochs: int = 5  # HAA2C's gradient steps per iteration
    critic_epochs: int = 5  # critic passes over the batch, after all agents' updates
    kl_threshold: float = 0.005  # HATRPO's trust region δ on the mean KL
    accept_ratio: float = 0.5  # HATRPO: improvement / expected improvement must exceed this
    backtrack_coeff: float = 0.8  # HATRPO: the line search shrinks the step by this factor per try
    ls_steps: int = 10  # HATRPO: line-search tries before the step is rejected
    cg_iters: int = 10  # HATRPO: conjugate-gradient iterations for H^-1 g
    cg_damping: float = 0.1  # HATRPO: Fisher damping, H + damping * I
    # HATRPO: the KL that the Fisher matrix (its Hessian at θ_old) and the line-search check use:
    # true = mean KL(π_old || π_θ) (the paper's) | harl = HARL's code, the measure its tuned δ are
    # calibrated to: discrete Σ_a [exp(Δ_a) - 1 - Δ_a], Δ_a = log π_θ(a) - log π_old(a) over all
    # actions (≈ A× the true KL's curvature), the true KL for Gaussians (docs/algorithms/hatrpo.md)
    kl_measure: str = "true"  # HATRPO: true | harl (above)
    share_actor: bool = False  # parameter-shared actor (HARL allows it; outside HAPPO's theory)
    fixed_order: bool = False  # the paper's ablation: the same agent order every iteration

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.variant, ("happo", "hatrpo", "haa2c"), "algo.variant")
        self.kl_measure = str(self.kl_measure).lower()  # YAML / the command line read `true` as a bool
        _one_of(self.kl_measure, ("true", "harl"), "algo.kl_measure")
        for key in ("clip", "a2c_epochs", "critic_epochs", "kl_threshold", "backtrack_coeff", "ls_steps", "cg_iters"):
            _positive(getattr(self, key), f"algo.{key}")
        _require(self.backtrack_coeff < 1, "algo.backtrack_coeff", f"must be < 1 (got {self.backtrack_coeff})")
        _nonnegative(self.accept_ratio, "algo.accept_ratio")
        _nonnegative(self.cg_damping, "algo.cg_damping")


#: What MAGPO's guider can read (``algo.guider_input``).
GUIDER_INPUTS = ("joint_obs", "state")


@dataclass
class GuidedConfig(OnPolicyConfig):
    """MAGPO (and CTDS as its special case): a centralised autoregressive guider collects the data
    and is trained with the double clip and the masked KL; the decentralised learner, the policy
    that is deployed and evaluated, distils the guider plus ``rl_coef`` × a PPO term
    (docs/algorithms/magpo.md). ``lr`` is the learner's learning rate."""

    guider_input: str = "joint_obs"  # joint_obs (the paper: all observations, concatenated) | state
    clip: float = 0.2  # PPO's ε, in both losses
    delta: float = 1.5  # band (1/δ, δ) on μ/π outside which the KL term pulls the guider back; .inf = CTDS
    rl_coef: float = 1.0  # λ: weight of the learner's PPO term (0 = pure distillation, CTDS)
    guider_lr: Optional[float] = None  # the guider's Adam learning rate; null = lr
    learner_entropy_coef: float = 0.0  # entropy bonus of the learner loss (the guider's is entropy_coef)
    eval_guider: bool = True  # evaluations also run the guider greedily (eval/guider_return_mean)

    def __post_init__(self) -> None:
        super().__post_init__()
        _one_of(self.guider_input, GUIDER_INPUTS, "algo.guider_input")
        _positive(self.clip, "algo.clip")
        _require(self.delta > 1, "algo.delta", f"must be > 1, or .inf for CTDS (got {self.delta})")
        _nonnegative(self.rl_coef, "algo.rl_coef")
        if self.guider_lr is not None:
            _positive(self.guider_lr, "algo.guider_lr")
        _nonnegative(self.learner_entropy_coef, "algo.learner_entropy_coef")


#: How the per-agent utilities are mixed into ``Q_tot`` (``algo.mixer``).
MIXERS = ("vdn", "qmix")


@dataclass
class QLearningConfig(AlgoConfig):
    """QMIX, VDN, GPVD and GRASP-QMIX: value decomposition trained on a replay of whole episodes
    (docs/algorithms/qmix.md, gpvd.md, grasp_qmix.md). Defaults: PyMARL's QMIX recipe with Adam
    (``configs/algo/qmix.yaml``); ``qmix_pymarl2.yaml`` is PyMARL2's. Parallel envs are the
    top-level ``n_envs`` (PyMARL: 1, PyMARL2: 8); one training round = ``n_envs`` finished
    episodes, then ``updates_per_round`` gradient steps."""

    # -- value decomposition
    obs_last_action: bool = True  # the agent's input includes its previous action (one-hot), as PyMARL's
    mixer: str = "qmix"  # vdn (Q_tot = sum of the utilities) | qmix (monotonic hypernetwork on the state)
    mixing_embed_dim: int = 32  # QMIX: width of the mixing network
    # QMIX: standardise the state its hypernetworks read by running statistics of the sampled states
    # (an env whose state is not normalised, e.g. SMAX's raw positions, otherwise starts Q_tot at ~10x
    # the returns); false = PyMARL's mixer exactly (SMAC's state is normalised by the env)
    mixer_state_norm: bool = True
    hypernet_embed: int = 64  # QMIX: hidden width of the two-layer hypernetworks that output the weights
    # -- targets
    gamma: float = 0.99  # discount
    double_q: bool = True  # target action = argmax of the online utilities (PyMARL); false = plain max (PyMARL2/GPVD)
    td_lambda: float = 0.0  # TD(lambda) targets; 0 = one-step (PyMARL), 0.6 in PyMARL2
    target_update_interval: int = 200  # episodes between hard copies into the target networks (when target_tau is null)
    target_tau: Optional[float] = None  # soft update, target <- tau * online + (1 - tau) * target after every gradient step
    standardise_rewards: bool = False  # rewards divided by (and centred on) their running statistics in the target
    # -- optimisation
    optimizer: str = "adam"  # adam | rmsprop (PyMARL's original: RMSprop, alpha 0.99, eps 1e-5)
    lr: float = 1e-3  # learning rate of the agent network and the mixer (one optimiser)
    optim_eps: float = 1e-5  # Adam's / RMSprop's epsilon
    optim_alpha: float = 0.99  # RMSprop's smoothing constant (unused by Adam)
    max_grad_norm: float = 10.0  # global gradient-norm clip of every step
    batch_size: int = 32  # episodes per gradient step, sampled uniformly from the buffer
    buffer_size: int = 5000  # episodes kept (oldest overwritten first)
    updates_per_round: int = 1  # gradient steps after each round of n_envs episodes
    # -- exploration (epsilon-greedy; random actions are drawn among the available ones)
    epsilon_start: float = 1.0  # epsilon at frame 0
    epsilon_finish: float = 0.05  # epsilon after the anneal (and for sampled evaluation, greedy=false)
    epsilon_anneal_steps: float = 50_000  # env frames over which epsilon falls linearly
    # -- GPVD (docs/algorithms/gpvd.md); weighting none = plain QMIX/VDN
    weighting: str = "none"  # none | gpvd: gradient protection weights on the TD loss
    grouping: str = "simhash"  # simhash (k-bit codes of the state) | exact (equal states; the w/o SimHash ablation)
    hash_bits: int = 32  # k, bits of the SimHash code (<= 62)
    gpvd_alpha: float = 0.2  # weight of interfering samples
    gpvd_optimal_weight: float = 1.0  # weight of samples taking the protected joint action a^{c*} (> 1 amplifies)
    count_bonus: float = 0.0  # beta of r_int = beta / sqrt(N(phi(s))) + count_offset; 0 = off (GPVD: 0.01)
    count_offset: float = 0.0  # kappa, the fixed offset of r_int (used only when count_bonus > 0)
    # -- GRASP-QMIX (docs/algorithms/grasp_qmix.md)
    consensus: str = "none"  # none | grasp: per-agent TD gradients realigned as Gamma_i (g_i + u*)
    consensus_solver: str = "active_set"  # active_set | cvxpy (the reference QP), as GRASP
    # -- checkpoints
    buffer_checkpoint_mb: float = 1024.0  # the replay buffer is saved with checkpoints when it is at most this big

    def __post_init__(self) -> None:
        _one_of(self.mixer, MIXERS, "algo.mixer")
        _positive(self.mixing_embed_dim, "algo.mixing_embed_dim")
        _positive(self.hypernet_embed, "algo.hypernet_embed")
        _require(0 < self.gamma <= 1, "algo.gamma", f"must be in (0, 1] (got {self.gamma})")
        _require(0 <= self.td_lambda <= 1, "algo.td_lambda", f"must be in [0, 1] (got {self.td_lambda})")
        _positive(self.target_update_interval, "algo.target_update_interval")
        if self.target_tau is not None:
            _require(0 < self.target_tau <= 1, "algo.target_tau", f"must be in (0, 1], or null for hard updates (got {self.target_tau})")
        _one_of(self.optimizer, ("adam", "rmsprop"), "algo.optimizer")
        for key in ("lr", "optim_eps", "max_grad_norm", "batch_size", "buffer_size", "updates_per_round"):
            _positive(getattr(self, key), f"algo.{key}")
        _require(0 < self.optim_alpha < 1, "algo.optim_alpha", f"must be in (0, 1) (got {self.optim_alpha})")
        _require(self.batch_size <= self.buffer_size, "algo.batch_size",
                 f"must be <= algo.buffer_size={self.buffer_size} (got {self.batch_size})")
        for key in ("epsilon_start", "epsilon_finish"):
            value = getattr(self, key)
            _require(0 <= value <= 1, f"algo.{key}", f"must be in [0, 1] (got {value})")
        _nonnegative(self.epsilon_anneal_steps, "algo.epsilon_anneal_steps")
        _one_of(self.weighting, ("none", "gpvd"), "algo.weighting")
        _one_of(self.grouping, ("simhash", "exact"), "algo.grouping")
        _require(1 <= self.hash_bits <= 62, "algo.hash_bits", f"must be in 1..62 (got {self.hash_bits})")
        _nonnegative(self.gpvd_alpha, "algo.gpvd_alpha")
        _positive(self.gpvd_optimal_weight, "algo.gpvd_optimal_weight")
        _nonnegative(self.count_bonus, "algo.count_bonus")
        _one_of(self.consensus, ("none", "grasp"), "algo.consensus")
        _one_of(self.consensus_solver, ("active_set", "cvxpy"), "algo.consensus_solver")
        _nonnegative(self.buffer_checkpoint_mb, "algo.buffer_checkpoint_mb")


@dataclass
class EnvConfig:
    """Which env and map, and how the vector env runs. Map YAMLs fill ``map_name``/``map_envs``."""

    name: str = MISSING  # mpe | games | smac | smacv2 | grf | smax (set by configs/env/*.yaml)
    map_name: str = MISSING  # the scenario (set by configs/map/*.yaml)
    map_envs: list[str] = MISSING  # the envs the selected map exists in (set by configs/map/*.yaml)
    continuous: bool = False  # Box actions with a diagonal Gaussian policy (where supported)
    state_type: Optional[str] = None  # critic state where the env offers a choice: EP | FP (SMAC)
    # simulator where the env offers a choice: mpe2 | jax (MPE: JaxMARL's MPE, all envs in one
    # vmapped call; needs the smax extra). jax implies env.vector=batched: auto and hybrid become
    # batched, inproc and subproc are refused. null = the env's only (or default) simulator.
    backend: Optional[str] = None
    # inproc | subproc | hybrid (workers + this process steps a share) | auto (subproc when it helps)
    # | batched (one vmapped call for all envs: SMAX, and MPE with env.backend=jax)
    vector: str = "auto"
    n_workers: int = 0  # subproc workers; 0 = min(n_envs, CPU cores) (hybrid: CPU cores - 1)
    step_timeout: Optional[float] = None  # seconds before a silent worker is restarted
    options: dict[str, Any] = field(default_factory=dict)  # passed to the env maker

    def maker_options(self) -> dict[str, Any]:
        """Keyword arguments for the env maker (``marlopt.envs.registry.make_env``)."""
        extra = {} if self.state_type is None else {"state_type": self.state_type}
        if self.backend is not None:
            extra["backend"] = self.backend
        return {"continuous": self.continuous, **extra, **self.options}

    def __post_init__(self) -> None:
        _require(
            self.name in self.map_envs,
            "map",
            f"map '{self.map_name}' belongs to env={'|'.join(self.map_envs)}, not env={self.name}; "
            f"use env={self.map_envs[0]} map={self.map_name}",
        )
        _one_of(self.vector, ("auto", "inproc", "subproc", "hybrid", "batched"), "env.vector")
        if self.backend is not None:
            _one_of(self.backend, ("mpe2", "jax"), "env.backend")
            _require(self.name == "mpe", "env.backend", f"only env=mpe offers a choice of simulator, "
                     f"not env={self.name}; drop env.backend")
        if self.backend == "jax" and self.vector in ("auto", "hybrid"):
            self.vector = "batched"  # the JAX backend's point: every env in one call
        _require(self.backend != "jax" or self.vector == "batched", "env.vector",
                 f"env.backend=jax steps all envs in one batched call, not {self.vector}; "
                 "use env.vector=batched (or auto), or env.backend=mpe2")
        _require(not (self.name == "mpe" and self.vector == "batched" and self.backend != "jax"),
                 "env.vector", "env=mpe runs batched only on JaxMARL's MPE; add env.backend=jax "
                 "(or use env.vector=hybrid with mpe2)")
        _nonnegative(self.n_workers, "env.n_workers")
        if self.step_timeout is not None:
            _positive(self.step_timeout, "env.step_timeout")


@dataclass
class LoggerConfig:
    """Where a run's metrics go besides ``metrics.jsonl`` and TensorBoard (always written):
    Weights & Biases, off by default (docs/logging.md). Set with ``logger.<key>=...``."""

    wandb: bool = False  # mirror every metrics row to W&B (needs: pip install -e ".[wandb]")
    wandb_project: str = "marlopt"  # the W&B project
    wandb_entity: Optional[str] = None  # the W&B user or team; null = your default entity
    # online (stream to the W&B server; needs `wandb login`) | offline (write under <run>/wandb/, upload
    # later with `wandb sync <run>/wandb/offline-run-*`) | null = the WANDB_MODE variable, else online
    wandb_mode: Optional[str] = None
    wandb_group: Optional[str] = None  # W&B group of the run (e.g. one per sweep); null = none
    wandb_tags: list[str] = field(default_factory=list)  # tags of the W&B run
    wandb_name: Optional[str] = None  # display name of the W&B run; null = the run directory's name

    def __post_init__(self) -> None:
        if self.wandb_mode is not None:
            _one_of(self.wandb_mode, ("online", "offline"), "logger.wandb_mode")
        _require(bool(str(self.wandb_project).strip()), "logger.wandb_project", "must not be empty")


@dataclass
class TrainConfig:
    """Top-level run settings. Frames count environment steps summed over the parallel envs."""

    algo: Any = MISSING  # the algorithm: a schema of its rule (configs/algo/<name>.yaml)
    env: EnvConfig = MISSING  # configs/env/<name>.yaml + configs/map/<name>.yaml
    model: ModelConfig = field(default_factory=ModelConfig)  # actor and critic networks
    seed: int = 0  # seeds torch, numpy and every env (>= 0)
    total_steps: float = 1_000_000  # env frames; floats such as 2e6 accepted
    n_envs: int = 8  # parallel envs in rollouts
    rollout_length: int = 200  # steps per env per iteration (on-policy; off-policy runs whole episodes)
    device: str = "cpu"  # cpu | cuda | cuda:N | auto
    torch_threads: int = 0  # update threads; 0 = all cores (rollout inference always runs on 1)
    log_interval: int = 1  # iterations between log events
    eval_interval: float = 0  # frames between greedy evaluations; 0 = only at the end
    eval_episodes: int = 16  # episodes per greedy evaluation
    eval_envs: int = 0  # envs evaluated in parallel; 0 = min(eval_episodes, 16) (SC2: a few)
    save_interval: float = 500_000  # frames between numbered checkpoints
    latest_interval: float = 50_000  # frames between refreshes of checkpoints/latest.pt
    resume: Optional[str] = None  # run directory to continue
    max_iterations: Optional[int] = None  # stop (with a checkpoint) after this many in this call
    progress: bool = True  # rich progress bar (plain log lines when not a terminal)
    # marlopt.optim's speed tricks (fused Adam, lean grad clip, fast tanh, fused GRU sequence and its
    # C++ CPU kernel); false = plain torch
    speed_kit: bool = True
    nonfinite_patience: int = 10  # consecutive optimiser steps with a non-finite loss or gradient (each skipped) before the run stops
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # W&B mirroring of the metrics (off by default)

    def __post_init__(self) -> None:
        _require(0 <= self.seed <= MAX_SEED, "seed",
                 f"must be in 0..{MAX_SEED} (env seeds are seed·100003 + i and must fit 32 bits; got {self.seed})")
        _positive(self.total_steps, "total_steps")
        _require(float(self.total_steps).is_integer(), "total_steps", "must be a whole number")
        _positive(self.n_envs, "n_envs")
        _positive(self.rollout_length, "rollout_length")
        _require(
            self.device in ("cpu", "cuda", "auto") or self.device.startswith("cuda:"),
            "device",
            f"must be cpu, cuda, cuda:N or auto (got {self.device!r})",
        )
        _nonnegative(self.torch_threads, "torch_threads")
        _positive(self.log_interval, "log_interval")
        _nonnegative(self.eval_interval, "eval_interval")
        _positive(self.eval_episodes, "eval_episodes")
        _nonnegative(self.eval_envs, "eval_envs")
        _positive(self.save_interval, "save_interval")
        _positive(self.latest_interval, "latest_interval")
        _positive(self.nonfinite_patience, "nonfinite_patience")
        if self.max_iterations is not None:
            _positive(self.max_iterations, "max_iterations")
        if isinstance(self.model, ModelConfig) and self.model.recurrent:
            _require(
                self.rollout_length % self.model.data_chunk_length == 0,
                "rollout_length",
                f"must be a multiple of model.data_chunk_length={self.model.data_chunk_length} "
                f"(got {self.rollout_length})",
            )
        if isinstance(self.algo, QLearningConfig) and isinstance(self.env, EnvConfig):
            _require(not self.env.continuous, "env.continuous",
                     f"algo={self.algo.name} (value decomposition) needs discrete actions; set env.continuous=false")


def register_configs() -> None:
    """Register the schemas with Hydra's ConfigStore (idempotent): the top level, the env, and
    each registered update rule's schema as ``algo/<rule>_schema`` (what an algorithm YAML's
    defaults list names)."""
    from marlopt.algos.registry import RULES

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=TrainConfig)
    cs.store(group="env", name="env_schema", node=EnvConfig)
    for name, entry in RULES.items():
        cs.store(group="algo", name=f"{name}_schema", node=entry.schema)


def check_known_keys(node: DictConfig, obj: Any, prefix: str = "") -> None:
    """Every key of the composed ``node`` is a field of its schema ``obj`` (recursively; free-form
    dicts such as ``env.options`` are not checked). Hydra accepts ``+algo.lrr=3`` (its own hint
    after ``algo.lrr=3`` fails) by adding a key no code reads: refused here, with the nearest field."""
    import dataclasses
    import difflib

    names = [f.name for f in dataclasses.fields(obj)]
    for key in node.keys():
        key = str(key)
        if key not in names:
            close = difflib.get_close_matches(key, names, n=1)
            hint = f"did you mean {prefix}{close[0]}? " if close else ""
            raise ConfigError(f"{prefix}{key}: unknown key ({hint}{type(obj).__name__} in marlopt/config.py lists "
                              "the valid keys)")
        value = getattr(obj, key)
        if dataclasses.is_dataclass(value) and isinstance(node[key], DictConfig):
            check_known_keys(node[key], value, f"{prefix}{key}.")


def to_objects(cfg: DictConfig) -> TrainConfig:
    """Instantiate the dataclasses (running every ``__post_init__`` check) from a composed config;
    unknown keys are refused (:func:`check_known_keys`)."""
    algo_cfg = cfg.algo
    obj = OmegaConf.to_object(cfg)
    assert isinstance(obj, TrainConfig)
    if not isinstance(obj.algo, AlgoConfig):  # an algorithm YAML without a schema: type it by its rule
        from marlopt.algos.registry import rule_entry

        _require(isinstance(obj.algo, dict) and "rule" in obj.algo, "algo.rule",
                 "every algorithm YAML names its update rule (rule: simultaneous | sequential | consensus | ...)")
        schema = rule_entry(str(obj.algo["rule"])).schema
        try:
            obj.algo = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), algo_cfg))
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - OmegaConf's key/type errors: one line naming the key
            raise ConfigError(f"algo: {str(exc).splitlines()[0]} (schema {schema.__name__})") from None
    check_known_keys(cfg, obj)
    return obj
