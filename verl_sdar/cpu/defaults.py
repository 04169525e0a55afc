"""Fill in the settings a ``main_ppo`` run needs on CPU, so that ``trainer.device=cpu`` is enough.

:func:`apply_cpu_defaults` edits a composed ``main_ppo`` config in place before Ray starts. A key is
changed only while it still holds verl 0.9.1's default (or is absent): a value the user set to
something else is kept. No environment variables are needed.

:class:`CPUDefaultsCallback` runs it as a Hydra callback::

    python -m verl.trainer.main_ppo trainer.device=cpu ... \
        +hydra.callbacks.cpu_defaults._target_=verl_sdar.cpu.defaults.CPUDefaultsCallback

It hooks ``on_run_start``: Hydra hands the task function a copy of the config made *before*
``on_job_start``, so edits made there would never reach ``main_ppo``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from verl_sdar.names import ROLLOUT_NAME

RAY_LOGICAL_CPUS = 32
"""Logical CPUs declared to Ray: verl's TransferQueue, agent-loop and reward actors each reserve one,
and with the real core count of a small machine the run waits forever for resources."""

_ABSENT = object()


@dataclass(frozen=True)
class _Default:
    key: str
    verl_default: Any
    """The value meaning "not set by the user" (``_ABSENT`` for keys verl's config lacks)."""
    value: Callable[[DictConfig], Any]
    reason: str


def _fake_gpus(config: DictConfig) -> int:
    """One fake Ray GPU per worker slot verl will ask for (trainer pool + separate pools)."""
    slots = config.trainer.n_gpus_per_node * config.trainer.nnodes
    rollout = config.actor_rollout_ref.rollout
    slots += (rollout.get("nnodes") or 0) * rollout.n_gpus_per_node
    reward_model = OmegaConf.select(config, "reward.reward_model", default=None)
    if reward_model is not None and reward_model.get("enable") and reward_model.get("enable_resource_pool"):
        slots += reward_model.n_gpus_per_node * reward_model.nnodes
    return slots


_ROLLOUT_BACKENDS_WITHOUT_CPU = ("vllm", "sglang", "trtllm")

# Applied in order: later entries see earlier changes (e.g. the fake-GPU count uses n_gpus_per_node).
_DEFAULTS: tuple[_Default, ...] = (
    _Default("trainer.n_gpus_per_node", 8, lambda c: 1, "one training worker process"),
    _Default("ray_kwargs.ray_init.num_cpus", None, lambda c: RAY_LOGICAL_CPUS, "logical CPUs for verl's actors"),
    _Default("ray_kwargs.ray_init.num_gpus", _ABSENT, _fake_gpus, "fake Ray GPUs, one per worker slot"),
    _Default("actor_rollout_ref.actor.strategy", "fsdp", lambda c: "fsdp2", "FSDP2 runs on gloo"),
    _Default("actor_rollout_ref.ref.strategy", "fsdp", lambda c: "fsdp2", "FSDP2 runs on gloo"),
    _Default("critic.strategy", "fsdp", lambda c: "fsdp2", "FSDP2 runs on gloo"),
    _Default(
        "actor_rollout_ref.model.override_config.attn_implementation",
        _ABSENT,
        lambda c: "sdpa",
        "no flash-attention on CPU",
    ),
    _Default(
        "critic.model.override_config.attn_implementation", _ABSENT, lambda c: "sdpa", "no flash-attention on CPU"
    ),
    _Default(
        "actor_rollout_ref.actor.fsdp_config.mixed_precision.param_dtype",
        _ABSENT,
        lambda c: "fp32",
        "fp32 compute: bf16 is emulated on most CPUs and would quantise the teacher-student gap",
    ),
    _Default(
        "actor_rollout_ref.ref.fsdp_config.mixed_precision.param_dtype",
        _ABSENT,
        lambda c: "fp32",
        "fp32 compute, as the actor",
    ),
    _Default(
        "actor_rollout_ref.rollout.tensor_model_parallel_size", 2, lambda c: 1, "one hf rollout replica per worker"
    ),
    _Default("actor_rollout_ref.rollout.agent.num_workers", 8, lambda c: 1, "fewer processes on few cores"),
    _Default("reward.num_workers", 8, lambda c: 1, "fewer processes on few cores"),
    _Default("data.dataloader_num_workers", 8, lambda c: 0, "fewer processes on few cores"),
)


def _set(config: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(config, key, value, merge=False, force_add=True)


def apply_cpu_defaults(config: DictConfig) -> list[str]:
    """Fill in CPU settings in a composed ``main_ppo`` config with ``trainer.device == "cpu"``.

    Sets, unless the user chose otherwise: one worker process (``trainer.n_gpus_per_node=1``), Ray's
    logical CPUs and one fake GPU per worker slot, FSDP2 for actor/ref/critic, sdpa attention, fp32
    compute for actor and reference (FSDP mixed-precision ``param_dtype``), the
    ``hf`` rollout backend (when unset or vLLM/SGLang/TensorRT-LLM) with one replica per worker, and one
    agent-loop worker, one reward worker and no dataloader workers.

    Args:
        config: the composed config; edited in place (struct mode is respected for existing keys
            and bypassed only to add the keys verl's config does not declare).

    Returns:
        One human-readable line per change (``key: old -> new (reason)``); empty when the device
        is not ``cpu`` or nothing needed changing.
    """
    if OmegaConf.select(config, "trainer.device") != "cpu":
        return []
    changes = []
    for default in _DEFAULTS:
        if default.key.startswith("critic.") and OmegaConf.select(config, "critic") is None:
            continue
        current = OmegaConf.select(config, default.key, default=_ABSENT)
        if current is not default.verl_default and current != default.verl_default:
            continue
        value = default.value(config)
        _set(config, default.key, value)
        shown = "unset" if current is _ABSENT else repr(current)
        changes.append(f"{default.key}: {shown} -> {value!r} ({default.reason})")

    rollout = config.actor_rollout_ref.rollout
    if OmegaConf.is_missing(rollout, "name"):
        rollout.name = ROLLOUT_NAME
        changes.append(f"actor_rollout_ref.rollout.name: unset -> {ROLLOUT_NAME!r} (the CPU rollout backend)")
    elif rollout.name in _ROLLOUT_BACKENDS_WITHOUT_CPU:
        changes.append(
            f"actor_rollout_ref.rollout.name: {rollout.name!r} -> {ROLLOUT_NAME!r} ({rollout.name} does not run on CPU)"
        )
        rollout.name = ROLLOUT_NAME
    return changes


class CPUDefaultsCallback(Callback):
    """Hydra callback applying :func:`apply_cpu_defaults` before ``main_ppo`` sees the config."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        for change in apply_cpu_defaults(config):
            print(f"[verl-sdar] cpu default: {change}", flush=True)
