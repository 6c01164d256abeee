"""scripts/bench_jaxmarl.py's pure parts: the settings mapping, the threshold maths, the patch (no anchor runs)."""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
bench = pytest.importorskip("bench_jaxmarl")

CHECKOUT = Path(os.environ.get("JAXMARL_DIR", str(bench.DEFAULT_CHECKOUT)))
needs_checkout = pytest.mark.skipif(not (CHECKOUT / bench.TASKS["mpe"]["script"]).is_file(),
                                    reason=f"no JaxMARL checkout at {CHECKOUT} (set JAXMARL_DIR)")


def composed(task: str, frames: int = 300_000):
    from marlopt.cli import compose
    from marlopt.config import to_objects

    return to_objects(compose(bench.marlopt_overrides(task, frames, seed=3)))


@pytest.mark.parametrize("task", ["mpe", "smax"])
def test_marlopt_overrides_compose_to_jaxmarls_settings(task):
    cfg = composed(task)
    envs = {"mpe": 16, "smax": 128}[task]
    assert (cfg.n_envs, cfg.rollout_length, cfg.seed) == (envs, 128, 3)
    assert cfg.total_steps == 300_000 // (envs * 128) * envs * 128
    m, a = cfg.model, cfg.algo
    assert (m.hidden_sizes, m.recurrent, m.rnn_hidden, m.data_chunk_length) == ([128], True, 128, 128)
    assert (m.activation, m.feature_norm, m.layer_norm) == ("relu", False, False)
    assert (m.post_rnn_sizes, m.rnn_layer_norm) == ([128], False)  # Dense(128) + relu after the GRU
    assert (m.sharing, m.agent_id, m.critic_agent_id, m.head_gain) == ("shared", False, False, 0.01)
    assert (a.ppo_epochs, a.num_minibatches, a.lr, a.critic_lr, a.adam_eps) == (4, 4, 2e-3, 2e-3, 1e-5)
    assert (a.gamma, a.gae_lambda, a.value_clip, a.huber_delta, a.use_valuenorm) == (0.99, 0.95, 0.2, None, False)
    assert a.objective["clip"] == 0.2 and a.value_loss_coef == 0.5 and a.advantage_norm
    assert a.lr_schedule == "linear"  # ANNEAL_LR
    assert (a.max_grad_norm, a.entropy_coef) == {"mpe": (0.5, 0.01), "smax": (0.25, 0.0)}[task]
    if task == "smax":
        assert (cfg.env.name, cfg.env.map_name, cfg.env.vector, cfg.env.state_type) == ("smax", "2s3z", "batched", "FP")
        assert cfg.env.options == {"see_enemy_actions": True, "walls_cause_death": True, "attack_mode": "closest"}
    else:
        assert (cfg.env.name, cfg.env.map_name, cfg.env.continuous) == ("mpe", "simple_spread", False)
        assert cfg.env.options["max_cycles"] == 25 and cfg.env.options["team_reward"] == "mean"
        assert cfg.env.backend == "jax" and bench.TASKS["mpe"]["return_scale"] == 3.0
    # no mid-run evaluation or checkpoint inside the budget
    assert cfg.eval_interval == 0 and cfg.save_interval > cfg.total_steps and cfg.latest_interval > cfg.total_steps


@needs_checkout
@pytest.mark.parametrize("task", ["mpe", "smax"])
def test_mapping_matches_the_checkouts_own_config(task):
    """The values the mapping hard-codes are those of JaxMARL's Hydra config in the checkout."""
    from omegaconf import OmegaConf

    jc = OmegaConf.load(CHECKOUT / "baselines/MAPPO/config" / f"{bench.TASKS[task]['config']}.yaml")
    cfg = composed(task)
    a = cfg.algo
    assert (jc.NUM_ENVS, jc.NUM_STEPS) == (cfg.n_envs, cfg.rollout_length) == (bench.TASKS[task]["envs"], bench.ROLLOUT)
    assert (jc.FC_DIM_SIZE, jc.GRU_HIDDEN_DIM) == (cfg.model.hidden_sizes[0], cfg.model.rnn_hidden)
    assert (jc.UPDATE_EPOCHS, jc.NUM_MINIBATCHES, jc.LR) == (a.ppo_epochs, a.num_minibatches, a.lr)
    assert (jc.GAMMA, jc.GAE_LAMBDA, jc.VF_COEF) == (a.gamma, a.gae_lambda, a.value_loss_coef)
    assert jc.CLIP_EPS == a.value_clip == a.objective["clip"]
    assert (jc.MAX_GRAD_NORM, jc.ENT_COEF) == (a.max_grad_norm, a.entropy_coef)
    assert not jc.SCALE_CLIP_EPS
    assert jc.ANNEAL_LR and a.lr_schedule == "linear"
    if task == "smax":
        assert jc.MAP_NAME == cfg.env.map_name and OmegaConf.to_container(jc.ENV_KWARGS) == cfg.env.options
        assert jc.OBS_WITH_AGENT_ID and cfg.env.state_type == "FP"


