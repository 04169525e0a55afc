"""What the ``verl.plugins`` entry point costs a process that never trains, and that deferring the
registrations keeps every guarantee (fresh processes: ``import verl`` runs the entry point once).

``import verl`` runs ``verl_sdar.plugin`` in every process; it registers the CPU platform at once
and defers the rest until verl imports the registry each registration goes into
(``verl_sdar.import_hooks``). Times are measured by ``benchmarks/plugin_import.py``
(docs/plugin_import.md), never asserted here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

# Modules a process that only runs ``import verl`` must not pay for (the plugin used to import them).
HEAVY_MODULES = (
    "verl_sdar.trainer",
    "verl_sdar.advantages",
    "verl_sdar.cpu.hf_rollout",
    "verl.trainer.ppo.v1",
    "verl.trainer.ppo.v1.trainer_base",
    "verl.trainer.ppo.v1.trainer_sync",
    "verl.trainer.ppo.core_algos",
    "verl.workers.engine",
    "verl.workers.engine.fsdp",
    "verl.workers.engine.fsdp.transformer_impl",
    "verl.workers.engine_workers",
    "verl.workers.rollout.base",
    "verl.workers.rollout.replica",
)
HEAVY_PREFIXES = ("verl.trainer", "verl.workers", "verl.experimental", "verl.single_controller", "transfer_queue",
                  "transformers", "vllm")
# Besides its own modules, the plugin may import a few light ones (e.g. verl.utils.distributed for the
# CPU process-group default); far from the ~1,500 modules the trainer and the engines pull in.
MAX_FOREIGN_MODULES = 20


def _run(code: str, **env: str) -> tuple[dict, str]:
    """Run ``code`` in a fresh interpreter; return the JSON it prints last, and its stderr."""
    full_env = {k: v for k, v in os.environ.items() if k != "VERL_USE_EXTERNAL_PLUGINS"}
    full_env.update(env)
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=full_env)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1]), out.stderr


MODULES_AFTER_IMPORT_VERL = "import json, sys, verl\nprint(json.dumps(sorted(sys.modules)))\n"


def test_import_verl_with_the_plugin_loads_nothing_heavy():
    with_plugin, _ = _run(MODULES_AFTER_IMPORT_VERL)
    without, _ = _run(MODULES_AFTER_IMPORT_VERL, VERL_USE_EXTERNAL_PLUGINS="none")
    assert "verl_sdar.plugin" in with_plugin and "verl_sdar.plugin" not in without
    loaded = set(with_plugin)
    assert not [m for m in HEAVY_MODULES if m in loaded]
    added = loaded - set(without)
    foreign = sorted(m for m in added if m != "verl_sdar" and not m.startswith("verl_sdar."))
    assert not [m for m in foreign if m.startswith(HEAVY_PREFIXES)], foreign
    assert len(foreign) <= MAX_FOREIGN_MODULES, foreign


# One process plays the life of a training process: `import verl` (checked light), then each
# registry verl looks things up in, in the order main_ppo and its workers reach them.
LIFECYCLE = r"""
import json, sys
import torch
import verl
from verl.plugin.platform import platform_manager
from verl_sdar import import_hooks
from verl_sdar.cpu import patches
from verl_sdar.plugin_status import check_registered

check_registered()
state = {"heavy_after_import": [m for m in HEAVY_MODULES if m in sys.modules],
         "pending": sorted(import_hooks.pending()), "cuda": torch.cuda.is_available(),
         "platform_resolved": getattr(platform_manager._current_platform, "device_name", None),
         "process_group_patched": patches.process_group_backend_patched()}

from verl.trainer.ppo.v1 import get_trainer_cls  # what main_ppo's TaskRunner does
trainer_cls = get_trainer_cls("sdar")
from verl_sdar.trainer import SDARTrainer
state["trainer"] = trainer_cls is SDARTrainer

from verl.trainer.ppo.core_algos import get_adv_estimator_fn
from verl_sdar.advantages import compute_turn_row_grpo_advantage
state["estimator"] = get_adv_estimator_fn("turn_row_grpo") is compute_turn_row_grpo_advantage

import verl.workers.engine_workers  # a training worker
from verl.workers.engine import EngineRegistry
from verl.workers.engine.fsdp import transformer_impl
state["cpu_engines"] = sorted(f"{m}/{b}" for m, by in EngineRegistry._engines.items() for b, d in by.items()
                              if "cpu" in d)
