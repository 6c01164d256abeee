"""The plug-in promise: an algorithm is one YAML (and, for a new loss, one function), found through
``hydra.searchpath``, with no file of marlopt edited; the family picks the runner; bad plug-ins
fail early in one line. Mirrors docs/architecture.md, "Add an algorithm"."""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from marlopt.algos import registry
from marlopt.config import AlgoConfig, ConfigError
from tests.helpers import make_config, read_metrics, run_cli

SMALL = ["env=games", "map=harl_example1", "n_envs=2", "rollout_length=20", "total_steps=120", "eval_episodes=2",
         "progress=false"]

LOSS_MODULE = '''
"""A new ratio loss, written outside marlopt: PPO's clip plus a penalty on log r squared."""
import os
import torch
from marlopt.objectives import masked_mean, ppo_clip_loss


def squared_log_ratio_loss(logp, logp_old, adv, mask=None, *, coef=0.1, clip=0.2, marker=None):
    if marker is not None and logp.requires_grad:  # count the update's calls (not marlopt's early check)
        with open(marker, "a") as f:
            f.write(f"{coef}\\n")
    log_r = logp - logp_old.detach()
    return ppo_clip_loss(logp, logp_old, adv, clip=clip, mask=mask) + coef * masked_mean(log_r**2, mask)
'''


def algo_yaml(directory: Path, name: str, body: str) -> Path:
    (directory / "algo").mkdir(parents=True, exist_ok=True)
    path = directory / "algo" / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


def test_a_new_ratio_loss_trains_from_outside_the_package(tmp_path, monkeypatch):
    """A module in a temporary directory defines the loss, a YAML in a temporary config directory
    declares the algorithm, and ``python -m marlopt.train`` trains with it; evaluation of the run
    finds the algorithm again through the search path saved with the run."""
    code, configs, marker = tmp_path / "code", tmp_path / "configs", tmp_path / "calls.txt"
    code.mkdir()
    (code / "my_losses.py").write_text(LOSS_MODULE)
    algo_yaml(configs, "sqlog", f"""
        defaults:
          - simultaneous_schema
          - _self_
        name: sqlog
        family: on_policy
        rule: simultaneous
        objective:
          _target_: my_losses.squared_log_ratio_loss
          _partial_: true
          coef: 0.3
          marker: {marker}
        ppo_epochs: 2
        num_minibatches: 2
        """)
    run = tmp_path / "run"
    monkeypatch.setenv("PYTHONPATH", str(code))  # the user's code, importable as on their machine
    run_cli("marlopt.train", "algo=sqlog", f"hydra.searchpath=[file://{configs}]", *SMALL,
            f"hydra.run.dir={run}", cwd=tmp_path)
    # 3 iterations x 2 epochs x 2 minibatches, each call with the YAML's coefficient
    assert marker.read_text().split() == ["0.3"] * 12
    rows = read_metrics(run)
    assert len(rows) == 4 and all(r["actor/policy_loss"] == r["actor/policy_loss"] for r in rows[:3])  # logged, not NaN
    assert "eval/return_mean" in rows[-1]
    out = run_cli("marlopt.evaluate", f"run={run}", "episodes=2", cwd=tmp_path)
    assert out.stdout.startswith("return ")


def test_the_shipped_ratio_algorithms_are_yamls_over_the_public_losses():
    from marlopt import objectives

    expected = {"mappo": "ppo_clip_loss", "mappo_asym": "ppo_clip_loss", "maspo": "spo_loss",
                "maspo_asym": "spo_loss", "mars": "mars_loss", "mars_msym": "mars_loss", "mars_addsym": "mars_loss",
                "mars_asym": "mars_loss",
                "grasp": "ppo_clip_loss"}
    for name, fn in expected.items():
        algo = make_config(f"algo={name}").algo
        assert algo.objective["_target_"] == f"marlopt.objectives.{fn}"
        assert registry.objective_fn(algo).func is getattr(objectives, fn)
    def region(*overrides: str) -> tuple[float, float]:
        algo = make_config(*overrides).algo
        return registry.ratio_region(algo, registry.objective_fn(algo))

    assert region("algo=mars_asym") == (0.8, 1.2)
    assert region("algo=mars") == (1 / 1.2, 1.2)
    assert region("algo=mappo", "algo.objective.clip=0.1") == (0.9, 1.1)
    assert region("algo=mappo", "algo.ratio_region=[0.5,2.0]") == (0.5, 2.0)
    assert region("algo=maspo_asym") == (0.8333333333333334, 1.2)


def test_a_yaml_without_a_schema_is_typed_by_its_rule(tmp_path):
    algo_yaml(tmp_path, "plain", """
        name: plain
        family: on_policy
        rule: sequential
        variant: haa2c
        a2c_epochs: 3
        """)
    cfg = make_config("algo=plain", f"hydra.searchpath=[file://{tmp_path}]")
    from marlopt.config import SequentialConfig

    assert isinstance(cfg.algo, SequentialConfig) and cfg.algo.a2c_epochs == 3 and cfg.algo.clip == 0.2
    algo_yaml(tmp_path, "typo", "name: typo\nfamily: on_policy\nrule: sequential\na2c_epoch: 3\n")
    with pytest.raises(ConfigError, match="a2c_epoch"):
        make_config("algo=typo", f"hydra.searchpath=[file://{tmp_path}]")


