"""The verl.plugins entry point: loads in the driver and inside Ray worker processes."""

import os
import sys
from importlib.metadata import entry_points

import pytest


def test_entry_point_is_declared():
    eps = {ep.name: ep.value for ep in entry_points(group="verl.plugins")}
    assert eps.get("verl_sdar") == "verl_sdar.plugin"


def test_import_verl_registers_everything_in_this_process():
    import verl  # noqa: F401
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from verl_sdar import plugin

    assert "verl_sdar.plugin" in sys.modules
    plugin.check_registered()
    assert "sdar" in TRAINER_REGISTRY


def test_light_import_of_the_math_does_not_import_verl():
    import subprocess

    code = "import sys, verl_sdar.objectives, verl_sdar.config; print('verl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


def test_entry_point_loads_inside_a_ray_worker(ray_cluster):
    ray = ray_cluster

    @ray.remote
    def probe():
        import os
        import sys

        import verl  # noqa: F401
        from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

        return os.getpid(), "verl_sdar.plugin" in sys.modules, "sdar" in TRAINER_REGISTRY

    pid, loaded, registered = ray.get(probe.remote(), timeout=300)
    assert pid != os.getpid()
    assert loaded and registered


def test_no_cpu_patch_is_active_in_a_process_whose_platform_is_not_cpu():
    """verl's ``VERL_PLATFORM`` override picks the ``nvidia`` platform (on any host): the plugin still
    loads, the hf rollout name is registered, and none of verl-sdar's CPU patches is applied."""
    import json
    import subprocess

    code = (
        "import json, verl\n"
        "from verl.plugin.platform import get_platform\n"
        "import verl.utils.distributed as dist_utils\n"
        "import verl.workers.engine_workers as engine_workers\n"
        "from verl.workers.engine import EngineRegistry\n"
        "from verl.workers.engine.fsdp import transformer_impl\n"
        "from verl.workers.rollout.base import _ROLLOUT_REGISTRY\n"
        "from verl_sdar.plugin_status import check_registered\n"
        "from verl_sdar.cpu import missing_registrations, patches\n"
        "check_registered()\n"
        "print(json.dumps({'device': get_platform().device_name,\n"
        "  'patched': [patches.is_patched(dist_utils.initialize_global_process_group_ray),\n"
        "              patches.is_patched(engine_workers.initialize_global_process_group_ray),\n"
        "              patches.is_patched(transformer_impl.CPUOffloadPolicy)],\n"
        "  'cpu_engines': [f'{m}/{b}' for m, by in EngineRegistry._engines.items()\n"
        "                  for b, d in by.items() if 'cpu' in d],\n"
        "  'hf_rollout': ('hf', 'async') in _ROLLOUT_REGISTRY, 'missing': missing_registrations()}))\n"
    )
    env = {**os.environ, "VERL_PLATFORM": "nvidia"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    state = json.loads(out.stdout.strip().splitlines()[-1])
    assert state == {"device": "cuda", "patched": [False, False, False], "cpu_engines": [], "hf_rollout": True,
                     "missing": []}