def test_jaxmarl_command_changes_only_budget_seed_and_wandb():
    cmd = bench.jaxmarl_command("py", Path("/co"), "smax", 40_000, 2, Path("/run"))
    assert cmd[:2] == ["py", "/co/baselines/MAPPO/mappo_rnn_smax.py"]
    assert cmd[2:] == ["TOTAL_TIMESTEPS=32768", "SEED=2", "WANDB_MODE=disabled", "hydra.run.dir=/run"]


@given(st.integers(1, 10_000_000), st.sampled_from(["mpe", "smax"]))
def test_whole_frames_are_whole_iterations_and_never_more_than_asked_beyond_one(frames, task):
    per = bench.TASKS[task]["envs"] * bench.ROLLOUT
    out = bench.whole_frames(task, frames)
    assert out % per == 0 and out >= per
    assert out <= frames or out == per
    assert frames - out < per or frames < per


@given(st.lists(st.floats(-100, 100), min_size=1, max_size=40), st.integers(1, 8))
def test_trailing_mean_is_the_mean_of_the_last_window_values(values, window):
    out = bench.trailing_mean(values, window)
    for i, m in enumerate(out):
        part = values[max(0, i - window + 1): i + 1]
        assert m == pytest.approx(sum(part) / len(part))


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=40), st.floats(-50, 50))
def test_window_one_threshold_time_is_the_first_crossing(returns, threshold):
    times = [0.5 * i + 3.0 for i in range(len(returns))]
    hit = bench.time_to_threshold(times, returns, threshold, window=1)
    crossings = [t for t, r in zip(times, returns) if r >= threshold]
    assert hit == (crossings[0] if crossings else None)


def test_a_single_spike_does_not_reach_the_threshold_but_a_sustained_rise_does():
    times = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    spike = [-80.0, -80.0, -50.0, -80.0, -80.0, -80.0, -80.0]
    assert bench.time_to_threshold(times, spike, -61.0, window=1) == 30.0
    assert bench.time_to_threshold(times, spike, -61.0, window=3) is None
    rise = [-80.0, -70.0, -60.0, -55.0, -50.0, -50.0, -50.0]
    assert bench.time_to_threshold(times, rise, -61.0, window=3) == 50.0  # mean(-60, -55, -50) = -55


def test_nan_rows_are_skipped_and_an_all_nan_window_never_counts():
    nan = float("nan")
    assert bench.time_to_threshold([1.0, 2.0, 3.0], [nan, nan, 0.6], 0.5, window=2) == 3.0
    assert bench.time_to_threshold([1.0, 2.0], [nan, nan], -1e9, window=2) is None
    assert bench.final_return([nan, 1.0, 3.0], 3) == 2.0 and bench.final_return([nan], 3) is None


def test_rows_parse_from_each_sides_output():
    row = bench.parse_jaxmarl('BENCH_METRIC {"wall": 1.5, "returns": -60.0, "env_step": 2048.0}')
    assert row == {"kind": "BENCH_METRIC", "wall": 1.5, "returns": -60.0, "env_step": 2048.0}
    assert bench.parse_jaxmarl("Importing submoduled environments...") is None
    assert bench.parse_marlopt('{"step": 2048, "time/rollout_s": 1.0, "time/update_s": 2.0, '
                               '"train/return_mean": "nan"}')["train/return_mean"] != 0  # decoded NaN
    assert math.isnan(bench.parse_marlopt('{"step": 2048, "time/rollout_s": 1.0, "time/update_s": 2.0, '
                                          '"train/return_mean": "nan"}')["train/return_mean"])
    assert bench.parse_marlopt('{"step": 2048, "eval/return_mean": 1.0}') is None
    assert bench.parse_marlopt('{"step": 20') is None


def test_side_result_and_summary_ratios():
    mon = {"wall_s": 10.0, "peak_rss_mib": 100.0, "peak_pss_mib": 90.0, "peak_processes": 1, "rows": []}
    curve = [(2.0, 2048, -80.0), (4.0, 4096, -60.0), (6.0, 6144, -50.0)]
    jx = {**bench.side_result("jaxmarl", mon, curve, 6144, 4.0, 1.0, -65.0, 1), "repeat": 0}
    mo = {**bench.side_result("marlopt", {**mon, "wall_s": 5.0, "peak_rss_mib": 50.0}, curve, 6144, 1.0, 0.5, -65.0, 1),
          "repeat": 0}
    assert jx["time_to_threshold_s"] == 4.0 and jx["return_final"] == -50.0 and jx["fps_loop"] == 1536.0
    s = bench.summarise([jx, mo, {"name": "marlopt", "repeat": 1, "error": "x"}], random_return=-80.0)
    assert s["ratios"] == {"fps_loop ratio": 4.0, "fps_wall ratio": 2.0, "peak_rss_mib ratio": 0.5,
                           "time_to_threshold_s ratio": 1.0}
    assert s["sides"]["marlopt"] == {"n": 1, "gain_mean": 30.0, "gain_t95": None, "gains": [30.0], "reached": 1,
                                     "time_to_threshold_median": 4.0}
    report = {"task": "t", "delta": 15.0, "window": 1, "threshold": -65.0, "random_policy": {"return_mean": -80.0},
              "runs": [jx, mo, {"name": "jaxmarl", "repeat": 1, "returncode": 1, "error": "boom"}], "summary": s}
    md = bench.markdown(report)
    assert "FAILED (rc 1)" in md and "| 30.00 |" in md and "fps_loop ratio | 4.00" in md
    assert "| marlopt | +30.0 ± - (n = 1) | 4.0 (1/1) |" in md
    assert all(line.count("|") == 13 for line in md.splitlines() if line.startswith("| jaxmarl | 1"))


