"""apply_cpu_defaults on configs composed from verl's ppo_trainer.yaml."""

import pytest
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)
from hydra import compose, initialize_config_module

from verl_sdar.cpu.defaults import RAY_LOGICAL_CPUS, apply_cpu_defaults


@pytest.fixture(scope="module")
def compose_ppo():
    with initialize_config_module("verl.trainer.config", version_base=None):
        yield lambda *overrides: compose("ppo_trainer", overrides=list(overrides))


def test_fills_in_everything_for_a_bare_cpu_config(compose_ppo):
    config = compose_ppo("trainer.device=cpu")
    changes = apply_cpu_defaults(config)
    assert config.trainer.n_gpus_per_node == 1
    assert config.ray_kwargs.ray_init.num_cpus == RAY_LOGICAL_CPUS
    assert config.ray_kwargs.ray_init.num_gpus == 1
    assert config.actor_rollout_ref.actor.strategy == "fsdp2"
    assert config.actor_rollout_ref.ref.strategy == "fsdp2"  # follows the actor through verl's interpolation
    assert config.critic.strategy == "fsdp2"
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "sdpa"
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert config.actor_rollout_ref.rollout.tensor_model_parallel_size == 1
    assert config.actor_rollout_ref.rollout.n_gpus_per_node == 1
    assert config.actor_rollout_ref.rollout.agent.num_workers == 1
    assert config.reward.num_workers == 1
    assert config.data.dataloader_num_workers == 0
    assert any(line.startswith("actor_rollout_ref.rollout.name: unset -> 'hf'") for line in changes)
    assert apply_cpu_defaults(config) == []  # idempotent


def test_keeps_what_the_user_chose(compose_ppo):
    config = compose_ppo(
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=2",
        "ray_kwargs.ray_init.num_cpus=8",
        "+ray_kwargs.ray_init.num_gpus=3",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    )
    changes = apply_cpu_defaults(config)
    assert config.trainer.n_gpus_per_node == 2
    assert config.ray_kwargs.ray_init.num_cpus == 8
    assert config.ray_kwargs.ray_init.num_gpus == 3
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "eager"
    assert not any(line.startswith(("trainer.n_gpus_per_node", "ray_kwargs")) for line in changes)


def test_fake_gpu_count_follows_the_worker_count(compose_ppo):
    config = compose_ppo("trainer.device=cpu", "trainer.n_gpus_per_node=2", "trainer.nnodes=2")
    apply_cpu_defaults(config)
    assert config.ray_kwargs.ray_init.num_gpus == 4


def test_replaces_gpu_only_rollout_backends(compose_ppo):
    config = compose_ppo("trainer.device=cpu", "actor_rollout_ref.rollout.name=vllm")
    assert "actor_rollout_ref.rollout.name: 'vllm' -> 'hf' (vllm does not run on CPU)" in apply_cpu_defaults(config)
    assert config.actor_rollout_ref.rollout.name == "hf"


def test_does_nothing_off_cpu(compose_ppo):
    config = compose_ppo("trainer.device=cuda")
    assert apply_cpu_defaults(config) == []
    assert config.actor_rollout_ref.actor.strategy == "fsdp"


def test_hydra_callback_edits_the_config_main_ppo_receives(compose_ppo, capsys):
    from hydra.utils import instantiate

    from verl_sdar.cpu.defaults import CPUDefaultsCallback

    callback = instantiate({"_target_": "verl_sdar.cpu.defaults.CPUDefaultsCallback"})
    assert isinstance(callback, CPUDefaultsCallback)
    config = compose_ppo("trainer.device=cpu")
    callback.on_run_start(config=config, config_name="ppo_trainer")
    assert config.actor_rollout_ref.rollout.name == "hf"
    assert "[verl-sdar] cpu default: actor_rollout_ref.actor.strategy: 'fsdp' -> 'fsdp2'" in capsys.readouterr().out