state["offload_unpinned"] = patches.is_patched(transformer_impl.CPUOffloadPolicy)

from verl.workers.rollout.base import get_rollout_class
from verl.workers.rollout.replica import get_rollout_replica_class
from verl_sdar.cpu.hf_rollout import HFReplica, HFServerAdapter
state["hf_rollout"] = [get_rollout_class("hf", "async") is HFServerAdapter,
                      get_rollout_replica_class("hf") is HFReplica]

from verl.utils.device import get_device_name
import verl_sdar.cpu as cpu
check_registered()
state.update(device=get_device_name(), missing=cpu.missing_registrations(), pending_at_end=import_hooks.pending())
print(json.dumps(state))
"""


def test_every_registration_is_in_place_when_verl_looks_it_up():
    state, _ = _run(f"HEAVY_MODULES = {HEAVY_MODULES!r}\n" + LIFECYCLE)
    assert state["heavy_after_import"] == []
    assert state["pending"] == ["verl.trainer.ppo.core_algos", "verl.trainer.ppo.v1", "verl.workers.engine",
                                "verl.workers.rollout.base", "verl.workers.rollout.replica"]
    assert state["trainer"] and state["estimator"]
    assert state["hf_rollout"] == [True, True]
    assert state["missing"] == [] and state["pending_at_end"] == {}
    if state["cuda"]:  # verl keeps its own platform; none of the CPU patches or engines applies
        assert state["device"] == "cuda" and state["cpu_engines"] == [] and not state["offload_unpinned"]
    else:
        # the CPU platform was registered and resolved by `import verl`, before any heavy verl module
        assert state["platform_resolved"] == "cpu" and state["device"] == "cpu"
        assert state["process_group_patched"] and state["offload_unpinned"]
        assert state["cpu_engines"] == ["language_model/fsdp", "language_model/fsdp2", "value_model/fsdp",
                                        "value_model/fsdp2"]


def test_trainer_imported_first_still_registers_and_the_platform_comes_first():
    """A process whose first import is the trainer module (the plugin runs from inside it)."""
    code = (
        "import json\n"
        "from verl_sdar.trainer import SDARTrainer\n"
        "from verl.trainer.ppo.v1 import get_trainer_cls\n"
        "from verl.plugin.platform import get_platform\n"
        "import torch, verl_sdar.cpu as cpu\n"
        "from verl_sdar.plugin_status import check_registered\n"
        "check_registered()\n"
        "print(json.dumps([get_trainer_cls('sdar') is SDARTrainer, get_platform().device_name,\n"
        "                  torch.cuda.is_available(), cpu.missing_registrations()]))\n"
    )
    (registered, device, cuda, missing), _ = _run(code)
    assert registered and missing == []
    assert device == ("cuda" if cuda else "cpu")


def test_a_deferred_registration_that_fails_is_loud():
    """The trainer cannot be imported (a module of it fails): `import verl` still works for a process
    that never trains, but importing verl's trainer registry reports the error on stderr and raises
    it, and check_registered() raises from then on."""
    code = (
        "import json, sys\n"
        "class Broken:\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name == 'verl_sdar.loss':\n"
        "            raise ImportError('planted: verl_sdar.loss is broken')\n"
        "sys.meta_path.insert(0, Broken())\n"
        "import verl\n"
        "from verl_sdar.plugin_status import PluginRegistrationError, check_registered\n"
        "check_registered()\n"
        "try:\n"
        "    from verl.trainer.ppo.v1 import get_trainer_cls\n"
        "    imported = True\n"
        "except ImportError as exc:\n"
        "    imported = repr(exc)\n"
        "try:\n"
        "    check_registered()\n"
        "    checked = 'passed'\n"
        "except PluginRegistrationError as exc:\n"
        "    checked = str(exc)\n"
        "print(json.dumps([imported, checked]))\n"
    )
    (imported, checked), stderr = _run(code)
    assert imported == "ImportError('planted: verl_sdar.loss is broken')"
    assert "planted" in checked
    assert "[verl-sdar] ERROR: trainer 'sdar' (on importing verl.trainer.ppo.v1) failed to load" in stderr
