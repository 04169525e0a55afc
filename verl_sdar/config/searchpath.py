"""Make plain ``algorithm=sdar`` compose with verl's ``main_ppo`` (no ``+`` needed).

Hydra only accepts ``group=option`` for groups already in the primary config's defaults list, and
verl's ``ppo_trainer.yaml`` has no ``algorithm`` entry. We therefore put, ahead of verl's config
directory, a generated copy of the *installed* verl's ``ppo_trainer.yaml`` whose defaults list gains
one line after ``_self_``::

    - optional algorithm: null

and a ``hydra.callbacks`` entry that fills in the CPU settings when ``trainer.device=cpu``
(``verl_sdar.cpu.defaults.CPUDefaultsCallback``; it changes nothing on other devices).
``optional ... null`` selects nothing and ``hydra.*`` is not part of the job's config, so without
``algorithm=...`` the composed config is exactly stock verl's. The copy is regenerated whenever
the installed file changes (its hash is in the folder name); nothing of verl is stored in this
repository.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import tempfile
from pathlib import Path

PRIMARY_CONFIG = "ppo_trainer.yaml"
INSERTED_LINE = "optional algorithm: null"
CPU_CALLBACK = """
hydra:
  callbacks:
    verl_sdar_cpu_defaults:
      _target_: verl_sdar.cpu.defaults.CPUDefaultsCallback
"""
_SELF_LINE = re.compile(r"^(\s*)- _self_\s*$")


class VerlConfigChanged(RuntimeError):
    """verl's primary config no longer has the shape this plugin expects."""


def verl_config_dir() -> Path:
    """Folder of the installed verl's trainer configs, found without importing verl."""
    spec = importlib.util.find_spec("verl")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("verl is not installed; pip install verl-sdar brings the pinned version")
    return Path(list(spec.submodule_search_locations)[0]) / "trainer" / "config"


def add_algorithm_group(text: str) -> str:
    """Return ``text`` (a primary config) with ``- optional algorithm: null`` after ``- _self_``
    and the CPU-defaults Hydra callback."""
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if _SELF_LINE.match(line)]
    if len(hits) != 1:
        raise VerlConfigChanged(
            f"expected exactly one '- _self_' line in verl's {PRIMARY_CONFIG}, found {len(hits)}; "
            "this verl version is not supported by verl-sdar"
        )
    if any(re.match(r"^\s*- (optional )?algorithm\s*:", line) for line in lines):
        raise VerlConfigChanged(f"verl's {PRIMARY_CONFIG} already has an 'algorithm' defaults entry")
    if any(line.startswith("hydra:") for line in lines):
        raise VerlConfigChanged(f"verl's {PRIMARY_CONFIG} now has a top-level 'hydra' key")
    indent = _SELF_LINE.match(lines[hits[0]]).group(1)
    lines.insert(hits[0] + 1, f"{indent}- {INSERTED_LINE}\n")
    return "".join(lines).rstrip("\n") + "\n" + CPU_CALLBACK


def _cache_root() -> Path:
    explicit = os.environ.get("VERL_SDAR_CACHE")
    candidates = [Path(explicit)] if explicit else []
    candidates += [Path.home() / ".cache" / "verl_sdar", Path(tempfile.gettempdir()) / "verl_sdar"]
    for root in candidates:
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK):
                return root
        except OSError:
            continue
    raise OSError(f"no writable cache folder for verl-sdar among {[str(c) for c in candidates]}")


def shadow_config_dir() -> Path:
    """Folder holding the generated primary config (created on first use, atomically)."""
    source = (verl_config_dir() / PRIMARY_CONFIG).read_text(encoding="utf-8")
    digest = hashlib.sha256(source.encode()).hexdigest()[:16]
    folder = _cache_root() / f"hydra-shadow-{digest}"
    target = folder / PRIMARY_CONFIG
    if not target.exists():
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(add_algorithm_group(source))
        os.replace(tmp, target)
    return folder
