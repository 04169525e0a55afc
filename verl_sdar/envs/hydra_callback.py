"""Hydra callback for the env recipes: points verl at the packaged agent-loop config.

verl's agent-loop workers (Ray actors) only know agent loops registered in their own process or
listed in ``actor_rollout_ref.rollout.agent.agent_loop_config_path``. verl-sdar's plugin does not
import the env loops, so the recipes name this file; relative paths are fragile across Ray
workers, hence the callback writes the absolute path of the packaged
``verl_sdar/envs/agent_loops.yaml`` when the key is unset or ``pkg``, and makes the recipe's loop
(``alfworld``, ``search`` or ``webshop``) the default agent loop::

    hydra:
      callbacks:
        verl_sdar_agent_loop:
          _target_: verl_sdar.envs.hydra_callback.AgentLoopCallback
          default_agent_loop: search
"""

from __future__ import annotations

import os
from omegaconf import DictConfig, OmegaConf

from verl_sdar.launch import LaunchCallback

AGENT_LOOPS_YAML = os.path.join(os.path.dirname(os.path.abspath(__file__)), "agent_loops.yaml")
AGENT_LOOPS = [
    {"name": "alfworld", "_target_": "verl_sdar.envs.alfworld.agent_loop.AlfworldAgentLoop"},
    {"name": "search", "_target_": "verl_sdar.envs.search.agent_loop.SearchAgentLoop"},
    {"name": "webshop", "_target_": "verl_sdar.envs.webshop.agent_loop.WebShopAgentLoop"},
    {"name": "vault", "_target_": "verl_sdar.envs.vault.agent_loop.VaultAgentLoop"},
]
NAMES = tuple(loop["name"] for loop in AGENT_LOOPS)


def agent_loops_yaml() -> str:
    """The packaged file; if an install left it out (not in package_data), an equivalent temp file."""
    if os.path.isfile(AGENT_LOOPS_YAML):
        return AGENT_LOOPS_YAML
    import tempfile

    path = os.path.join(tempfile.gettempdir(), "verl_sdar_agent_loops.yaml")
    OmegaConf.save(OmegaConf.create(AGENT_LOOPS), path)
    return path


def apply_agent_loop_defaults(config: DictConfig, default_agent_loop: str) -> list[str]:
    """Point verl at the packaged agent-loop file (when the key is unset or ``pkg``) and make
    ``default_agent_loop`` the default loop; returns one line per change."""
    if default_agent_loop not in NAMES:
        raise ValueError(f"default_agent_loop must be one of {NAMES}, got {default_agent_loop!r}")
    changes = []
    key = "actor_rollout_ref.rollout.agent.agent_loop_config_path"
    if OmegaConf.select(config, key) in (None, "", "pkg"):
        OmegaConf.update(config, key, agent_loops_yaml(), merge=False, force_add=True)
        changes.append(f"{key} -> {OmegaConf.select(config, key)}")
    key = "actor_rollout_ref.rollout.agent.default_agent_loop"
    if OmegaConf.select(config, key) != default_agent_loop:
        OmegaConf.update(config, key, default_agent_loop, merge=False, force_add=True)
        changes.append(f"{key} -> {default_agent_loop}")
    return changes


class AgentLoopCallback(LaunchCallback):
    """:func:`apply_agent_loop_defaults` as a Hydra callback (single runs and ``--multirun``)."""

    label = "verl-sdar agent loop"

    def __init__(self, default_agent_loop: str = "alfworld") -> None:
        if default_agent_loop not in NAMES:
            raise ValueError(f"default_agent_loop must be one of {NAMES}, got {default_agent_loop!r}")
        self.default_agent_loop = default_agent_loop

    def edit(self, config: DictConfig) -> list[str]:
        return apply_agent_loop_defaults(config, self.default_agent_loop)
