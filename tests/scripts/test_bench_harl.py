"""scripts/bench_harl.py's pure parts: HARL's log parsing, its command line, marlopt's side, the report
(no HARL runs; HARL need not be installed)."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
bench = pytest.importorskip("bench_harl")

CHECKOUT = Path(os.environ.get("HARL_DIR", str(bench.DEFAULT_CHECKOUT)))
needs_checkout = pytest.mark.skipif(not (CHECKOUT / "harl" / "utils" / "envs_tools.py").is_file(),
                                    reason=f"no HARL checkout at {CHECKOUT} (set HARL_DIR)")

# HARL's stdout (examples/train.py, MAPPO, pettingzoo_mpe), cut from docs/bench/harl_mappo_mpe/seed0.log (the FPS
# lines' common start shortened to {E} here, only to keep the lines short)
E = "Env pettingzoo_mpe Task simple_spread_v3-discrete Algo mappo Exp bench"
HARL_LOG = f"""choose to use cpu...
error: XDG_RUNTIME_DIR is invalid or not set in the environment.
share_observation_space:  [Box(-inf, inf, (54,), float32), Box(-inf, inf, (54,), float32)]
observation_space:  [Box(-inf, inf, (18,), float32), Box(-inf, inf, (18,), float32), Box(-inf, inf, (18,), float32)]
action_space:  [Discrete(5), Discrete(5), Discrete(5)]
start running
{E} updates 5/15 episodes, total num timesteps 4000/12000, FPS 181.
Average step reward is -3.200974225997925.
Some episodes done, average episode reward is -79.56845417198147.

{E} updates 10/15 episodes, total num timesteps 8000/12000, FPS 171.
Average step reward is -2.894773244857788.
Some episodes done, average episode reward is -73.59521487215889.

{E} updates 15/15 episodes, total num timesteps 12000/12000, FPS 161.
Average step reward is -2.9179482460021973.
Some episodes done, average episode reward is -71.74788370434655.

