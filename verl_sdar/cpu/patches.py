"""The places where the CPU path has to touch verl internals (verl 0.9.1).

Each patch checks that the internal it relies on still exists with the expected shape and raises
:class:`VerlInternalsChanged` otherwise, so a verl upgrade fails loudly at import time instead of
misbehaving at run time.

1. :func:`patch_process_group_backend`: ``verl.utils.distributed.initialize_global_process_group_ray``
   defaults its backend to ``f"cpu:gloo,{device}:{ccl}"``; on the CPU platform that is
   ``"cpu:gloo,cpu:gloo"``, which torch rejects ("Duplicate device type cpu"). The patch makes the
   default plain ``"gloo"`` when the platform device is ``cpu`` and changes nothing otherwise.
2. :func:`patch_fsdp2_offload_pinning`: verl's FSDP engine gives FSDP2 modules that only run
   forward passes (the reference model) ``CPUOffloadPolicy(pin_memory=True)``, hard-coded; pinning
   host memory needs an accelerator, so on CPU it fails ("Cannot access accelerator device when none
   is available"). The patch swaps the class that module uses for a subclass that does not pin
   when the platform device is ``cpu``.
3. :func:`register_rollout_adapter`: verl maps ``(rollout name, mode)`` to the in-worker rollout
   adapter class through the private dict ``verl.workers.rollout.base._ROLLOUT_REGISTRY``; there is
   no public registration function for it (the replica side has ``RolloutReplicaRegistry``).

:mod:`.registration` applies patches 1 and 2 only in a process whose verl platform is the CPU one;
:func:`is_patched` tells one of these replacements (function or class) from verl's own.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from torch.distributed.fsdp import CPUOffloadPolicy

_PATCH_MARKER = "__verl_sdar_patch__"

# Modules that bind ``initialize_global_process_group_ray`` by name at import time.
_PROCESS_GROUP_IMPORTERS = ("verl.workers.engine_workers",)


class VerlInternalsChanged(RuntimeError):
    """A verl internal that verl-sdar patches is missing or has an unexpected signature."""


def _verl_version() -> str:
    import verl

    return getattr(verl, "__version__", "unknown")


def _require_function(module: ModuleType, name: str, parameters: tuple[str, ...]) -> Callable[..., Any]:
    """Return ``module.name`` after checking it is a function taking ``parameters`` in that order."""
    func = getattr(module, name, None)
    if not callable(func):
        raise VerlInternalsChanged(
            f"verl-sdar expects {module.__name__}.{name} (verl 0.9.1); it is missing in verl {_verl_version()}."
        )
    found = tuple(inspect.signature(func).parameters)
    if found[: len(parameters)] != parameters:
        raise VerlInternalsChanged(
            f"verl-sdar expects {module.__name__}.{name}{parameters} (verl 0.9.1); "
            f"verl {_verl_version()} has {name}{found}."
        )
    return func


def is_patched(func: Any) -> bool:
    """Whether ``func`` (a function or class) is one of this module's replacements."""
    return getattr(func, _PATCH_MARKER, False)


def patch_process_group_backend() -> None:
    """Default the process-group backend to ``gloo`` on the CPU platform (idempotent)."""
    import verl.utils.distributed as dist_utils
    from verl.utils.device import get_device_name

    original = _require_function(dist_utils, "initialize_global_process_group_ray", ("timeout_second", "backend"))
    if is_patched(original):
        return

    @functools.wraps(original)
    def initialize_global_process_group_ray(timeout_second: int | None = None, backend: str | None = None) -> None:
        if backend is None and get_device_name() == "cpu":
            backend = "gloo"
        return original(timeout_second=timeout_second, backend=backend)

    setattr(initialize_global_process_group_ray, _PATCH_MARKER, True)
    dist_utils.initialize_global_process_group_ray = initialize_global_process_group_ray
    # Modules imported before this patch hold the original under their own name.
    for module_name in _PROCESS_GROUP_IMPORTERS:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "initialize_global_process_group_ray", None) is original:
            module.initialize_global_process_group_ray = initialize_global_process_group_ray


def process_group_backend_patched() -> bool:
    """Whether every known user of ``initialize_global_process_group_ray`` sees the patched one."""
    import verl.utils.distributed as dist_utils

    if not is_patched(dist_utils.initialize_global_process_group_ray):
        return False
    for module_name in _PROCESS_GROUP_IMPORTERS:
        module = sys.modules.get(module_name)
        if module is not None and not is_patched(getattr(module, "initialize_global_process_group_ray", None)):
            return False
    return True


def _fsdp_engine_module() -> ModuleType:
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    return transformer_impl


@dataclass
class CPUOffloadPolicyUnpinnedOnCPU(CPUOffloadPolicy):
    """torch's ``CPUOffloadPolicy``, without pinned memory when verl's device is ``cpu``."""

    __verl_sdar_patch__ = True  # _PATCH_MARKER (a plain class attribute, not a dataclass field)

    def __post_init__(self) -> None:
        from verl.utils.device import get_device_name

        if get_device_name() == "cpu":
            self.pin_memory = False


def patch_fsdp2_offload_pinning() -> None:
    """Make verl's FSDP engine build FSDP2 CPU-offload policies without pinned memory on CPU (idempotent)."""
    transformer_impl = _fsdp_engine_module()
    current = getattr(transformer_impl, "CPUOffloadPolicy", None)
    if current is CPUOffloadPolicyUnpinnedOnCPU:
        return
    if current is not CPUOffloadPolicy:
        raise VerlInternalsChanged(
            "verl-sdar expects verl.workers.engine.fsdp.transformer_impl.CPUOffloadPolicy to be torch's "
            f"CPUOffloadPolicy (verl 0.9.1); verl {_verl_version()} has {current!r}."
        )
    transformer_impl.CPUOffloadPolicy = CPUOffloadPolicyUnpinnedOnCPU


def fsdp2_offload_pinning_patched() -> bool:
    return getattr(_fsdp_engine_module(), "CPUOffloadPolicy", None) is CPUOffloadPolicyUnpinnedOnCPU


def _rollout_registry() -> dict[tuple[str, str], str]:
    import verl.workers.rollout.base as rollout_base

    _require_function(rollout_base, "get_rollout_class", ("rollout_name", "mode"))
    registry = getattr(rollout_base, "_ROLLOUT_REGISTRY", None)
    if not isinstance(registry, dict):
        raise VerlInternalsChanged(
            "verl-sdar expects the dict verl.workers.rollout.base._ROLLOUT_REGISTRY (verl 0.9.1); "
            f"it is missing in verl {_verl_version()}."
        )
    return registry


def register_rollout_adapter(name: str, adapter_fqn: str, mode: str = "async") -> None:
    """Map rollout ``name`` to the adapter class at ``adapter_fqn`` (imported lazily by verl)."""
    _rollout_registry()[(name, mode)] = adapter_fqn


def rollout_adapter_registered(name: str, mode: str = "async") -> bool:
    return (name, mode) in _rollout_registry()
