"""The tuned configs carry the papers' tables: equal settings where a table says so, the value clip
equal to a tuned policy clip, the papers' training lengths, and old algorithm names that still work
(docs/reproducing.md, docs/algorithms/*.md)."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from marlopt import cli
from marlopt.cli import CONFIG_DIR, choices, compose, map_envs
from tests.helpers import make_config

TUNED = CONFIG_DIR / "tuned"


def _clip(algo) -> float | None:
    """The policy clip of an on-policy algorithm: ``algo.clip`` (sequential rules) or the ratio
    objective's ``clip``."""
    clip = getattr(algo, "clip", None)
    objective = getattr(algo, "objective", None)
    if clip is None and isinstance(objective, dict):
        clip = objective.get("clip")
    return clip


# -- 1. HARL Table 6 (MPE) is common to HAPPO, HATRPO, HAA2C and MAPPO ---------------------------------

@pytest.mark.parametrize("other", ["happo", "hatrpo", "haa2c"])
@pytest.mark.parametrize("map_name", ["simple_spread", "simple_reference", "simple_speaker_listener"])
def test_mappo_and_the_harl_algorithms_share_harl_table6_on_mpe(other, map_name):
    mappo = make_config("algo=mappo", "env=mpe", f"map={map_name}")
    harl = make_config(f"algo={other}", "env=mpe", f"map={map_name}")
    # Table 6: batch 4000, MLP [128, 128], lr 5e-4 (actor and critic), 5 epochs, 1 minibatch,
    # clip 0.2, entropy 0.01, gamma 0.99
    for cfg in (mappo, harl):
        assert cfg.n_envs * cfg.rollout_length == 4000
        assert cfg.model.recurrent is False and list(cfg.model.hidden_sizes) == [128, 128]
    assert (mappo.n_envs, mappo.rollout_length) == (harl.n_envs, harl.rollout_length)
    for key in ("recurrent", "hidden_sizes", "rnn_hidden", "feature_norm", "layer_norm", "head_gain"):
        assert getattr(mappo.model, key) == getattr(harl.model, key), key
    for key in ("lr", "critic_lr", "ppo_epochs", "num_minibatches", "entropy_coef", "gamma", "gae_lambda",
                "value_clip", "huber_delta", "max_grad_norm", "use_valuenorm"):
        assert getattr(mappo.algo, key) == getattr(harl.algo, key), key
    assert _clip(mappo.algo) == 0.2
    if other == "happo":
        assert _clip(harl.algo) == _clip(mappo.algo)


@pytest.mark.parametrize("env_map", [("env=mpe", "map=simple_spread"), ("env=smax", "map=3m")], ids=["mpe", "smax"])
@pytest.mark.parametrize("algo", ["maspo", "mars", "mars_msym", "mars_addsym", "mappo_asym", "maspo_asym"])
def test_the_mars_family_runs_mappos_settings(algo, env_map):
    """The MARS paper varies only the ratio objective (Sec. 4.1): on MPE (HARL Table 6) and SMAX
    (JaxMARL's MAPPO) each of its algorithms gets MAPPO's tuned settings, so that
    ``-m algo=mappo,maspo,mars`` stays a like-for-like sweep."""
    mappo = make_config("algo=mappo", *env_map)
    other = make_config(f"algo={algo}", *env_map)
    assert (other.n_envs, other.rollout_length, other.model, other.env) == \
        (mappo.n_envs, mappo.rollout_length, mappo.model, mappo.env)
    for key in ("lr", "critic_lr", "ppo_epochs", "num_minibatches", "entropy_coef", "gamma", "gae_lambda",
                "value_clip", "huber_delta", "use_valuenorm", "value_loss_coef", "max_grad_norm"):
        assert getattr(other.algo, key) == getattr(mappo.algo, key), key


# -- 2. a tuned policy clip also clips the value loss (MAPPO's and HARL's clip_param) ---------------

def _maps_of(*envs: str) -> list[tuple[str, str]]:
    return [(env, m) for m in choices("map") for env in map_envs(m) if env in envs]


@pytest.mark.parametrize("env, map_name", _maps_of("smac", "smacv2"))
def test_every_tuned_smac_mappo_map_clips_the_value_loss_like_the_policy(env, map_name):
    cfg = make_config("algo=mappo", f"env={env}", f"map={map_name}")
    assert cfg.algo.value_clip == _clip(cfg.algo)


def test_every_tuned_file_that_sets_a_policy_clip_sets_the_value_clip_to_it():
    checked = []
    for path in sorted(TUNED.rglob("*.yaml")):
        algo = OmegaConf.load(path).get("algo") or {}
        clip = algo.get("clip", (algo.get("objective") or {}).get("clip"))
        if clip is None:
            continue
        checked.append(path.name)
        assert algo.get("value_clip") == clip, f"{path.relative_to(CONFIG_DIR)}: clip {clip}, value_clip " \
                                               f"{algo.get('value_clip')}"
    assert "smac_5m_vs_6m_mappo.yaml" in checked and "smac_3s_vs_5z_mappo.yaml" in checked


# -- 3. the papers' training lengths ---------------------------------------------------------------

