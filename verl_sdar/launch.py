"""Edits to a composed ``main_ppo`` config made in the launching process, before Ray starts.

Each edit is a Hydra callback (listed under ``hydra.callbacks`` by the recipes, the ``algorithm=``
groups or the generated primary config) subclassing :class:`LaunchCallback`, which implements
``edit(config) -> list[str]`` (one line per change, for the log). The base class makes the edit
reach verl in both of Hydra's modes:

* a single run: ``on_run_start`` edits the config Hydra then hands to ``main_ppo``
  (``on_job_start`` would be too late: Hydra has already copied the job's config);
* ``--multirun``: Hydra composes every job afresh from its overrides after
  ``on_multirun_start``, so an edit of the sweep's base config would be lost. The base class
  applies the edit to a copy of the base config and records the difference as ``++key=value``
  overrides in ``hydra.overrides.hydra``, which Hydra puts in front of every job's own overrides
  (so a swept value still wins over an edit of the same key). After each job of a sweep, the
  Ray connection ``main_ppo`` opened is shut down: verl never does, and the next job would find
  the previous job's placement groups still holding the GPUs (its own fail with "Total available
  GPUs 0 is less than total desired").

:class:`DriverPathsCallback` is one such edit: it resolves the ``${oc.env:VERL_SDAR_*,default}``
interpolations of the recipes to absolute paths here, in the launching process. Left to verl,
they would be resolved inside its TaskRunner actor, which on a pre-started Ray cluster (or under
``ray job submit``) has neither the launching shell's environment nor its working directory.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict, read_write

_MISSING = object()


class LaunchCallback(Callback):
    """Base of verl-sdar's config edits in the launching process (see the module docstring)."""

    label = "verl-sdar"
    """Prefix of the printed change lines."""
    _sweep = False

    def edit(self, config: DictConfig) -> list[str]:
        """Edit ``config`` in place; return one human-readable line per change."""
        raise NotImplementedError

    def _report(self, changes: list[str]) -> None:
        for change in changes:
            print(f"[{self.label}] {change}", flush=True)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._report(self.edit(config))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        job = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        before = dict(_leaves(job))
        changes = self.edit(job)
        after = dict(_leaves(job))
        overrides = [f"~{key}" for key in before if key not in after]
        overrides += [f"++{key}={render_override(value)}" for key, value in after.items()
                      if before.get(key, _MISSING) != value]
        self._sweep = True
        if not overrides:
            return
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.hydra.extend(overrides)
        self._report([f"{change} (every job of the sweep)" for change in changes])

    def on_job_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self._sweep and "ray" in sys.modules:
            import ray

            if ray.is_initialized():
                ray.shutdown()


def _leaves(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(dotted key, raw value)`` of every leaf of a config (interpolations unresolved); a list is a leaf."""
    if isinstance(node, DictConfig):
        if node._is_none() or node._is_missing():
            yield prefix, node._value()
            return
        for key in node:
            yield from _leaves(node._get_node(key), f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, ListConfig):
        yield prefix, OmegaConf.to_container(node, resolve=False) if not node._is_none() else None
    else:
        yield prefix, node._value()


def render_override(value: Any) -> str:
    """``value`` in Hydra's override grammar (strings quoted, so paths and interpolations survive)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(render_override(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{render_override(v)}" for k, v in value.items()) + "}"
    text = str(value)
    if text == "???":
        return "'???'"
    if "\\'" in text or text.endswith("\\"):
        raise ValueError(f"cannot write {text!r} as a Hydra override (a backslash before a quote or at the end)")
    return "'" + text.replace("'", "\\'") + "'"


# ------------------------------------------------------------------ paths resolved in the launching process
_ENV_PATH = re.compile(r"\$\{oc\.env:(VERL_SDAR_[A-Z_]+)(?:,([^}]*))?\}")


def _absolute(match: re.Match) -> str:
    import os

    name, default = match.group(1), match.group(2)
    value = os.environ.get(name, default)
    if value is None:
        raise KeyError(f"environment variable {name} is not set and the config gives no default")
    return os.path.abspath(os.path.expanduser(value.strip().strip("'\"")))


def resolve_driver_paths(config: DictConfig) -> list[str]:
    """Replace every ``${oc.env:VERL_SDAR_*[,default]}`` in the config's string values by the
    absolute path it names here (the variable's value, else the default, against the working
    directory). Other interpolations in the same value (``${trainer.experiment_name}``) are kept."""
    changes = []
    for key, value in list(_leaves(config)):
        if isinstance(value, str) and _ENV_PATH.search(value):
            new = _ENV_PATH.sub(_absolute, value)
            OmegaConf.update(config, key, new, merge=False)
            changes.append(f"{key}: {value} -> {new}")
    return changes


class DriverPathsCallback(LaunchCallback):
    """:func:`resolve_driver_paths` as a Hydra callback (listed by every ``algorithm=`` group)."""

    label = "verl-sdar paths"

    def edit(self, config: DictConfig) -> list[str]:
        return resolve_driver_paths(config)