@pytest.mark.parametrize("body, message", [
    ("family: off_policy\nrule: simultaneous\nobjective: {_target_: marlopt.objectives.ppo_clip_loss, _partial_: true}",
     "algo.family: rule 'simultaneous' is on_policy, not off_policy"),
    ("family: on_policy\nrule: simultaneous\nobjective: {_target_: no_such_module.loss, _partial_: true}",
     "algo.objective: Error locating target 'no_such_module.loss'"),
    ("family: on_policy\nrule: simultaneous\nobjective: {_target_: marlopt.objectives.mars_loss, _partial_: true, "
     "rho_plus: 0.9}", "rho_plus (expansion target) must be a finite number > 1"),
    ("family: on_policy\nrule: simultaneous\nobjective: {_target_: marlopt.objectives.ppo_clip_loss, _partial_: true, "
     "bogus: 1}", "unexpected keyword argument 'bogus'"),
    ("family: on_policy\nrule: simultaneous\nobjective: {_target_: marlopt.objectives.ppo_clip_loss}",
     "algo.objective._partial_: must be true"),
    ("family: on_policy\nrule: nonesuch", "algo.rule: unknown update rule 'nonesuch'"),
])
def test_a_bad_plugin_fails_in_one_line_before_the_run_directory_exists(tmp_path, body, message):
    algo_yaml(tmp_path / "configs", "bad", f"name: bad\n{body}\n")
    run = tmp_path / "run"
    proc = run_cli("marlopt.train", "algo=bad", f"hydra.searchpath=[file://{tmp_path / 'configs'}]", *SMALL,
                   f"hydra.run.dir={run}", cwd=tmp_path, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("marlopt: error: ") and message in lines[0], proc.stderr
    assert not run.exists()


# -- the family picks the runner: the off-policy seam, with a stand-in runner registered here ------

@dataclass
class StandInConfig(AlgoConfig):
    epsilon: float = 0.05  # a hyperparameter only this family has


class StandInRule:  # never built by the stand-in runner; registered to give the family a rule
    pass


class StandInRunner:
    """The smallest runner: counts frames, logs one row per iteration, no envs."""

    built: list["StandInRunner"] = []

    def __init__(self, cfg, run_dir, resume_payload=None):
        self.cfg, self.run_dir = cfg, run_dir
        self.frames, self.total_frames = 0, int(cfg.total_steps)
        StandInRunner.built.append(self)

    def train(self, logger) -> str:
        while self.frames < self.total_frames:
            self.frames += 50
            logger.log(self.frames, {"train/epsilon": self.cfg.algo.epsilon})
        return "finished"

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def off_policy_family():
    saved_rules, saved_runners = dict(registry.RULES), dict(registry.RUNNERS)
    registry.register_rule("standin_q", StandInRule, StandInConfig, "off_policy")
    registry.RUNNERS.pop("off_policy")  # as if no runner had been registered for the family
    yield
    registry.RULES.clear(), registry.RULES.update(saved_rules)
    registry.RUNNERS.clear(), registry.RUNNERS.update(saved_runners)


def test_the_family_picks_the_runner(tmp_path, off_policy_family, capsys, monkeypatch):
    from hydra.core.global_hydra import GlobalHydra

    from marlopt import train

    monkeypatch.setattr("sys.argv", ["marlopt.train"])  # main() hands its arguments to Hydra through sys.argv

    algo_yaml(tmp_path / "configs", "qstand", """
        defaults:
          - standin_q_schema
          - _self_
        name: qstand
        family: off_policy
        rule: standin_q
        epsilon: 0.2
        """)
    args = ["algo=qstand", f"hydra.searchpath=[file://{tmp_path / 'configs'}]", "env=games", "map=harl_example1",
            "total_steps=200", "progress=false"]
    with pytest.raises(SystemExit) as exc:  # no runner for the family: refused before anything is written
        train.main([*args, f"hydra.run.dir={tmp_path / 'refused'}"])
    assert exc.value.code == 2 and not (tmp_path / "refused").exists()
    assert "no runner is registered for family 'off_policy'" in capsys.readouterr().err

    registry.register_runner("off_policy", StandInRunner)
    StandInRunner.built.clear()
    try:
        train.main([*args, f"hydra.run.dir={tmp_path / 'run'}"])
    finally:
        GlobalHydra.instance().clear()  # later tests compose configs again
    (runner,) = StandInRunner.built
    assert runner.frames == 200 and runner.closed and runner.cfg.algo.epsilon == 0.2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [50, 100, 150, 200] and rows[0]["train/epsilon"] == 0.2


def test_help_lists_real_choices_only():
    proc = run_cli("marlopt.train", "--help", cwd=Path.cwd())
    assert "mappo (on_policy, rule simultaneous)" in proc.stdout and "mpe: " in proc.stdout
    assert "_schema" not in proc.stdout
