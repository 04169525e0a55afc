"""``sdar.teacher.source=model``: a separate teacher model on verl's own teacher servers.

* the ``hf`` server's ``prompt_logprobs`` answer, read by verl's real
  ``AsyncTeacherLLMServerManager.compute_teacher_logprobs_single``, against a direct transformers
  forward of the teacher (position ``t`` = log p(token ``t+1`` | tokens ``<= t``)), and the response
  slice the trainer takes from it (verl's ``response_from_nested``);
* the private ``distillation`` block the source builds is accepted by verl's ``DistillationConfig``
  while the run's own ``distillation.enabled`` stays false;
* a teacher with another tokenizer fails at start-up, before Ray, naming both model paths;
* one ``main_ppo`` SDAR step on the code-word task whose teacher is a second, larger tiny model
  (another seed, same tokenizer) served through verl's ``MultiTeacherModelManager`` by the hf backend.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from main_ppo_runner import REPO, run_main_ppo
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig, SDARConfigError, ValidateOnJobStart, check_teacher_tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Student (seed 0), a larger teacher (seed 1, same tokenizer) and a teacher with another tokenizer."""
    from verl_sdar.tiny_model import build_tiny_model

    root = tmp_path_factory.mktemp("teacher_models")
    student = build_tiny_model(root / "tiny-model", seed=0)
    teacher = build_tiny_model(root / "teacher-model", seed=1, hidden_size=128)
    other = build_tiny_model(root / "other-tokenizer", seed=0, vocab_size=600)
    return root, Path(student), Path(teacher), Path(other)


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "recipes" / "cpu"), version_base=None):
        return compose("codeword_sdar", overrides=list(overrides))


# ----------------------------------------------------------------------------- the hf server's answer
class _DirectClient:
    """Hands verl's teacher manager's request to an in-process hf server (what ``LLMServerClient``
    does through Ray: it drops ``mm_processor_output`` for non-sglang backends)."""

    def __init__(self, server):
        self.server = server

    async def generate(self, request_id, *, prompt_ids, sampling_params, image_data=None, video_data=None,
                       audio_data=None, mm_processor_kwargs=None, mm_processor_output=None):
        return await self.server.generate(prompt_ids=prompt_ids, sampling_params=sampling_params,
                                          request_id=request_id, image_data=image_data, video_data=video_data,
                                          audio_data=audio_data)


