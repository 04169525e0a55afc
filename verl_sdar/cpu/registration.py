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

Importing this module is cheap (``import verl`` has already loaded torch and
``verl.plugin.platform``): what needs verl's heavy modules is registered when verl imports the
registry it goes into (:func:`verl_sdar.import_hooks.when_imported`), before that import returns:
the training engines and the offload-pinning patch with ``verl.workers.engine`` (the FSDP engine),
the ``hf`` replica with ``verl.workers.rollout.replica``, the ``hf`` server adapter with
``verl.workers.rollout.base``. A process that never imports them (one that never trains or rolls
out) never pays for them. The platform and the process-group default are in place at once.
"""

from __future__ import annotations

import os

from verl.plugin.platform import get_platform, platform_manager
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_sdar.import_hooks import when_imported
from verl_sdar.names import PLATFORM_NAME, ROLLOUT_NAME
from verl_sdar.plugin_status import PluginRegistrationError

from . import patches

# The platform registers itself on import; nothing above resolves verl's platform (patches imports
# verl lazily), and everything below that does runs after this line.
from .platform import PlatformCPU

_ENGINE_PACKAGE = "verl.workers.engine"  # imports the FSDP engine (transformer_impl) and EngineRegistry
_REPLICA_MODULE = "verl.workers.rollout.replica"
_ADAPTER_MODULE = "verl.workers.rollout.base"
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


def cpu_platform_selected() -> bool:
    """Whether this process's verl platform is the CPU one (resolving verl's platform singleton if
    nothing has yet: the ``cpu`` platform is registered by now, so this is the platform verl keeps)."""
    return get_platform().device_name == PLATFORM_NAME


def _raise_if_missing(missing: list[str]) -> None:
    if missing:
        raise PluginRegistrationError("verl-sdar registrations missing: " + ", ".join(missing))


def _on_engine_import(_module) -> None:
    """``verl.workers.engine`` is imported: on the CPU platform, unpinned offload + cpu engines."""
    if cpu_platform_selected():
        patches.patch_fsdp2_offload_pinning()
        _register_training_engines()
        _raise_if_missing(_missing_engine_registrations())


def _on_replica_import(_module) -> None:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    RolloutReplicaRegistry.register(ROLLOUT_NAME, _load_replica_class)
    _raise_if_missing(_missing_replica())


def _on_adapter_import(_module) -> None:
    patches.register_rollout_adapter(ROLLOUT_NAME, _ADAPTER_FQN)
    _raise_if_missing(_missing_adapter())


def _missing_engine_registrations() -> list[str]:
    from verl.workers.engine import EngineRegistry

    missing = []
    if not patches.fsdp2_offload_pinning_patched():
        missing.append("unpinned FSDP2 CPU offload policy")
    for model_type in _MODEL_TYPES:
        for backend in _ENGINE_BACKENDS:
            if PLATFORM_NAME not in EngineRegistry._engines.get(model_type, {}).get(backend, {}):
                missing.append(f"training engine '{backend}' ({model_type}) for device '{PLATFORM_NAME}'")
    return missing


def _missing_replica() -> list[str]:
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    return [] if ROLLOUT_NAME in RolloutReplicaRegistry._registry else [f"rollout '{ROLLOUT_NAME}' (replica)"]


def _missing_adapter() -> list[str]:
    return [] if patches.rollout_adapter_registered(ROLLOUT_NAME) else [f"rollout '{ROLLOUT_NAME}' (server adapter)"]


def missing_registrations(deferred: bool = True) -> list[str]:
    """Human-readable names of the CPU registrations that are not in effect (empty when all are).

    The patches and training engines count only in a process on the CPU platform. With
    ``deferred`` (the default) this imports verl's engine and rollout registries to check the
    registrations made when they are imported (importing them makes those registrations); without,
    it checks only what is in place from the start and imports nothing heavy (the plugin's check).
    """
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
    on_cpu = cpu_platform_selected()  # elsewhere the patches and engines are deliberately not applied
    if on_cpu and not patches.process_group_backend_patched():
        missing.append("gloo process-group backend default")
    if deferred:
        if on_cpu:
            missing.extend(_missing_engine_registrations())
        missing.extend(_missing_replica())
        missing.extend(_missing_adapter())
    return missing


# Last, so that a registration run at once (its verl module already imported) finds every function.
if cpu_platform_selected():
    patches.patch_process_group_backend()  # cheap: verl.utils.distributed is light
when_imported(_ENGINE_PACKAGE, _on_engine_import, f"CPU training engines ('{PLATFORM_NAME}')")
when_imported(_REPLICA_MODULE, _on_replica_import, f"rollout '{ROLLOUT_NAME}' (replica)")
when_imported(_ADAPTER_MODULE, _on_adapter_import, f"rollout '{ROLLOUT_NAME}' (server adapter)")
