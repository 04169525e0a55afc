"""The attention implementation of the training workers on GPU: flash-attn when it is there, else sdpa.

verl 0.9.1 builds its actor, reference and critic models with ``attn_implementation`` taken from
``*.model.override_config.attn_implementation``, ``flash_attention_2`` when unset, and a worker
without the ``flash_attn`` package fails at start-up. ``flash-attn`` has no wheels on PyPI (only a
source distribution that needs the CUDA toolkit and a long build), so it cannot be part of the
``vllm`` extra. :class:`AttentionCallback` (listed by every ``algorithm=`` group) therefore keeps
verl's ``flash_attention_2`` when ``flash_attn`` imports in the launching process, and otherwise
sets ``sdpa`` (correct with verl's packed, padding-free batches; slower and heavier in memory for
long sequences) with a notice saying how to get flash-attn back. A value the user set is never
changed. On ``trainer.device=cpu`` the CPU defaults choose sdpa already (``verl_sdar.cpu.defaults``).

The check runs where the job is launched: on a Ray cluster whose workers have flash-attn but whose
launching machine does not, set ``actor_rollout_ref.model.override_config.attn_implementation=
flash_attention_2`` explicitly.
"""

from __future__ import annotations

import importlib.util

from omegaconf import DictConfig, OmegaConf

from .launch import LaunchCallback

KEYS = ("actor_rollout_ref.model.override_config.attn_implementation",
        "critic.model.override_config.attn_implementation")
FALLBACK = "sdpa"


def flash_attn_available() -> bool:
    """``flash_attn`` can be imported here (found on the path; not imported: it loads CUDA)."""
    return importlib.util.find_spec("flash_attn") is not None


def choose_attention(config: DictConfig, *, flash_attn: bool | None = None) -> list[str]:
    """Set ``sdpa`` on the keys the user left unset when flash-attn is missing; one line per change."""
    if OmegaConf.select(config, "trainer.device", default="cuda") == "cpu":
        return []
    if flash_attn if flash_attn is not None else flash_attn_available():
        return []
    changes = []
    for key in KEYS:
        if key.startswith("critic.") and OmegaConf.select(config, "critic") is None:
            continue
        if OmegaConf.select(config, key, default=None) is not None:
            continue
        OmegaConf.update(config, key, FALLBACK, merge=False, force_add=True)
        changes.append(
            f"{key}: unset (verl: flash_attention_2) -> {FALLBACK!r}: the flash_attn package is not installed "
            f"here; pip install flash-attn --no-build-isolation (a CUDA build) to use it"
        )
    return changes


class AttentionCallback(LaunchCallback):
    """:func:`choose_attention` as a Hydra callback."""

    label = "verl-sdar attention"

    def edit(self, config: DictConfig) -> list[str]:
        return choose_attention(config)