@pytest.mark.parametrize(
    "algo, env, map_name, frames",
    [
        ("mappo", "smac", "3m", 1e7),  # MAPPO reference scripts (1e7 on every map)
        ("mappo", "smac", "5m_vs_6m", 1e7),  # HARL Table 1, hard
        ("happo", "smac", "8m_vs_9m", 1e7),
        ("hatrpo", "smac", "25m", 1e7),
        ("hatrpo", "smac", "MMM2", 2e7),  # HARL Table 1, super hard
        ("happo", "smac", "corridor", 2e7),
        ("mappo", "smac", "27m_vs_30m", 2e7),
        ("happo", "smac", "6h_vs_8z", 4e7),
        ("mappo", "smac", "6h_vs_8z", 4e7),
        ("happo", "smacv2", "zerg_10_vs_11", 1e7),  # HARL Table 1, SMACv2
        ("hatrpo", "smacv2", "protoss_5_vs_5", 1e7),
        ("happo", "grf", "academy_counterattack_hard", 5e7),  # HARL Sec. 5.4
        ("happo", "grf", "academy_3_vs_1_with_keeper", 2.5e7),
        ("mappo", "grf", "academy_3_vs_1_with_keeper", 2.5e7),
    ],
)
def test_tuned_configs_train_as_long_as_the_papers(algo, env, map_name, frames):
    assert make_config(f"algo={algo}", f"env={env}", f"map={map_name}").total_steps == frames


HARL_TABLE1_SMAC = {"8m_vs_9m": 1e7, "25m": 1e7, "5m_vs_6m": 1e7, "3s5z": 1e7, "10m_vs_11m": 1e7, "MMM2": 2e7,
                    "3s5z_vs_3s6z": 2e7, "27m_vs_30m": 2e7, "corridor": 2e7, "6h_vs_8z": 4e7}


@pytest.mark.parametrize("map_name", sorted(HARL_TABLE1_SMAC))
def test_harl_table1_maps_train_every_algorithm_equally_long(map_name):
    lengths = {a: make_config(f"algo={a}", "env=smac", f"map={map_name}").total_steps
               for a in ("mappo", "happo", "hatrpo")}
    assert set(lengths.values()) == {HARL_TABLE1_SMAC[map_name]}, lengths


# -- 4. names that say what they are; old names keep working ---------------------------------------

RENAMED = {"mars_asym": "mars_addsym"}


def test_the_mars_variants_are_named_after_their_parameterisation():
    names = set(choices("algo"))
    assert {"mars", "mars_msym", "mars_addsym", "mappo_asym", "maspo_asym"} <= names
    addsym = make_config("algo=mars_addsym").algo.objective
    assert (addsym["rho_plus"], addsym["rho_minus"]) == (1.2, 0.8)  # 1 +- eps
    # mars: independent targets (one moves without the other); mars_msym: rho_minus = 1/rho_plus
    indep = make_config("algo=mars", "algo.objective.rho_plus=1.5").algo.objective
    assert (indep["rho_plus"], indep["rho_minus"]) == (1.5, pytest.approx(1 / 1.2))
    msym = make_config("algo=mars_msym", "algo.objective.rho_plus=1.5").algo.objective
    assert (msym["rho_plus"], msym["rho_minus"]) == (1.5, None)


@pytest.mark.parametrize("old, new", sorted(RENAMED.items()))
def test_an_old_name_composes_to_exactly_the_new_names_config_with_one_notice(old, new, capsys):
    cli._RENAME_NOTES.clear()
    old_cfg = OmegaConf.to_container(compose([f"algo={old}", "env=mpe"]))
    first = capsys.readouterr().err
    assert first.strip() == f"marlopt: note: algo={old} is now algo={new} (same settings)"
    new_cfg = OmegaConf.to_container(compose([f"algo={new}", "env=mpe"]))
    assert old_cfg == new_cfg and old_cfg["algo"]["name"] == new
    assert make_config(f"algo={old}") == make_config(f"algo={new}")
    compose([f"algo={old}"])
    assert capsys.readouterr().err == ""  # printed once per process
    cli._RENAME_NOTES.clear()
    assert cli.apply_renames(["-m", f"algo=mappo,{old}", "seed=0,1"]) == ["-m", f"algo=mappo,{new}", "seed=0,1"]
    assert capsys.readouterr().err.count("note:") == 1


def test_an_old_name_composed_by_hydra_itself_is_accepted_and_names_its_successor():
    """Without the command line's swap (Hydra's own compose API) the old YAML still composes and types;
    ``algo.renamed_to`` says where it went."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from marlopt.config import register_configs, to_objects

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = to_objects(hydra_compose("config", overrides=["algo=mars_asym"]))
    assert cfg.algo.renamed_to == "mars_addsym" and cfg.algo.name == "mars_addsym"
    assert cfg.algo.objective == make_config("algo=mars_addsym").algo.objective


def test_every_old_name_points_at_an_existing_algorithm_and_usage_says_so():
    olds = {n: cli.renamed_to(n) for n in choices("algo") if cli.renamed_to(n) is not None}
    assert olds == RENAMED
    text = cli.usage()
    for old, new in olds.items():
        assert f"  {old} (old name of {new})" in text.splitlines()
        assert new in choices("algo")