def test_seed_statistics_over_repeats_are_the_t95_interval():
    """Three seeds: mean of final − random and Student-t's 95% half-width (t_{0.975, 2} = 4.303)."""
    mon = {"wall_s": 10.0, "peak_rss_mib": 100.0, "peak_pss_mib": 90.0, "peak_processes": 1, "rows": []}
    runs = []
    for rep, final in enumerate([-60.0, -55.0, -50.0]):
        curve = [(1.0, 2048, -80.0), (2.0, 4096, final)]
        runs.append({**bench.side_result("marlopt", mon, curve, 4096, 1.0, 0.5, -58.0, 1), "repeat": rep})
    side = bench.summarise(runs, random_return=-80.0)["sides"]["marlopt"]
    assert side["gain_mean"] == pytest.approx(25.0)
    assert side["gain_t95"] == pytest.approx(4.3027 * 5.0 / math.sqrt(3), rel=1e-4)
    assert side["reached"] == 2 and side["time_to_threshold_median"] == 2.0


def test_vs_entry_accepts_only_jaxmarl(capsys):
    import benchmark

    assert benchmark.main(["--vs", "benchmarl"]) == 2
    assert "--vs takes jaxmarl" in capsys.readouterr().err
    assert benchmark.main(["--vs", "jaxmarl", "--task", "smax", "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert "mappo_rnn_smax.py TOTAL_TIMESTEPS=294912" in out and "marlopt.train env=smax" in out


@needs_checkout
def test_patch_applies_cleanly_once_and_is_idempotent(tmp_path):
    import subprocess

    co = tmp_path / "JaxMARL"
    shutil.copytree(CHECKOUT / "baselines", co / "baselines")
    # a pristine copy: undo the patch when the checkout already carries it
    subprocess.run(["git", "apply", "--reverse", str(bench.PATCH)], cwd=co, capture_output=True)
    script = co / bench.TASKS["mpe"]["script"]
    assert "BENCH_METRIC" not in script.read_text()
    assert bench.apply_patch(co) == 0
    patched = {t: (co / bench.TASKS[t]["script"]).read_text() for t in bench.TASKS}
    for text in patched.values():
        assert text.count("_bench_log(_bench_row)") == 1 and "BENCH_TIMING" in text and "wandb.log(_bench_row)" in text
    assert bench.apply_patch(co) == 0  # already applied: unchanged
    assert {t: (co / bench.TASKS[t]["script"]).read_text() for t in bench.TASKS} == patched
    script.write_text(script.read_text().replace("wandb.log(_bench_row)", "wandb.log(other)"))
    assert bench.apply_patch(co) == 2  # neither pristine nor patched: refused


def test_patch_file_touches_only_the_two_baselines():
    text = bench.PATCH.read_text()
    files = sorted({line.split()[1] for line in text.splitlines() if line.startswith(("--- ", "+++ "))})
    assert files == ["a/baselines/MAPPO/mappo_rnn_mpe.py", "a/baselines/MAPPO/mappo_rnn_smax.py",
                     "b/baselines/MAPPO/mappo_rnn_mpe.py", "b/baselines/MAPPO/mappo_rnn_smax.py"]
    removed = [line for line in text.splitlines() if line.startswith("-") and not line.startswith("---")]
    assert all("wandb.log(" in line or "train_jit" in line for line in removed), removed
    assert json.dumps(bench.UNMATCHED)  # the report's list is serialisable


def test_backend_and_extra_overrides_come_through_last():
    """``--mpe-backend mpe2`` picks the mpe2 package; ``--override`` lands after the mapping (it wins)."""
    from marlopt.cli import compose
    from marlopt.config import to_objects

    ovr = bench.marlopt_overrides("mpe", 300_000, seed=0, mpe_backend="mpe2", extra=["algo.value_clip=null"])
    assert ovr[-1] == "algo.value_clip=null"
    cfg = to_objects(compose(ovr))
    assert cfg.env.backend == "mpe2" and cfg.algo.value_clip is None
    assert "env.backend=jax" not in bench.marlopt_overrides("smax", 300_000, seed=0)