"""


def test_harl_log_parses_each_print_and_stamps_returns_with_its_frames():
    parsed = bench.parse_harl_log(HARL_LOG)
    assert parsed["prints"] == [(5, 4000, 181), (10, 8000, 171), (15, 12000, 161)]
    assert parsed["returns"] == [(4000, -79.56845417198147), (8000, -73.59521487215889), (12000, -71.74788370434655)]


def test_harl_summary_takes_the_last_print_as_the_cumulative_speed():
    s = bench.harl_summary(bench.parse_harl_log(HARL_LOG))
    assert (s["frames"], s["fps_logged"], s["fps_loop"]) == (12000, 161.0, 161.0)
    assert s["loop_s"] == pytest.approx(12000 / 161)
    assert s["fps_logged_prints"] == [181, 171, 161]
    assert (s["return_first"], s["return_final"]) == (-79.56845417198147, -71.74788370434655)
    assert s["curve"][-1] == [12000, -71.74788370434655]


def test_a_crash_before_the_first_print_has_no_summary_and_odd_numbers_parse():
    assert bench.harl_summary(bench.parse_harl_log(HARL_LOG.split("start running")[0] + "Traceback ...")) is None
    odd = HARL_LOG.replace("-79.56845417198147.", "-1.5e-05.").replace("-73.59521487215889.", "nan.")
    rets = [r for _, r in bench.parse_harl_log(odd)["returns"]]
    assert rets[0] == -1.5e-05 and math.isnan(rets[1])
    # the step-reward line is not an episode return; a return before any FPS print is not stamped
    assert bench.parse_harl_log("Some episodes done, average episode reward is -3.0.\n")["returns"] == []


def test_harl_command_is_the_recorded_one_with_budget_seed_and_results_folder():
    cmd = bench.harl_command("py", Path("/co"), 20_500, 3, Path("/w/results"))
    assert cmd[:2] == ["py", "/co/examples/train.py"]
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert len(cmd[2:]) == 2 * len(flags)  # flag, value pairs only (HARL's parser reads them so)
    assert flags == {
        "--algo": "mappo", "--env": "pettingzoo_mpe", "--exp_name": "bench", "--scenario": "simple_spread_v3",
        "--continuous_actions": "False", "--n_rollout_threads": "4", "--episode_length": "200",
        "--num_env_steps": "20000", "--hidden_sizes": "[128,128]", "--ppo_epoch": "5", "--actor_num_mini_batch": "1",
        "--critic_epoch": "5", "--critic_num_mini_batch": "1", "--cuda": "False", "--seed": "3",
        "--seed_specify": "True", "--use_eval": "False", "--log_dir": "/w/results"}


@given(st.integers(1, 10_000_000))
def test_whole_frames_are_whole_updates_of_800(frames):
    out = bench.whole_frames(frames)
    assert out % 800 == 0 and out >= 800
    assert out <= frames or out == 800
    assert frames - out < 800 or frames < 800


def test_marlopt_side_composes_to_harls_settings():
    from marlopt.cli import compose
    from marlopt.config import to_objects

    args = bench.parse_args(["--frames", "20500", "--seed", "7", "--override", "algo.ppo_epochs=6"])
    ovr = bench.full_overrides(args)
    cfg = to_objects(compose(ovr))
    assert (cfg.n_envs, cfg.rollout_length, cfg.seed, cfg.total_steps) == (4, 200, 7, 20_000)
    assert (cfg.model.hidden_sizes, cfg.model.recurrent) == ([128, 128], False)
    assert (cfg.algo.ppo_epochs, cfg.algo.num_minibatches) == (6, 1)  # --override wins over the settings
    assert (cfg.env.name, cfg.env.map_name, cfg.env.continuous) == ("mpe", "simple_spread", False)
    assert cfg.env.options["max_cycles"] == 25
    assert cfg.eval_interval == 0 and cfg.eval_episodes == 1 and cfg.save_interval > cfg.total_steps
    assert cfg.log_interval == 1  # a row per iteration: block_means' 5 rows are HARL's 5 updates
    base = bench.full_overrides(bench.parse_args(["--frames", "20500"]))
    assert to_objects(compose(base)).algo.ppo_epochs == 5


def _rows(returns, fps):
    return [{"step": 800 * (i + 1), "time/fps": f, "train/return_mean": r}
            for i, (r, f) in enumerate(zip(returns, fps))]


def test_marlopt_summary_is_the_median_fps_and_returns_in_harls_print_blocks():
    nan = float("nan")
    rows = _rows([-80, -70, nan, -60, -50, -40, -40, -40, -40, -40, -10], [100, 300, 200, 250, 150] * 2 + [999])
    rows.insert(3, {"step": 2400, "eval/return_mean": 5.0})  # not a training row
    s = bench.marlopt_summary(rows)
    assert s["fps_logged"] == 200  # median of the 11 training rows
    assert s["curve"] == [[4000, -65.0], [8000, -40.0]]  # NaN skipped; the 11th row starts an unfinished block
    assert (s["return_first"], s["return_final"]) == (-65.0, -40.0)
    assert bench.marlopt_summary([])["fps_logged"] is None


def _run(name, rep, fps, wall, rss, **kw):
    return {"name": name, "repeat": rep, "seed": rep, "frames": 8000, "fps_logged": fps, "fps_loop": fps,
            "fps_wall": 8000 / wall, "wall_s": wall, "peak_rss_mib": rss, "peak_pss_mib": rss, "peak_processes": 5,
            "return_first": -80.0, "return_final": -60.0, **kw}


def test_summary_ratios_per_pair_and_median_and_the_table():
    runs = [_run("harl", 0, 100.0, 80.0, 1000.0), _run("marlopt", 0, 400.0, 20.0, 500.0),
            _run("marlopt", 1, 300.0, 27.0, 600.0), _run("harl", 1, 150.0, 54.0, 1000.0),
            _run("harl", 2, 100.0, 80.0, 1000.0), {"name": "marlopt", "repeat": 2, "returncode": 1, "error": "boom"}]
    s = bench.summarise(runs)
    assert s["pairs"] == 2
    assert s["ratios"]["fps (logged)"] == {"per_pair": [4.0, 2.0], "median": 3.0}
    assert s["ratios"]["peak RSS"]["median"] == pytest.approx(0.55)
    assert s["ratios"]["wall s"]["per_pair"] == [0.25, 0.5]
    md = bench.markdown({"task": "t", "patch": "p", "harl_head": "abc", "runs": runs, "summary": s})
    assert "| fps (logged) | 4.00, 2.00 | 3.00 |" in md and "FAILED (rc 1)" in md
    assert all(line.count("|") == len(bench.RUN_COLUMNS) + 1 for line in md.splitlines() if line.startswith("| harl |"))


def test_vs_harl_routes_to_this_script_and_jaxmarl_stays(capsys):
    import benchmark

    assert benchmark.main(["--vs", "harl", "--frames", "20500", "--seed", "2", "--print-commands"]) == 0
    out = capsys.readouterr().out
    assert "train.py --algo mappo --env pettingzoo_mpe" in out and "--num_env_steps 20000 --seed 2" in out
    assert "marlopt.train algo=mappo env=mpe map=simple_spread seed=2" in out and "total_steps=20000" in out
    assert benchmark.main(["--vs", "benchmarl"]) == 2
    assert "--vs takes jaxmarl" in capsys.readouterr().err


def test_patch_file_edits_only_the_whitelist_and_reset():
    text = bench.PATCH.read_text()
    files = sorted({line.split()[1] for line in text.splitlines() if line.startswith(("--- ", "+++ "))})
    assert files == ["a/harl/envs/pettingzoo_mpe/pettingzoo_mpe_env.py", "a/harl/utils/envs_tools.py",
                     "b/harl/envs/pettingzoo_mpe/pettingzoo_mpe_env.py", "b/harl/utils/envs_tools.py"]
    lines = text.splitlines()
    removed = [line for line in lines if line.startswith("-") and not line.startswith("---")]
    added = [line[1:].strip() for line in lines if line.startswith("+") and not line.startswith("+++")]
    assert removed == ["-        obs = self.unwrap(self.env.reset(seed=self._seed))"]
    assert added[0].startswith("obs, _ = self.env.reset(seed=self._seed)") and added[1:] == [
        "obs = self.unwrap(obs)", '"simple_spread_v3",']


@needs_checkout
def test_patch_applies_once_and_is_idempotent(tmp_path):
    co = tmp_path / "HARL"
    for rel in ("harl/utils/envs_tools.py", "harl/envs/pettingzoo_mpe/pettingzoo_mpe_env.py"):
        (co / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(CHECKOUT / rel, co / rel)
    subprocess.run(["git", "apply", "--reverse", str(bench.PATCH)], cwd=co, capture_output=True, check=False)
    tools = co / "harl/utils/envs_tools.py"
    assert '"simple_spread_v3"' not in tools.read_text()
    assert bench.apply_patch(co) == 0 and tools.read_text().count('"simple_spread_v3"') == 1
    assert bench.apply_patch(co) == 0 and tools.read_text().count('"simple_spread_v3"') == 1  # unchanged


def test_a_budget_below_harls_first_log_line_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--frames", "1600"])
    assert "at least 4000" in capsys.readouterr().err
    assert bench.parse_args(["--frames", "4000"]).frames == 4000
