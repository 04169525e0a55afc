"""Registers verl-sdar's CPU support with verl; see :mod:`verl_sdar.cpu` for what and why.

The plugin entry point imports this submodule directly (``from verl_sdar.cpu import registration``)
rather than attributes of the ``verl_sdar.cpu`` package, so registration also completes when a
process's first import is ``verl_sdar.cpu...`` (the package is then still initialising while
``import verl`` runs the entry point).

Only what is harmless on every platform happens in every process: the ``cpu`` platform joins verl's
registry (verl picks it only where no accelerator matches) and the ``hf`` rollout name is registered
(verl imports the backend only when a run selects ``rollout.name=hf``). What changes verl's
behaviour -- the process-group backend and FSDP2 offload-pinning patches and the training engines
for device ``cpu`` -- is applied only in a process whose verl platform is the CPU one
(:func:`cpu_platform_selected`).
"""

from __future__ import annotations

import os

from verl.plugin.platform import get_platform, platform_manager
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_sdar.names import PLATFORM_NAME, ROLLOUT_NAME

from . import patches

# The platform registers itself on import; nothing above resolves verl's platform (patches imports
# verl lazily), and everything below that does runs after this line.
from .platform import PlatformCPU

_ADAPTER_FQN = "verl_sdar.cpu.hf_rollout.HFServerAdapter"
_MODEL_TYPES = ("language_model", "value_model")
_ENGINE_BACKENDS = ("fsdp", "fsdp2")


def _load_replica_class() -> type:
    from .hf_rollout import HFReplica

    return HFReplica


def _register_training_engines() -> None:
    """Register verl's FSDP engines (device-agnostic code) for device ``cpu``."""
    from verl.workers.engine import EngineRegistry
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    for model_type, engine_cls in zip(_MODEL_TYPES, (FSDPEngineWithLMHead, FSDPEngineWithValueHead), strict=True):
        registered = EngineRegistry._engines.get(model_type, {})
        backends = [b for b in _ENGINE_BACKENDS if PLATFORM_NAME not in registered.get(b, {})]
        if backends:
            EngineRegistry.register(model_type=model_type, backend=backends, device=PLATFORM_NAME)(engine_cls)


def _register_rollout() -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    patches.register_rollout_adapter(ROLLOUT_NAME, _ADAPTER_FQN)


def cpu_platform_selected() -> bool:
    """Whether this process's verl platform is the CPU one (resolving verl's platform singleton if
    nothing has yet: the ``cpu`` platform is registered by now, so this is the platform verl keeps)."""
    return get_platform().device_name == PLATFORM_NAME


if cpu_platform_selected():
    patches.patch_process_group_backend()
    patches.patch_fsdp2_offload_pinning()
    _register_training_engines()
_register_rollout()


def missing_registrations() -> list[str]:
    """Human-readable names of the CPU registrations that are not in effect (empty when all are).

    The patches and training engines count only in a process on the CPU platform."""
    from verl.workers.engine import EngineRegistry
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    missing = []
    if PlatformRegistry.get(PLATFORM_NAME) is not PlatformCPU:
        missing.append(f"platform '{PLATFORM_NAME}'")
    resolved = platform_manager._current_platform
    if (
        resolved is not None
        and not isinstance(resolved, PlatformCPU)
        and not os.environ.get("VERL_PLATFORM")
        and not resolved.is_platform_available(use_smi_check=True)
    ):
        # verl fell back to a platform this host does not have, before the cpu one was registered.
        missing.append(
            f"platform '{PLATFORM_NAME}' (verl had already resolved '{resolved.device_name}': "
            "import verl_sdar.cpu before other verl modules)"
        )
    if cpu_platform_selected():  # elsewhere these are deliberately not applied
        if not patches.process_group_backend_patched():
            missing.append("gloo process-group backend default")
        if not patches.fsdp2_offload_pinning_patched():
            missing.append("unpinned FSDP2 CPU offload policy")
        for model_type in _MODEL_TYPES:
            for backend in _ENGINE_BACKENDS:
                if PLATFORM_NAME not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                    missing.append(f"training engine '{backend}' ({model_type}) for device '{PLATFORM_NAME}'")
    if ROLLOUT_NAME not in RolloutReplicaRegistry._registry:
        missing.append(f"rollout '{ROLLOUT_NAME}' (replica)")
    if not patches.rollout_adapter_registered(ROLLOUT_NAME):
        missing.append(f"rollout '{ROLLOUT_NAME}' (server adapter)")
    return missing
