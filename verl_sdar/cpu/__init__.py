"""CPU support for verl 0.9.1: run ``verl.trainer.main_ppo`` on a machine without an accelerator.

Importing this package (the work is in :mod:`.registration`) registers, in this order (2. and 3.
only in a process whose verl platform is the CPU one: elsewhere verl runs unpatched):

1. the ``cpu`` platform in verl's ``PlatformRegistry`` (:mod:`.platform`). verl resolves its platform
   once per process, the first time some module asks (importing e.g.
   ``verl.trainer.ppo.v1.trainer_base`` does), so the registration must run before any verl module
   other than ``verl`` and ``verl.plugin.platform`` is imported; the plugin entry point runs it first;
2. the ``gloo`` process-group default (:func:`.patches.patch_process_group_backend`);
3. verl's FSDP/FSDP2 training engines for device ``cpu`` (verl's public ``EngineRegistry.register``;
   verl itself registers them for cuda and npu only);
4. the transformers rollout backend as ``actor_rollout_ref.rollout.name=hf`` (:mod:`.hf_rollout`,
   imported by verl only when a run selects it).

1. and 2. take effect at once; 3. (with the FSDP2 offload-pinning patch) and 4. when verl imports the
registry they go into (``verl.workers.engine``, ``verl.workers.rollout.replica``/``.base``), before
that import returns (:mod:`verl_sdar.import_hooks`), so a process that never trains pays nothing for them.

On a machine with a CUDA device verl still picks its ``nvidia`` platform: then only 1. and 4. are in
place, and neither changes what verl does there.
:func:`missing_registrations` reports what did not take effect (verl logs plugin import errors at
debug level only). :func:`.defaults.apply_cpu_defaults` fills in a ``main_ppo`` config for CPU.
"""

# ``import verl`` runs the verl-sdar entry point, which imports ``.registration``. Doing it before
# importing any submodule here means that, when a process imports ``verl_sdar.cpu...`` before verl
# (e.g. a Ray actor unpickling a class from this package), the entry point still finds
# ``.registration`` un-started and runs it to completion, ahead of anything that resolves the platform.
import verl  # noqa: F401  isort: skip

from verl_sdar.names import PLATFORM_NAME, ROLLOUT_NAME

from .platform import PlatformCPU
from .registration import missing_registrations

__all__ = ["PLATFORM_NAME", "ROLLOUT_NAME", "PlatformCPU", "missing_registrations"]
