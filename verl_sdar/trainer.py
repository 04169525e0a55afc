"""The SDAR trainer: verl's synchronous V1 trainer plus a teacher log-prob pass and the SDAR loss.

Registered as ``trainer.v1.trainer_mode=sdar`` (``algorithm=sdar`` selects it). It overrides
verl's hooks and moves rows through TransferQueue; the work is done by the modules it calls:

1. rollout, reward, batch balancing, ``old_log_probs``               -- verl
2. teacher pass (``_compute_old_log_prob``): privileged texts         -- ``privileged`` (sources)
   teacher rows (block spliced into each prompt, response unchanged)  -- ``teacher.TeacherBuilder``
   ``sdar.teacher.source`` scores them -> ``teacher_log_probs``       -- ``teacher_sources``
   (the actor's own ``compute_log_prob`` by default; verl's reference
   workers; or a separate model on verl's teacher servers); gap/gate metrics
                                                                      -- ``metrics``
3. advantages (``_compute_advantage``): env-fault counts and stop    -- ``faults``
   rule, invalid-action penalty on                                    -- ``advantages``
   rewards, verl's steps (KL in reward, rollout correction, the
   estimator, e.g. ``turn_row_grpo``), the objective's transform      -- ``methods``
4. actor update with ``ppo_loss + coef * term``                       -- verl + ``loss``

Teacher rows travel in their own TransferQueue partition and are cleared after use.
"""

from __future__ import annotations

import logging
import os
import time

import torch
import transfer_queue as tq
from tensordict import NonTensorStack, TensorDict
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer
from verl.workers.utils.padding import response_from_nested, response_to_nested

from . import metrics as sdar_metrics
from .advantages import penalise_advantages, penalise_rewards, row_penalties
from .config import SDARConfig, check_datasets, check_teacher_tokenizer
from .envs.contract import INVALID_ACTION_PENALTY
from .faults import FaultMonitor, count_faults, fault_metrics, trainable_rows
from .loss import make_actor_loss
from .names import TRAINER_MODE
from .plugin_status import check_registered
from .privileged import PrivilegedSource, TeacherInputs, make_source
from .state import checkpoint_folder, load_state, save_state
from .teacher import TeacherBuilder
from .teacher_sources import TEACHER_POOL, make_teacher_source, teacher_pool_spec

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

TEACHER_PARTITION = "sdar_teacher"
# Fields recomputed for the teacher row; every other field of the student row is carried over.
_SEQUENCE_FIELDS = ("input_ids", "prompts", "attention_mask", "position_ids")


def _rows(value) -> list:
    """A stored field as a list of per-row values (tensors for nested/stacked, objects otherwise)."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    if isinstance(value, NonTensorStack):
        return value.tolist()
    return list(value)


def _real_rows(tags: list[dict]) -> list[int]:
    """Indices of the rows that are not verl's batch-balancing padding clones."""
    return [i for i, tag in enumerate(tags) if not tag.get("is_padding", False)]


def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def _plain_dict(node) -> dict:
    """A config mapping (or None) as a plain dict."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


def _put(batch: KVBatchMeta, **fields) -> KVBatchMeta:
    """Store fields on the batch's rows; the returned meta lists every stored field, the new ones included."""
    return tq.kv_batch_put(
        keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
    )


