"""Composition with real Hydra and real verl: `algorithm=...` groups, stock config, bad values."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from verl_sdar.config import OBJECTIVES, SDARConfig, SDARConfigError

REPO = Path(__file__).resolve().parents[1]
VERL_CONFIG_MODULE = "verl.trainer.config"
GROUPS = {
    "sdar": dict(objective="sdar", coef=0.01, beta=5.0, gate="gap"),
    "grpo": dict(objective="none"),
    "grpo_opsd": dict(objective="sdar", coef=0.01, beta=0.0, gate="constant"),
    "opsd": dict(objective="opsd", coef=0.01, beta=5.0, gate="gap"),
    "opsd_rkl": dict(objective="opsd_rkl", coef=1.0),
    "rlsd": dict(objective="rlsd"),
    "skill_sd": dict(objective="skill_sd", coef=0.001),
}


def composed(*overrides: str):
    with initialize_config_module(VERL_CONFIG_MODULE, version_base=None):
        return compose("ppo_trainer", overrides=list(overrides))


def test_algorithm_sdar_composes_without_plus_and_selects_the_sdar_trainer():
    import verl  # noqa: F401  (loads the plugin through its entry point)
    from verl.trainer.ppo.v1 import get_trainer_cls

    from verl_sdar.trainer import SDARTrainer

    cfg = composed("algorithm=sdar")
    assert cfg.trainer.v1.trainer_mode == "sdar"
    assert get_trainer_cls(cfg.trainer.v1.trainer_mode) is SDARTrainer
    sdar = SDARConfig.from_config(cfg)
    assert (sdar.objective, sdar.coef, sdar.beta, sdar.gate) == ("sdar", 0.01, 5.0, "gap")
    assert sdar.privileged.key == "privileged"
    # the paper's GRPO settings come with it
    assert cfg.algorithm.adv_estimator == "grpo"
    actor = cfg.actor_rollout_ref.actor
    assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type, actor.clip_ratio) == (
        True,
        0.01,
        "low_var_kl",
        0.2,
    )
    # verl's own dataclass still accepts the algorithm block (no stray keys under `algorithm`)
    from verl.utils.config import omega_conf_to_dataclass

    omega_conf_to_dataclass(cfg.algorithm)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_each_algorithm_group_composes_and_validates(group):
    cfg = composed(f"algorithm={group}")
    sdar = SDARConfig.from_config(cfg)
    for key, value in GROUPS[group].items():
        assert getattr(sdar, key) == value, key
    assert sdar.objective in OBJECTIVES


def test_command_line_overrides_apply_after_the_group():
    sdar = SDARConfig.from_config(composed("algorithm=sdar", "sdar.beta=1.0", "sdar.gate=soft_or"))
    assert (sdar.beta, sdar.gate) == (1.0, "soft_or")


def test_without_algorithm_the_config_is_stock_verl(monkeypatch):
    ours = OmegaConf.to_container(composed(), resolve=False)
    from hydra_plugins.verl_sdar_searchpath import VerlSdarSearchPathPlugin

    monkeypatch.setattr(VerlSdarSearchPathPlugin, "manipulate_search_path", lambda self, sp: None)
    stock = OmegaConf.to_container(composed(), resolve=False)
    assert "sdar" not in ours
    assert ours == stock
    with pytest.raises(Exception, match="algorithm"):
        composed("algorithm=sdar")  # without the plugin, plain algorithm=sdar cannot compose


@pytest.mark.parametrize(
    "override, key",
    [
        ("sdar.gate=nope", "sdar.gate"),
        ("+sdar.divergence=kl", "sdar.divergence"),
        ("sdar.coef=-0.1", "sdar.coef"),
        ("sdar.beta=-1", "sdar.beta"),
        ("sdar.privileged.key=''", "sdar.privileged.key"),
        ("sdar.objective=ppo", "sdar.objective"),
        ("+sdar.typo=1", "sdar.typo"),
        ("sdar.rlsd.mix=1.5", "sdar.rlsd.mix"),
        ("trainer.v1.trainer_mode=sync", "trainer.v1.trainer_mode"),
        ("sdar.privileged.placement=middle", "sdar.privileged.placement"),
        ("sdar.teacher.max_prompt_length=0", "sdar.teacher.max_prompt_length"),
        ("sdar.teacher.source=oracle", "sdar.teacher.source"),
        # the reference teacher needs verl's reference policy, which only the KL terms build
        ("sdar.teacher.source=reference actor_rollout_ref.actor.use_kl_loss=false", "sdar.teacher.source"),
        ("sdar.privileged.source=db", "sdar.privileged.source"),
        ("sdar.privileged.source=skills", "sdar.skills.library"),
        ("sdar.privileged.source=skills sdar.skills.library=/nonexistent/lib", "sdar.skills.library"),
        ("sdar.privileged.source=skills sdar.skills.library=envs/codeword/skills sdar.skills.strategy=best",
         "sdar.skills.strategy"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_key(override, key, monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    group = "algorithm=rlsd" if "rlsd" in override else "algorithm=sdar"
    cfg = composed(group, *override.split())
    with pytest.raises(SDARConfigError, match=key.replace(".", r"\.")):
        SDARConfig.from_config(cfg)


def test_opsd_keeps_verls_kl_and_sets_the_entropy_bonus_the_paper_uses():
    from verl.workers.config import ActorConfig

    stock = composed().actor_rollout_ref.actor.entropy_coeff
    for group in GROUPS:
        actor = composed(f"algorithm={group}").actor_rollout_ref.actor
        assert actor.entropy_coeff == (0.001 if group == "opsd" else stock), group
        assert (actor.use_kl_loss, actor.kl_loss_coef, actor.kl_loss_type) == (True, 0.01, "low_var_kl"), group
    # `entropy_coeff` is verl's own actor key (its dataclass reads it; ppo_loss subtracts coeff * entropy)
    assert "entropy_coeff" in {f.name for f in dataclasses.fields(ActorConfig)}
    cfg = composed("algorithm=opsd", "+sdar.divergence=jsd")
    sdar = SDARConfig.from_config(cfg)
    assert (sdar.objective, sdar.divergence, sdar.objective_spec.uses_gate) == ("opsd", "jsd", True)


def test_skill_library_source_validates_and_loads_the_library(monkeypatch):
    monkeypatch.chdir(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    cfg = composed("algorithm=sdar", "sdar.privileged.source=skills", "sdar.skills.library=envs/codeword/skills",
                   "sdar.skills.strategy=ucb")
    sdar = SDARConfig.from_config(cfg)
    assert (sdar.privileged.source, sdar.skills.strategy) == ("skills", "ucb")


def test_teacher_source_defaults_to_self_and_accepts_reference():
    assert SDARConfig.from_config(composed("algorithm=sdar")).teacher.source == "self"
    sdar = SDARConfig.from_config(composed("algorithm=sdar", "sdar.teacher.source=reference"))
    assert sdar.teacher.source == "reference"
    # without a teacher pass (Skill-GRPO: privileged text in the student's prompt) no reference is needed
    SDARConfig.from_config(composed("algorithm=skill_grpo", "sdar.teacher.source=reference",
                                    "actor_rollout_ref.actor.use_kl_loss=false"))


def test_sdar_trainer_without_sdar_settings_is_an_error():
    with pytest.raises(SDARConfigError, match="needs the top-level 'sdar' settings"):
        SDARConfig.from_config(composed("trainer.v1.trainer_mode=sdar"))


@pytest.mark.parametrize(
    "command",
    [
        ["algorithm=sdar", "sdar.gate=nope"],
        # a recipe with callbacks of its own (CPU defaults): ours still runs and stops the job
        [f"--config-path={REPO / 'recipes' / 'cpu'}", "--config-name=codeword_sdar", "sdar.gate=nope"],
    ],
    ids=["plain", "recipe"],
)
def test_main_ppo_rejects_a_bad_value_before_starting_ray(tmp_path, command):
    """The real entry point: the Hydra callback stops the job at start-up, naming the key (Hydra
    turns a callback's ordinary exception into a warning and runs on, so the callback exits)."""
    env = dict(os.environ, HYDRA_FULL_ERROR="1", RAY_ADDRESS="", VERL_SDAR_WORK=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", *command, f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "verl-sdar: invalid configuration: sdar.gate: unknown gate 'nope'" in proc.stderr, proc.stderr[-3000:]
    assert "Callback ValidateOnJobStart.on_job_start raised" not in proc.stderr  # not swallowed as a warning
    assert "ray init kwargs" not in proc.stdout  # failed before verl started Ray