def test_hf_server_prompt_logprobs_through_verls_teacher_manager_match_a_direct_forward(models, monkeypatch):
    from transformers import AutoModelForCausalLM
    from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager
    from verl.utils.config import omega_conf_to_dataclass
    from verl.workers.utils.padding import response_from_nested

    from verl_sdar.cpu.hf_rollout import HFRolloutServer
    from verl_sdar.teacher_sources import ModelSource, teacher_server_config

    root, student, teacher, _ = models
    monkeypatch.chdir(root)
    cfg = _compose(f"actor_rollout_ref.model.path={student}", "sdar.teacher.source=model",
                   f"sdar.teacher.model.path={teacher}", "actor_rollout_ref.rollout.name=hf",
                   "actor_rollout_ref.rollout.dtype=float32")  # as the CPU defaults set it
    sdar = SDARConfig.from_config(cfg)
    private = teacher_server_config(cfg, sdar)
    distillation = omega_conf_to_dataclass(private.distillation)
    teacher_cfg = distillation.teacher_models["default"]
    server = HFRolloutServer(config=teacher_cfg.inference,
                             model_config={"_target_": "verl.workers.config.HFModelConfig", "path": str(teacher)},
                             replica_rank=0)
    source = object.__new__(ModelSource)  # the scoring half of the source, without Ray servers
    source.model_path = str(teacher)
    source.client = AsyncTeacherLLMServerManager(private, {"default": _DirectClient(server)})

    sequences = [[1, 5, 6, 7, 9, 11, 3], [4, 8, 15, 16, 23, 42, 2, 7, 7]]
    got = source.log_probs(sequences)

    # verl's own request shape: one prompt of the whole sequence, prompt_logprobs=0, max_tokens=1
    ids, lps = asyncio.run(source.client.compute_teacher_logprobs_single(sequences[0]))
    assert ids.shape == lps.shape == (len(sequences[0]), 1)

    model = AutoModelForCausalLM.from_pretrained(teacher).eval()
    for seq, row in zip(sequences, got, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0].float()
        expected = torch.log_softmax(logits[:-1], dim=-1).gather(-1, torch.tensor(seq[1:])[:, None])[:, 0]
        assert row.shape == (len(seq),)
        torch.testing.assert_close(row[:-1], expected, atol=1e-4, rtol=1e-4)
        assert row[-1] == 0.0

    # the trainer's response slice: the last R positions' log-probs are those of the R response tokens
    response_lens = [3, 4]
    nested = torch.nested.as_nested_tensor(got, layout=torch.jagged)
    mask = torch.nested.as_nested_tensor([torch.ones(n) for n in response_lens], layout=torch.jagged)
    responses = response_from_nested(nested, mask).unbind(0)
    for seq, response, n in zip(sequences, responses, response_lens, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        start = len(seq) - n
        direct = torch.stack([log_probs[start + j - 1, seq[start + j]] for j in range(n)])
        torch.testing.assert_close(response, direct, atol=1e-4, rtol=1e-4)


def test_the_teacher_servers_config_is_private_and_verl_accepts_it(models, monkeypatch):
    from verl.utils.config import omega_conf_to_dataclass

    from verl_sdar.teacher_sources import teacher_pool_spec, teacher_server_config

    root, student, teacher, _ = models
    monkeypatch.chdir(root)
    cfg = _compose(f"actor_rollout_ref.model.path={student}", "sdar.teacher.source=model",
                   f"sdar.teacher.model.path={teacher}", "sdar.teacher.model.n_gpus_per_node=2",
                   "sdar.teacher.max_prompt_length=200", "+sdar.teacher.model.inference.max_num_seqs=16",
                   "actor_rollout_ref.rollout.name=hf")  # as the CPU defaults set it
    sdar = SDARConfig.from_config(cfg)
    assert teacher_pool_spec(sdar) == [2]
    private = teacher_server_config(cfg, sdar)
    assert cfg.distillation.enabled is False  # verl's distillation loss and teacher queries stay off
    distillation = omega_conf_to_dataclass(private.distillation)
    assert distillation.enabled and not distillation.distillation_loss.loss_settings.use_topk
    (key, teacher_cfg), = distillation.teacher_models.items()
    assert key == "default" and teacher_cfg.model_path == str(teacher)
    assert teacher_cfg.num_replicas == 2 and teacher_cfg.per_replica_world_size == 1
    inference = teacher_cfg.inference
    assert inference.name == cfg.actor_rollout_ref.rollout.name and inference.load_format == "auto"
    assert inference.max_num_seqs == 16
    # the whole teacher row is the prompt of a one-token request
    assert inference.prompt_length == 200 + cfg.actor_rollout_ref.rollout.response_length
    assert inference.response_length == 1
    assert teacher_pool_spec(SDARConfig.from_config(_compose())) is None


def test_the_7b_teacher_gpu_recipe_composes_as_sdar_plus_the_teacher_block(monkeypatch, tmp_path):
    """recipes/alfworld/sdar_teacher_7b.yaml (untested on GPU): recipes/alfworld/sdar.yaml with
    Qwen2.5-7B-Instruct as teacher on 2 GPUs of its own; verl's typed configs accept it."""
    from test_recipes import compose_recipe, file_keys, has_key, stock_verl
    from verl.utils.config import omega_conf_to_dataclass, validate_config

    from verl_sdar.teacher_sources import teacher_pool_spec, teacher_server_config

    monkeypatch.chdir(tmp_path)
    path = REPO / "recipes" / "alfworld" / "sdar_teacher_7b.yaml"
    assert path.read_text().startswith("# UNTESTED ON GPU")
    stock = stock_verl()
    assert all(has_key(stock, key) for key in file_keys(path))
    cfg = compose_recipe("alfworld", "sdar_teacher_7b")
    plain = compose_recipe("alfworld", "sdar")
    OmegaConf.resolve(cfg)
    OmegaConf.resolve(plain)
    sdar, sdar_plain = SDARConfig.from_config(cfg), SDARConfig.from_config(plain)
    assert sdar.teacher.source == "model" and sdar.teacher.model.path == "Qwen/Qwen2.5-7B-Instruct"
    assert sdar.objective == sdar_plain.objective == "sdar" and sdar.privileged == sdar_plain.privileged
    assert (sdar.coef, sdar.beta, sdar.gate) == (sdar_plain.coef, sdar_plain.beta, sdar_plain.gate)
    assert cfg.actor_rollout_ref.model.path == "Qwen/Qwen2.5-3B-Instruct"
    cfg_rest, plain_rest = OmegaConf.to_container(cfg), OmegaConf.to_container(plain)
    for rest in (cfg_rest, plain_rest):
        rest.pop("sdar")
        rest["trainer"].pop("experiment_name")
        rest["trainer"].pop("default_local_dir")
        rest["actor_rollout_ref"]["rollout"]["trace"].pop("experiment_name")
    assert cfg_rest == plain_rest  # only the teacher (and the run's name) differ from sdar.yaml
    assert teacher_pool_spec(sdar) == [2]
    distillation = omega_conf_to_dataclass(teacher_server_config(cfg, sdar).distillation)
    teacher = distillation.teacher_models["default"]
    assert teacher.num_replicas == 2 and teacher.per_replica_world_size == 1
    assert teacher.inference.name == "vllm" and teacher.inference.load_format == "auto"
    assert teacher.inference.max_model_len == 8192 >= teacher.inference.prompt_length + 1
    assert not cfg.distillation.enabled
    validate_config(cfg, use_reference_policy=True, use_critic=False)


# ----------------------------------------------------------------------------- start-up checks
def test_a_teacher_with_another_tokenizer_fails_at_start_up_naming_both_models(models, monkeypatch):
    root, student, teacher, other = models
    monkeypatch.chdir(root)
    base = (f"actor_rollout_ref.model.path={student}", "sdar.teacher.source=model")
    same = _compose(*base, f"sdar.teacher.model.path={teacher}")
    check_teacher_tokenizer(same, SDARConfig.from_config(same))  # other seed and width, same tokenizer
    bad = _compose(*base, f"sdar.teacher.model.path={other}")
    with pytest.raises(SDARConfigError, match="vocabularies differ") as info:
        check_teacher_tokenizer(bad, SDARConfig.from_config(bad))
    assert str(student) in str(info.value) and str(other) in str(info.value)
    with pytest.raises(SystemExit, match="sdar.teacher.model.path"):
        ValidateOnJobStart().on_job_start(bad)
    with pytest.raises(SDARConfigError, match="needs sdar.teacher.model.path"):
        SDARConfig.from_config(_compose(*base))
    with pytest.raises(SDARConfigError, match="temperature"):
        SDARConfig.from_config(_compose(*base, f"sdar.teacher.model.path={teacher}",
                                        "actor_rollout_ref.rollout.temperature=0.7"))


def test_main_ppo_refuses_a_teacher_with_another_tokenizer_before_starting_ray(models):
    root, student, _, other = models
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'cpu'}",
           "--config-name=codeword_sdar", f"actor_rollout_ref.model.path={student}", "sdar.teacher.source=model",
           f"sdar.teacher.model.path={other}", f"hydra.run.dir={root / 'hydra_bad_tokenizer'}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root,
                          env={**__import__("os").environ, "VERL_SDAR_WORK": str(root)})
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "vocabularies differ" in out and str(other) in out and str(student) in out
    assert "ray.init" not in out and "Started a local Ray instance" not in out


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def codeword(models):
    """The code-word data, every other row without privileged text (as in tests/test_e2e_cpu.py)."""
    from verl_sdar.tasks.codeword import build

    root = models[0]
    data = build(root / "codeword", n_train=16, n_val=8, seed=0)
    for split in ("train", "val"):
        df = pd.read_parquet(data / f"{split}.parquet")
        df["extra_info"] = [
            {**info, "privileged": info["privileged"] if i % 2 == 0 else ""} for i, info in enumerate(df["extra_info"])
        ]
        df.to_parquet(data / f"{split}.parquet")
    return data


