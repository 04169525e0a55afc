"""A CPU platform for verl's ``PlatformRegistry``.

verl resolves one platform per process (``verl.plugin.platform.get_platform``) the first time any
module asks for it, and falls back to ``nvidia`` when nothing else matches. On a machine without an
accelerator this platform is picked instead, so verl's device-agnostic code paths (FSDP2 on gloo,
device meshes, RNG handling, memory logging) run on the CPU.

This module must stay light: it imports only torch, ``verl.plugin.platform`` and :mod:`verl_sdar.names`,
because it has to be registered before any verl module that resolves the platform at import time is
loaded.

Ray sees the CPU "device" as a GPU resource: verl's resource-pool checks only count ``GPU``/``NPU``,
so a CPU run tells Ray it has fake GPUs (``ray_init.num_gpus``), one per training worker.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from verl.plugin.platform.platform_base import PlatformBase
from verl.plugin.platform.platform_manager import PlatformRegistry

from verl_sdar.names import PLATFORM_NAME


def _system_memory() -> tuple[int, int]:
    """Return ``(free_bytes, total_bytes)`` of host memory, or ``(0, 0)`` where unknown."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return 0, 0


class CpuDeviceModule:
    """Stand-in for ``torch.cuda`` that verl calls through ``get_torch_device()``.

    Streams, events, ``synchronize`` and ``current_device`` come from ``torch.cpu``; the CUDA
    memory-accounting API that verl calls unconditionally reports zero (there is no device memory);
    RNG state is the CPU generator's.
    """

    def __getattr__(self, name: str) -> Any:
        # Stream, Event, current_stream, stream, synchronize, device_count, is_available, ...
        return getattr(torch.cpu, name)

    @staticmethod
    def current_device() -> str:
        """Device handle verl passes to ``tensor.to``; a string because ``.to(0)`` means ``cuda:0``."""
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        """No-op: there is one CPU device."""

    @staticmethod
    def empty_cache() -> None:
        """No-op: the CPU allocator keeps no cache verl could release."""

    @staticmethod
    def ipc_collect() -> None:
        """No-op: no CUDA IPC on CPU."""

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        return "CPU"

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        """Host memory as ``(free, total)``, like ``torch.cuda.mem_get_info``."""
        return _system_memory()

    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        """No-op: no device memory statistics."""

    @staticmethod
    def reset_accumulated_memory_stats(device: Any = None) -> None:
        """No-op: no device memory statistics."""

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        """No-op: host memory is not partitioned."""

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)

    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)


CPU_DEVICE_MODULE = CpuDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class PlatformCPU(PlatformBase):
    """verl platform for hosts without an accelerator: torch CPU tensors, gloo collectives."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> Any:
        return CPU_DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # verl probes platforms in registration order and this one is registered after the built-in
        # ones, so it is only reached when no accelerator matched; still refuse a visible CUDA device.
        return not torch.cuda.is_available()

    def current_device(self) -> str:  # type: ignore[override]  # verl uses it as a torch device
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        """No-op: there is one CPU device."""

    def synchronize(self, device_index: int | None = None) -> None:
        """No-op: CPU ops are synchronous."""

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        """No-op: CUDA caching-allocator settings have no CPU counterpart."""

    def empty_cache(self) -> None:
        """No-op: nothing to release."""

    def get_device_capability(self, device_index: int = 0) -> tuple[int | None, int | None]:
        return None, None

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets it for actors holding (fake) GPUs; a CPU build of torch ignores it.
        return "CUDA_VISIBLE_DEVICES"

    @contextlib.contextmanager
    def nvtx_range(self, msg: str) -> Iterator[None]:
        yield

    def profiler_start(self) -> None:
        """No-op: no device profiler."""

    def profiler_stop(self) -> None:
        """No-op: no device profiler."""

    def ray_resource_name(self) -> str:
        # verl's ResourcePoolManager only counts GPU/NPU resources: one fake GPU per worker.
        return "GPU"

    def ray_noset_envvars(self) -> list[str]:
        return ["RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES"]

    def is_ipc_supported(self) -> bool:
        return False

    def cudart(self) -> None:
        return None
