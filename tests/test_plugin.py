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