def _teacher_model_step(root: Path, teacher: Path, name: str) -> tuple[dict, str]:
    records = run_main_ppo(
        root, "cpu/codeword_sdar", "sdar.teacher.source=model", f"sdar.teacher.model.path={teacher}",
        "trainer.total_training_steps=1", "trainer.save_freq=-1", "trainer.test_freq=-1",
        "trainer.val_before_train=false", f"trainer.experiment_name={name}", "data.shuffle=false",
        log_name=name, timeout=900,
    )
    step = {r["step"]: r["data"] for r in records if "sdar/gap_mean" in r["data"]}[1]
    return step, (root / f"{name}.log").read_text()


def test_sdar_step_with_a_separate_teacher_model_on_verls_teacher_servers(models, codeword):
    """One SDAR step whose teacher rows are scored by a second tiny model (seed 1, twice as wide,
    same tokenizer) on an hf replica that verl's ``MultiTeacherModelManager`` starts on its own
    resource pool (one more fake GPU). Rows without privileged text: the teacher row is the student
    row, but the teacher is another model, so teacher and student log-probs differ there too."""
    root, _, teacher, _ = models
    step, log = _teacher_model_step(root, teacher, "teacher_model")
    assert step["sdar/rows_with_privileged"] == pytest.approx(0.5)
    assert step["sdar/teacher_pass_s"] > 0
    assert step["sdar/teacher_nonfinite_tokens"] == 0.0
    assert step["sdar/plain_rows_gap_abs_max"] > 1e-2  # another model scores the same sequence
    assert 0.0 < step["sdar/gate_mean"] < 1.0
    assert step["actor/sdar/loss"] == step["actor/sdar/loss"]  # not NaN
    assert "verl-sdar: teacher model" in log and str(teacher) in log
    # the CPU defaults give the teacher pool its fake GPU and fp32 (no override in this run)
    assert "ray_kwargs.ray_init.num_gpus: unset -> 2" in log
    assert "sdar.teacher.model.inference.dtype: unset -> 'float32'" in log


def test_a_teacher_model_with_the_students_weights_scores_plain_rows_as_the_student(models, codeword, tmp_path):
    """The same path with a copy of the student's weights as teacher: on rows without privileged
    text the teacher sequence is the student's, so the servers' prompt log-probs, sliced by the
    trainer, must equal the actor's old_log_probs (an off-by-one would not), while privileged rows
    still differ."""
    import shutil

    root, student, _, _ = models
    twin = shutil.copytree(student, tmp_path / "student-twin")
    step, _ = _teacher_model_step(root, twin, "teacher_twin")
    assert step["sdar/plain_rows_gap_abs_max"] < 1e-3, step["sdar/plain_rows_gap_abs_max"]
    assert step["sdar/gap_std"] > 10 * step["sdar/plain_rows_gap_abs_max"]
