"""Helpers shared by the agent loops of ``verl_sdar.envs`` (config values, env settings, per-process
caches of expensive env resources)."""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


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


def locked_cache(build: Callable[..., T]) -> Callable[..., T]:
    """Decorator: one ``build(...)`` result per distinct arguments per process, built under a lock.

    For resources every agent loop of a worker shares and that are expensive to build (a BM25
    index, a product catalogue): agent loops are constructed concurrently, and each resource must be
    built once. The lock is held while building (a second caller waits for the first build). Calls
    naming the same arguments positionally or by keyword share one entry. The cache is the wrapper's
    ``cache`` attribute (a dict keyed by the bound arguments).
    """
    signature = inspect.signature(build)
    cache: dict[tuple, T] = {}
    lock = threading.Lock()

    @functools.wraps(build)
    def cached(*args: Any, **kwargs: Any) -> T:
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        key = tuple(bound.arguments.items())
        with lock:
            if key not in cache:
                cache[key] = build(*args, **kwargs)
            return cache[key]

    cached.cache = cache  # type: ignore[attr-defined]
    return cached
