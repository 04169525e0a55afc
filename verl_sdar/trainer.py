"""The SDAR trainer: verl's synchronous V1 trainer plus a teacher log-prob pass and the SDAR loss.

Registered as ``trainer.v1.trainer_mode=sdar`` (``algorithm=sdar`` selects it). It overrides
verl's hooks; the work is done by the modules it calls:

1. rollout, reward, batch balancing, ``old_log_probs``                -- verl
2. teacher pass (``_compute_old_log_prob``): privileged texts, teacher  -- ``teacher_pass``
   rows, ``teacher_log_probs`` from ``sdar.teacher.source``, gap/gate
   metrics
3. advantages (``_compute_advantage``): episode, group and env-fault    -- ``advantage_pass``
   metrics, the invalid-action penalty; verl's steps (KL in reward,
   rollout correction, the estimator, e.g. ``turn_row_grpo``); the
   objective's transform                                               -- ``methods``
4. actor update with ``ppo_loss + coef * term``                        -- verl + ``loss``
"""

from __future__ import annotations

import logging
import os

from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer

from . import metrics as sdar_metrics
from .advantage_pass import Prepared, after_advantages, before_advantages
from .config import SDARConfig, check_datasets, check_teacher_tokenizer
from .faults import FaultMonitor
from .loss import make_actor_loss
from .names import TRAINER_MODE
from .plugin_status import check_registered
from .privileged import PrivilegedSource, make_source
from .skill_validation import validate_with_and_without_skills
from .state import checkpoint_folder, load_state, save_state
from .teacher_pass import TeacherPass
from .teacher_sources import TEACHER_POOL, make_teacher_source, teacher_pool_spec

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))


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
            self.teacher_pass = TeacherPass(
                self.sdar, self.tokenizer, self.source, make_teacher_source(self.sdar.teacher.source, self),
                temperature=self.config.actor_rollout_ref.rollout.temperature,
                chat_template_kwargs=self.config.data.get("apply_chat_template_kwargs"),
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
                batch = self.teacher_pass(batch, metrics)
        return batch

    # -------------------------------------------------------------- advantages
    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        prepared = Prepared(batch)
        if batch.fields is None or "extra_fields" in batch.fields:  # agent-loop rows
            prepared = before_advantages(batch, self.sdar, self.fault_monitor, self.global_steps, metrics)
        batch = super()._compute_advantage(prepared.batch, metrics)
        return after_advantages(batch, prepared, self.sdar, self.global_steps, metrics)

    # ------------------------------------------------------------- validation
    def _validate(self) -> dict[str, float]:
        """verl's validation; for Skill-GRPO twice, without and with the student's skills
        (``val_no_skill/*``, ``val_with_skill/*``; ``skill_validation``)."""
        if not self.sdar.student_prompt:
            return super()._validate()
        return validate_with_and_without_skills(self, super()._validate)

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