@register_trainer(TRAINER_MODE)
class SDARTrainer(PPOTrainerSync):
    """Synchronous PPO/GRPO trainer with SDAR's teacher pass and objective (see module docstring)."""

    def __init__(self, config):
        check_registered()
        self.sdar: SDARConfig = SDARConfig.from_config(config)
        check_datasets(config, self.sdar)  # again here for launches that bypass Hydra's callbacks
        check_teacher_tokenizer(config, self.sdar)
        self.fault_monitor = FaultMonitor(self.sdar.faults.max_env_error_rate, self.sdar.faults.patience_steps)
        super().__init__(config)

    # ------------------------------------------------------------ trainer mode
    @property
    def trainer_mode(self) -> str:
        """Always ``"sync"``: verl's V1 base trainer compares this attribute with ``"sync"`` to choose
        the replay buffer, the dataloader's fetch size (``data.gen_batch_size``), whether prompts are
        stored in TransferQueue and whether checkpoints carry TransferQueue state. SDAR is
        synchronous, so it gets exactly stock verl's sync behaviour; ``trainer.v1.trainer_mode=sdar``
        in the config only selects this class (and stays visible in the logged config)."""
        return "sync"

    @trainer_mode.setter
    def trainer_mode(self, value: str) -> None:
        # verl's constructor assigns config.trainer.v1.trainer_mode; only ours may select this class
        if value not in (TRAINER_MODE, "sync"):
            raise ValueError(f"SDARTrainer runs with trainer.v1.trainer_mode={TRAINER_MODE!r}, got {value!r}")

    def _init_resource_pool_mgr(self):
        """verl's resource pools, plus the teacher model's own pool with ``sdar.teacher.source=model``
        (verl's ``Role.TeacherModel`` maps to it, as for verl's distillation teacher)."""
        super()._init_resource_pool_mgr()
        spec = teacher_pool_spec(self.sdar)
        if spec is not None:
            from verl.trainer.ppo.utils import Role

            self.resource_pool_manager.resource_pool_spec[TEACHER_POOL] = spec
            self.mapping[Role.TeacherModel] = TEACHER_POOL  # the manager holds this same dict

    def _setup(self):
        # The source exists before verl's _setup, which loads a checkpoint (and our state with it).
        self.source: PrivilegedSource | None = make_source(self.sdar) if self.sdar.needs_teacher else None
        super()._setup()
        if self.sdar.needs_teacher:
            privileged = self.sdar.privileged
            self.teacher_source = make_teacher_source(self.sdar.teacher.source, self)
            self.teacher_builder = TeacherBuilder(
                self.tokenizer, header=privileged.header, role=privileged.role, placement=privileged.placement,
                max_prompt_length=self.sdar.teacher.max_prompt_length, format=privileged.format,
                chat_template_kwargs=_plain_dict(self.config.data.get("apply_chat_template_kwargs")),
            )
        if self.sdar.adds_loss_term:
            actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
            self.actor_rollout_wg.set_loss_fn(make_actor_loss(actor_config, self.sdar))
            logger.info("verl-sdar: actor loss = ppo_loss + %s * %s term", self.sdar.coef, self.sdar.objective)

    # ------------------------------------------------------------ teacher pass
    def _compute_old_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        batch = super()._compute_old_log_prob(batch, metrics)
        if self.sdar.needs_teacher:
            with marked_timer("teacher", self.timing_raw, color="purple"):
                batch = self._compute_teacher_log_prob(batch, metrics)
        return batch

    def _compute_teacher_log_prob(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """Score each row's response under its privileged prompt with the ``sdar.teacher.source`` weights."""
        start = time.perf_counter()
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        if "position_ids" in rows.keys() and any(r.dim() != 1 for r in _rows(rows["position_ids"])):
            raise NotImplementedError("verl-sdar: multimodal (multi-axis rope) position ids are not supported yet")
        inputs = TeacherInputs(
            extra_infos=_rows(rows["extra_info"]),
            prompts=_rows(rows["prompts"]),
            raw_prompts=_rows(rows["raw_prompt"]) if "raw_prompt" in rows.keys() else None,
            scores=[float(r.sum()) for r in _rows(rows["rm_scores"])] if "rm_scores" in rows.keys() else None,
            real=_real_rows(batch.tags),
            decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=True),
        )
        texts = self.source.texts(inputs)
        self.source.feedback(inputs)
        built = self.teacher_builder.build(inputs.prompts, _rows(rows["responses"]), texts)

        teacher = rows.exclude(*_SEQUENCE_FIELDS, "old_log_probs", "entropy", "log_probs")
        for name in _SEQUENCE_FIELDS:
            teacher[name] = _nested(getattr(built, name))
        tags = [dict(tag, prompt_len=int(p.numel()), seq_len=int(ids.numel()))
                for tag, p, ids in zip(batch.tags, built.prompts, built.input_ids, strict=True)]
        tq.kv_batch_put(keys=batch.keys, partition_id=TEACHER_PARTITION, fields=teacher, tags=tags)
        try:
            extra_info = dict(batch.extra_info, calculate_entropy=False, compute_loss=False,
                              temperature=self.config.actor_rollout_ref.rollout.temperature)
            meta = KVBatchMeta(partition_id=TEACHER_PARTITION, keys=list(batch.keys), tags=tags, extra_info=extra_info)
            output = self.teacher_source.score(meta)
            if len(output) != len(batch):
                raise RuntimeError(f"teacher pass returned {len(output)} rows for {len(batch)}")
            scored = tq.kv_batch_get(
                keys=batch.keys, partition_id=TEACHER_PARTITION, select_fields=["log_probs", "response_mask"]
            )
            teacher_log_probs = response_from_nested(scored["log_probs"], scored["response_mask"])
        finally:
            tq.kv_clear(keys=batch.keys, partition_id=TEACHER_PARTITION)
        metrics.update(sdar_metrics.store_metrics(tq.kv_list(), TEACHER_PARTITION))
        batch = _put(batch, teacher_log_probs=teacher_log_probs)

        key = self.sdar.skills.task_type_key
        metrics.update(self.source.metrics())
        metrics.update(sdar_metrics.teacher_metrics(
            old_log_probs=_rows(rows["old_log_probs"]), teacher_log_probs=_rows(teacher_log_probs),
            response_mask=_rows(rows["response_mask"]), entropy=_rows(rows["entropy"]), texts=texts, built=built,
            task_types=[i.get(key) if isinstance(i, dict) else None for i in inputs.extra_infos],
            real=inputs.real, beta=self.sdar.beta, gate=self.sdar.gate,
        ))
        metrics["sdar/teacher_pass_s"] = time.perf_counter() - start
        return batch

    # -------------------------------------------------------------- advantages
    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        env_scores, penalties = None, None
        if batch.fields is None or "extra_fields" in batch.fields:
            batch, env_scores, penalties = self._penalise_and_count_episodes(batch, metrics)
        batch = super()._compute_advantage(batch, metrics)
        if env_scores is not None:  # the logged score (critic/score) stays the environment's
            batch = _put(batch, rm_scores=env_scores)
        transform = self.sdar.objective_spec.transform_advantages
        fields = ["advantages", "response_mask", *self.sdar.objective_spec.advantage_fields]
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        padded = rows.to_padded_tensor()
        advantages, mask = padded["advantages"], padded["response_mask"].bool()
        if penalties is not None:  # sdar.invalid_action_penalty=advantage
            advantages = penalise_advantages(advantages, mask, penalties)
        if transform is not None:
            inputs = {name: padded[name] for name in self.sdar.objective_spec.advantage_fields}
            advantages, extra = transform(advantages, inputs, mask, self.sdar, self.global_steps)
            metrics.update(extra)
        if penalties is not None or transform is not None:
            batch = _put(batch, advantages=response_to_nested(advantages, rows["response_mask"]))
        metrics.update(sdar_metrics.advantage_metrics(advantages, mask, _real_rows(batch.tags)))
        return batch

    def _penalise_and_count_episodes(self, batch: KVBatchMeta, metrics: dict):
        """Episode success, GRPO-group and env-fault metrics; each row's invalid-action penalty
        subtracted from its reward. Raises ``faults.EnvFaultError`` when the env error rate trips
        ``sdar.faults``.

        Returns the batch, the rows' unpenalised rewards (None when no reward was penalised) and,
        with ``sdar.invalid_action_penalty=advantage``, the rows' penalties for the advantages
        (else None).
        """
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                               select_fields=["extra_fields", "rm_scores", "response_mask", "responses"])
        extra = _rows(rows["extra_fields"])
        real = _real_rows(batch.tags)
        metrics.update(sdar_metrics.episode_metrics(batch.keys, extra, real))
        metrics.update(sdar_metrics.group_metrics(batch.keys, _rows(rows["responses"]),
                                                  [float(r.sum()) for r in _rows(rows["rm_scores"])], real,
                                                  step=self.global_steps))
        faults = count_faults(batch.keys, extra, real)
        metrics.update(fault_metrics(faults))
        self.fault_monitor.update(self.global_steps, faults,
                                  trainable_rows=trainable_rows(_rows(rows["response_mask"]), real))
        if not any(isinstance(e, dict) and INVALID_ACTION_PENALTY in e for e in extra):
            return batch, None, None
        penalties = row_penalties(extra)
        metrics["sdar/invalid_action_rows"] = sum(penalties[i] > 0 for i in real) / len(real) if real else 0.0
        if not any(penalties):
            return batch, None, None
        if self.sdar.invalid_action_penalty == "advantage":
            return batch, None, penalties
        batch = _put(batch, rm_scores=_nested(penalise_rewards(_rows(rows["rm_scores"]), penalties)))
        return batch, rows["rm_scores"], None

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs):
        """verl's validation metrics plus success per task type (``metrics.validation_metrics``)."""
        metric_dict = super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs
        )
        metric_dict.update(sdar_metrics.validation_metrics(data_sources, reward_extra_infos_dict))
        return metric_dict

    # ------------------------------------------------------------- checkpoint
    def _save_checkpoint(self):
        # Written before verl's save, which marks the checkpoint complete (latest_checkpointed_iteration.txt) last.
        state = self.source.state_dict() if self.source is not None else None
        if state is not None:
            save_state(checkpoint_folder(self.config.trainer, self.global_steps), state)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.source is None or self.source.state_dict() is None or self.global_steps == 0:
            return
        folder = checkpoint_folder(self.config.trainer, self.global_steps, resuming=True)
        what = f"the state of sdar.privileged.source={self.sdar.privileged.source} (e.g. UCB statistics)"
        self.source.load_state_dict(load_state(folder, what=what))
        logger.info("verl-sdar: restored %s state from %s", self.source.state_name, folder)
