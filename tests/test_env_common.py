"""Shared env plumbing: the packaged agent-loop config and the recipes' Hydra callback."""

import importlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_sdar.envs.common import env_settings, plain
from verl_sdar.envs.hydra_callback import AGENT_LOOPS, AGENT_LOOPS_YAML, AgentLoopCallback, apply_agent_loop_defaults


def test_packaged_agent_loop_file_lists_every_loop_and_each_target_imports():
    loops = OmegaConf.to_container(OmegaConf.load(AGENT_LOOPS_YAML))
    assert loops == AGENT_LOOPS
    for loop in loops:
        module, _, cls = loop["_target_"].rpartition(".")
        if loop["name"] == "alfworld":
            pytest.importorskip("alfworld")
        assert hasattr(importlib.import_module(module), cls), loop


@pytest.mark.parametrize("name", ["alfworld", "search", "webshop"])
def test_callback_points_verl_at_the_packaged_file_and_keeps_a_users_own(name):
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"agent": {"agent_loop_config_path": "pkg"}}}})
    AgentLoopCallback(default_agent_loop=name).on_run_start(config)
    agent = config.actor_rollout_ref.rollout.agent
    assert agent.default_agent_loop == name and Path(agent.agent_loop_config_path).is_absolute()
    agent.agent_loop_config_path = "/my/own.yaml"
    apply_agent_loop_defaults(config, name)
    assert agent.agent_loop_config_path == "/my/own.yaml"


def test_unknown_agent_loop_name_is_an_error():
    with pytest.raises(ValueError, match="default_agent_loop must be one of"):
        AgentLoopCallback(default_agent_loop="alfwrld")


def test_env_settings_layering():
    defaults = {"max_steps": 4, "retriever": {"url": None, "topk": 3}}
    trainer = OmegaConf.create({"env": {"max_steps": 6, "retriever": {"topk": 5}, "unrelated": 1}})
    assert env_settings(defaults, trainer, {"max_steps": 2}) == {"max_steps": 2, "retriever": {"url": None, "topk": 5}}
    assert env_settings(defaults, OmegaConf.create({}), {}) == defaults
    assert plain(OmegaConf.create({"a": [1]})) == {"a": [1]}
