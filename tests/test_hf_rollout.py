"""The hf rollout backend through Ray: replica, server, in-worker adapter, weight sync (no trainer)."""

import asyncio

import pytest
import torch
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)
from omegaconf import OmegaConf
from verl.workers.config import RolloutConfig

from verl_sdar.cpu.hf_rollout import HFReplica, HFServerAdapter, server_actor_name
from verl_sdar.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def replicas(ray_cluster, model_path):
    config = RolloutConfig(
        name="hf", tensor_model_parallel_size=1, prompt_length=32, response_length=8, dtype="float32"
    )
    # as in verl's config (actor_rollout_ref.model)
    model_config = OmegaConf.create({"_target_": "verl.workers.config.HFModelConfig", "path": str(model_path)})
    launched = [
        HFReplica(replica_rank=rank, config=config, model_config=model_config, gpus_per_node=1) for rank in (0, 1)
    ]

    async def launch():
        await asyncio.gather(*(replica.launch_servers() for replica in launched))
        await asyncio.gather(*(replica.sleep() for replica in launched))  # no-ops verl calls
        await asyncio.gather(*(replica.wake_up() for replica in launched))
        await asyncio.gather(*(replica.clear_kv_cache() for replica in launched))

    asyncio.run(launch())
    return config, model_config, launched


def generate(server, prompt, **sampling):
    params = {"temperature": 0, "logprobs": True, **sampling}
    return server.generate.remote(prompt_ids=prompt, sampling_params=params, request_id="r")


def test_replicas_have_their_own_named_servers(ray_cluster, replicas):
    _, _, launched = replicas
    assert [r.server_address for r in launched] == [server_actor_name(0), server_actor_name(1)]
    assert ray_cluster.get_actor("hf_server_1")._actor_id == launched[1].server_handle._actor_id


def test_concurrent_requests_are_all_answered(ray_cluster, replicas):
    _, _, launched = replicas
    server = launched[0].server_handle
    prompts = [[1, 5, 6, 7][: i % 4 + 1] for i in range(12)]
    outputs = ray_cluster.get([generate(server, p) for p in prompts] + [generate(server, [1, 5], temperature=1.0)])
    for prompt, output in zip(prompts, outputs, strict=False):
        assert 1 <= len(output.token_ids) <= 8 and len(output.log_probs) == len(output.token_ids)
        assert output.stop_reason == "completed"
        assert output.token_ids == outputs[prompts.index(prompt)].token_ids  # greedy: same prompt, same output
    no_logprobs = ray_cluster.get(generate(server, [1, 5], logprobs=False))
    assert no_logprobs.log_probs is None
    teacher = ray_cluster.get(generate(server, [1, 5, 6, 7], max_tokens=1, prompt_logprobs=0))
    assert len(teacher.extra_fields["prompt_logprobs"]) == 4


def test_adapter_syncs_weights_to_its_own_replica(ray_cluster, replicas, monkeypatch):
    config, model_config, launched = replicas
    prompt = [1, 5, 6, 7]
    before = ray_cluster.get([generate(r.server_handle, prompt) for r in launched])

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_config.path)
    zeroed = {name: torch.zeros_like(t) for name, t in model.state_dict().items()}
    monkeypatch.setenv("RANK", "1")  # trainer rank 1 -> replica 1 (tp=1)
    adapter = HFServerAdapter(config=config, model_config=model_config, device_mesh=None)
    assert adapter.replica_rank == 1 and adapter.is_leader_rank
    object.__setattr__(adapter.config.checkpoint_engine, "update_weights_bucket_megabytes", 0)  # one bucket per tensor
    asyncio.run(adapter.update_weights(iter(zeroed.items()), global_steps=7))

    after = ray_cluster.get([generate(r.server_handle, prompt) for r in launched])
    assert after[0].token_ids == before[0].token_ids  # replica 0 untouched
    assert after[1].token_ids == [0] * 8  # all-zero weights: uniform logits, greedy picks id 0
    assert after[1].extra_fields["global_steps"] == 7
    assert after[0].extra_fields["global_steps"] is None

    partial = iter(list(zeroed.items())[:3])
    with pytest.raises(ray_cluster.exceptions.RayTaskError, match="stale"):
        asyncio.run(adapter.update_weights(partial, global_steps=8))


def test_adapter_gathers_dtensors(ray_cluster, replicas, monkeypatch, tmp_path):
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    config, model_config, launched = replicas
    if dist.is_initialized():
        pytest.skip("a process group already exists in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        from transformers import AutoModelForCausalLM

        state = AutoModelForCausalLM.from_pretrained(model_config.path).state_dict()
        mesh = init_device_mesh("cpu", (1,))
        sharded = [(name, distribute_tensor(t, mesh, [Shard(0)])) for name, t in state.items()]
        monkeypatch.setenv("RANK", "1")
        adapter = HFServerAdapter(config=config, model_config=model_config, device_mesh=None)
        asyncio.run(adapter.update_weights(iter(sharded), global_steps=9))
    finally:
        dist.destroy_process_group()
    output = ray_cluster.get(generate(launched[1].server_handle, [1, 5, 6, 7]))
    reference = ray_cluster.get(generate(launched[0].server_handle, [1, 5, 6, 7]))
    assert output.extra_fields["global_steps"] == 9
    assert output.token_ids == reference.token_ids  # replica 1 is back to the original weights


def test_abort_and_resume(ray_cluster, replicas):
    _, _, launched = replicas
    server = launched[0].server_handle
    assert ray_cluster.get(server.abort_all_requests.remote(reject_request=True)) == {"aborted_count": 0}
    rejected = ray_cluster.get(generate(server, [1, 5]))
    assert rejected.stop_reason == "aborted" and rejected.token_ids == []
    ray_cluster.get(server.resume_generation.remote())
    assert ray_cluster.get(generate(server, [1, 5])).stop_reason == "completed"
