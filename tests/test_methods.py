"""The method registry: every entry has its algorithm YAML, a docs row and a recipe, and the loss,
trainer and config read it (no method names compared elsewhere)."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from verl_sdar.config import OBJECTIVES, SDARConfig
from verl_sdar.methods import METHODS, OBJECTIVES as OBJECTIVE_REGISTRY, Method, Objective, register_method

REPO = Path(__file__).resolve().parents[1]
METHOD_DOC = REPO / "docs" / "method.md"


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_its_yaml_with_its_defaults(name):
    method = METHODS[name]
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[f"algorithm={name}"])
    sdar = OmegaConf.to_container(cfg.sdar, resolve=True)
    assert sdar["objective"] == method.objective
    flat = _flat(sdar)
    for key, value in method.defaults.items():
        assert flat[key] == value, f"algorithm={name}: sdar.{key} is {flat[key]!r} in the YAML, {value!r} registered"
    SDARConfig.from_config(cfg)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_a_docs_row_and_a_recipe(name):
    rows = re.findall(r"^\| `([a-z_0-9]+)` \|", METHOD_DOC.read_text(), flags=re.MULTILINE)
    assert name in rows, f"docs/method.md has no table row for method `{name}`"
    selects = re.compile(rf"^\s*- algorithm: {name}\s*$", re.M)
    recipes = [p for p in (REPO / "recipes").rglob("*.yaml") if selects.search(p.read_text())]
    assert recipes, f"no recipe selects algorithm: {name}"


def test_objective_names_come_from_the_registry():
    assert OBJECTIVES == tuple(OBJECTIVE_REGISTRY)
    for objective in OBJECTIVE_REGISTRY.values():
        assert isinstance(objective, Objective)
        # an objective that reads teacher log-probs must run the teacher pass
        fields = objective.loss_fields + objective.advantage_fields
        assert objective.needs_teacher == ("teacher_log_probs" in fields)


def test_entropy_gates_add_the_entropy_field():
    sdar = SDARConfig.from_dict({"objective": "sdar", "gate": "soft_or"})
    assert sdar.objective_spec.row_fields(sdar) == ("teacher_log_probs", "entropy")
    sdar = SDARConfig.from_dict({"objective": "skill_sd"})
    assert sdar.objective_spec.row_fields(sdar) == ("teacher_log_probs", "old_log_probs")
    assert not SDARConfig.from_dict({"objective": "rlsd"}).adds_loss_term
    assert not SDARConfig.from_dict({"objective": "none"}).needs_teacher


def test_registering_twice_or_with_an_unknown_objective_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_method(Method("sdar", "sdar", "again"))
    with pytest.raises(ValueError, match="unknown objective"):
        register_method(Method("new", "nope", "x"))
