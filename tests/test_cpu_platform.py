"""The CPU platform and its registrations (verl_sdar.cpu) as verl sees them."""

import subprocess
import sys

import pytest
import torch
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the cpu platform is picked only without CUDA")


def test_import_verl_picks_the_cpu_platform_in_a_fresh_process():
    code = (
        "import verl\n"
        "from verl.plugin.platform.platform_manager import get_platform\n"
        "from verl.utils.device import get_device_name, get_nccl_backend, get_resource_name\n"
        "import verl_sdar.cpu as cpu\n"
        "print(get_platform().device_name, get_device_name(), get_nccl_backend(), get_resource_name(),"
        " cpu.missing_registrations())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "cpu cpu gloo GPU []"


def test_registrations_are_in_place():
    from verl.workers.engine import EngineRegistry
    from verl.workers.rollout.base import get_rollout_class
    from verl.workers.rollout.replica import get_rollout_replica_class

    import verl_sdar.cpu as cpu
    from verl_sdar.cpu.hf_rollout import HFReplica, HFServerAdapter

    assert cpu.missing_registrations() == []
    assert get_rollout_class("hf", "async") is HFServerAdapter
    assert get_rollout_replica_class("hf") is HFReplica
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    assert EngineRegistry.get_engine_cls("language_model", "fsdp2") is FSDPEngineWithLMHead


def test_device_module_answers_what_verl_calls():
    from verl.utils.device import get_torch_device

    device = get_torch_device()
    device.empty_cache()
    device.synchronize()
    device.set_device(0)
    assert device.is_available() and device.device_count() >= 1
    assert device.current_device() == "cpu" and torch.ones(1).to(device.current_device()).device.type == "cpu"
    assert device.memory_allocated() == 0 and device.max_memory_reserved() == 0
    free, total = device.mem_get_info()
    assert 0 <= free <= total
    state = device.get_rng_state()
    a = torch.rand(3)
    device.set_rng_state(state)
    assert torch.equal(a, torch.rand(3))


def test_gloo_process_group_and_unpinned_offload_policy(tmp_path):
    import torch.distributed as dist
    from verl.utils import distributed
    from verl.workers.engine.fsdp import transformer_impl

    assert transformer_impl.CPUOffloadPolicy(pin_memory=True).pin_memory is False
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    env = {"RANK": "0", "WORLD_SIZE": "1", "DIST_INIT_METHOD": f"file://{tmp_path / 'pg'}"}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        distributed.initialize_global_process_group_ray()
    try:
        assert dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()
