"""Helpers shared by the agent loops of ``verl_sdar.envs`` (config values, env settings)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def plain(value: Any) -> Any:
    """OmegaConf containers and numpy scalars/arrays to plain Python."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if hasattr(value, "tolist") and not isinstance(value, (list, dict, str)):
        return value.tolist()
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    return value


def env_settings(defaults: Mapping[str, Any], trainer_config: Any, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """An agent loop's settings: ``defaults``, then the trainer config's top-level ``env`` block
    (verl-agent names), then the agent-loop config file's keys (``overrides``)."""
    env_cfg = plain(trainer_config.get("env", None)) if trainer_config is not None else None
    env_cfg = env_cfg or {}
    settings = dict(defaults)
    for key in defaults:
        if isinstance(defaults[key], dict) and isinstance(env_cfg.get(key), dict):
            settings[key] = {**defaults[key], **{k: v for k, v in env_cfg[key].items() if v is not None}}
        elif env_cfg.get(key) is not None:
            settings[key] = env_cfg[key]
    settings.update(overrides)
    return settings
