"""Config edits in the launching process (verl_sdar.launch, verl_sdar.attention): single runs, sweeps, paths."""

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from verl_sdar.attention import choose_attention
from verl_sdar.launch import LaunchCallback, render_override, resolve_driver_paths

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", [
    None, True, False, 3, 0.25, "fsdp2", "/tmp/a b/it's.yaml", "${oc.env:X,.work}/ckpt/${trainer.experiment_name}",
    ["console", "file"], "a\\b", "???",
])
def test_rendered_overrides_parse_back_to_the_value(value):
    (override,) = OverridesParser.create().parse_overrides([f"++k={render_override(value)}"])
    assert override.value() == value


def test_paths_become_absolute_in_the_launching_process_and_keep_other_interpolations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VERL_SDAR_WORK", "rel/work")
    monkeypatch.delenv("VERL_SDAR_ROOT", raising=False)
    config = OmegaConf.create({
        "trainer": {"experiment_name": "x",
                    "default_local_dir": "${oc.env:VERL_SDAR_WORK,.work}/ckpt/${trainer.experiment_name}"},
        "data": {"train_files": "${oc.env:VERL_SDAR_ROOT,.}/data/train.parquet", "other": "${oc.env:HOME}"},
    })
    changes = resolve_driver_paths(config)
    assert len(changes) == 2
    assert config.trainer.default_local_dir == f"{tmp_path}/rel/work/ckpt/x"  # still interpolates the name
    assert OmegaConf.to_container(config)["trainer"]["default_local_dir"].endswith("/ckpt/${trainer.experiment_name}")
    assert config.data.train_files == f"{tmp_path}/data/train.parquet"
    assert OmegaConf.to_container(config)["data"]["other"] == "${oc.env:HOME}"  # not ours: left to verl


class _SetTwo(LaunchCallback):
    def edit(self, config):
        OmegaConf.update(config, "a.b", "x y", merge=False, force_add=True)
        OmegaConf.update(config, "c", 2, merge=False)
        return ["a.b", "c"]


def test_a_sweep_gets_the_edits_as_overrides_that_every_job_composes_with():
    master = OmegaConf.create({"c": 1, "d": [1, 2], "hydra": {"overrides": {"hydra": ["hydra.x=1"], "task": []}}})
    _SetTwo().on_multirun_start(master)
    assert sorted(master.hydra.overrides.hydra) == sorted(["hydra.x=1", "++a.b='x y'", "++c=2"])
    assert "a" not in master and master.c == 1  # the base config itself is left as it was
    # what Hydra does for each job: compose with those overrides (here: a recipe and its group)
    with initialize_config_dir(str(REPO / "recipes" / "cpu"), version_base=None):
        job = compose("codeword_sdar", overrides=["++sdar.skills.strategy='ucb'", "++trainer.nnodes=2"])
    assert job.sdar.skills.strategy == "ucb" and job.trainer.nnodes == 2


def test_attention_falls_back_to_sdpa_on_gpu_without_flash_attn_and_keeps_user_choices():
    config = OmegaConf.create({"trainer": {"device": "cuda"}, "critic": {"model": {"override_config": {}}},
                               "actor_rollout_ref": {"model": {"override_config": {}}}})
    assert choose_attention(config, flash_attn=True) == []
    assert config.actor_rollout_ref.model.override_config == {}
    changes = choose_attention(config, flash_attn=False)
    assert len(changes) == 2 and config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    config.actor_rollout_ref.model.override_config.attn_implementation = "eager"
    config.critic.model.override_config.attn_implementation = "flash_attention_2"
    assert choose_attention(config, flash_attn=False) == []  # explicit values stay
    cpu = OmegaConf.create({"trainer": {"device": "cpu"}, "actor_rollout_ref": {"model": {"override_config": {}}}})
    assert choose_attention(cpu, flash_attn=False) == []  # the CPU defaults own the CPU case


def test_every_algorithm_group_lists_the_launch_callbacks():
    with initialize_config_dir(str(REPO / "recipes" / "alfworld"), version_base=None):
        cfg = compose("sdar", return_hydra_config=True)
    targets = {c["_target_"] for c in cfg.hydra.callbacks.values()}
    assert {"verl_sdar.launch.DriverPathsCallback", "verl_sdar.attention.AttentionCallback",
            "verl_sdar.config.ValidateOnJobStart", "verl_sdar.envs.hydra_callback.AgentLoopCallback"} <= targets
    assert os.path.isabs(cfg.sdar.skills.library) or not cfg.sdar.skills.library.startswith(".")
