"""The SDAR trainer: verl's synchronous V1 trainer plus a teacher log-prob pass and the SDAR loss.

Registered as ``trainer.v1.trainer_mode=sdar`` (``algorithm=sdar`` selects it). One step:

1. rollout (verl's agent loops), reward, batch balancing           -- verl
2. ``old_log_probs``                                               -- verl
3. teacher pass: each row's prompt gets its privileged block; the  -- here
   actor's own ``compute_log_prob`` (same, pre-update weights)
   scores the unchanged response -> ``teacher_log_probs``
4. reference log-probs, GRPO advantages                            -- verl
   (RLSD reweights them per token, OPSD zeroes them)               -- here
5. actor update with ``ppo_loss + coef * objective`` (``loss.py``)  -- verl + here

Teacher rows travel through TransferQueue in their own partition and are cleared after use.
"""

from __future__ import annotations

import json
import logging
import os
import time

import torch
import transfer_queue as tq
from tensordict import NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer
from verl.workers.utils.padding import response_from_nested, response_to_nested

from .config import TRAINER_MODE, SDARConfig
from .episodes import first_row_per_episode, rate_by_group
from .loss import make_actor_loss
from .objectives import compute_gate, gap_statistics, rlsd_token_advantages, turn_row_grpo_advantages
from .skills import Retrieval, Retriever, SkillLibrary, make_retriever
from .teacher import PrivilegedBlocks, build_teacher_rows, privileged_texts

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

TEACHER_PARTITION = "sdar_teacher"
TASK_TYPE_KEY = "task_type"  # extra_info field used for per-task-type gate metrics (verl-agent convention)
STATE_FILE = "sdar_state.json"  # trainer-side SDAR state (skill retriever) inside each global_step_N folder
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


def _last_user_text(messages) -> str | None:
    """Content of the last user message of a chat prompt (a list of role/content dicts)."""
    for message in reversed(list(messages or [])):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return None


def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


@register_trainer(TRAINER_MODE)
class SDARTrainer(PPOTrainerSync):
    """Synchronous PPO/GRPO trainer with SDAR's teacher pass and objective (see module docstring)."""

    def __init__(self, config):
        from .plugin import check_registered

        check_registered()
        self.sdar: SDARConfig = SDARConfig.from_config(config)
        super().__init__(config)

    # ------------------------------------------------------------------ setup
    def _setup(self):
        # The retriever exists before verl's _setup, which loads a checkpoint (and our state with it).
        self.retriever: Retriever | None = None
        if self.sdar.needs_teacher and self.sdar.privileged.source == "skills":
            skills = self.sdar.skills
            self.retriever = make_retriever(
                skills.strategy, SkillLibrary.load(skills.library), seed=skills.seed, ucb_c=skills.ucb_c
            )
        super()._setup()
        if self.sdar.needs_teacher:
            privileged = self.sdar.privileged
            self.privileged_blocks = PrivilegedBlocks(
                self.tokenizer, header=privileged.header, role=privileged.role, placement=privileged.placement
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
        """Score each row's response under its privileged prompt with the actor's current weights."""
        start = time.perf_counter()
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        if "position_ids" in rows.keys() and any(r.dim() != 1 for r in _rows(rows["position_ids"])):
            raise NotImplementedError("verl-sdar: multimodal (multi-axis rope) position ids are not supported yet")

        extra_infos = _rows(rows["extra_info"])
        prompts = _rows(rows["prompts"])
        if self.retriever is None:
            texts = privileged_texts(extra_infos, self.sdar.privileged.key)
        else:
            texts = self._retrieve_skills(batch, rows, prompts, extra_infos, metrics)
        blocks = [self.privileged_blocks(text) for text in texts]
        insert_at, cut_from = [], []
        for prompt, block in zip(prompts, blocks):
            if block:
                ids = prompt.tolist()
                k = self.privileged_blocks.insertion_index(ids)
                insert_at.append(k)
                cut_from.append(self.privileged_blocks.cut_index(ids, k))
            else:
                insert_at.append(0)
                cut_from.append(0)
        built = build_teacher_rows(
            prompts,
            _rows(rows["responses"]),
            blocks,
            insert_at,
            cut_from=cut_from,
            max_prompt_length=self.sdar.teacher.max_prompt_length,
            keep_tail=self.privileged_blocks.tail_length,
        )

        teacher = rows.exclude(*_SEQUENCE_FIELDS, "old_log_probs", "entropy", "log_probs")
        teacher["input_ids"] = _nested(built.input_ids)
        teacher["prompts"] = _nested(built.prompts)
        teacher["attention_mask"] = _nested(built.attention_mask)
        teacher["position_ids"] = _nested(built.position_ids)
        tags = []
        for tag, prompt, ids in zip(batch.tags, built.prompts, built.input_ids):
            tag = dict(tag)
            tag.update(prompt_len=int(prompt.numel()), seq_len=int(ids.numel()))
            tags.append(tag)

        tq.kv_batch_put(keys=batch.keys, partition_id=TEACHER_PARTITION, fields=teacher, tags=tags)
        try:
            extra_info = dict(batch.extra_info)
            extra_info.update(
                calculate_entropy=False,
                compute_loss=False,
                temperature=self.config.actor_rollout_ref.rollout.temperature,
            )
            meta = KVBatchMeta(partition_id=TEACHER_PARTITION, keys=list(batch.keys), tags=tags, extra_info=extra_info)
            output = self.actor_rollout_wg.compute_log_prob(meta)
            if len(output) != len(batch):
                raise RuntimeError(f"teacher pass returned {len(output)} rows for {len(batch)}")
            scored = tq.kv_batch_get(
                keys=batch.keys, partition_id=TEACHER_PARTITION, select_fields=["log_probs", "response_mask"]
            )
            teacher_log_probs = response_from_nested(scored["log_probs"], scored["response_mask"])
        finally:
            tq.kv_clear(keys=batch.keys, partition_id=TEACHER_PARTITION)

        batch = tq.kv_batch_put(  # the returned meta lists every stored field, the new one included
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({"teacher_log_probs": teacher_log_probs}, batch_size=len(batch)),
        )
        metrics.update(self._teacher_metrics(batch, rows, teacher_log_probs, texts, built, extra_infos))
        metrics["sdar/teacher_pass_s"] = time.perf_counter() - start
        return batch

    def _retrieve_skills(self, batch, rows, prompts, extra_infos, metrics: dict) -> list[str]:
        """Privileged text of each row from the skill library; UCB learns from the rows' rewards.

        Each real row's outcome (its summed token-level score, i.e. the episode reward written on
        the row) is fed back for the skills retrieved for it.
        """
        key = self.sdar.skills.task_type_key
        raw_prompts = _rows(rows["raw_prompt"]) if "raw_prompt" in rows.keys() else None
        scores = _rows(rows["rm_scores"]) if "rm_scores" in rows.keys() else None
        self.retriever.reset_counts()
        texts, retrievals = [], []
        for i, info in enumerate(extra_infos):
            task_type = info.get(key) if isinstance(info, dict) else None
            prompt_text = None
            if self.sdar.skills.strategy == "keyword":
                prompt_text = _last_user_text(raw_prompts[i]) if raw_prompts is not None else None
                if prompt_text is None:
                    prompt_text = self.tokenizer.decode(prompts[i].tolist(), skip_special_tokens=True)
            retrieval: Retrieval = self.retriever.retrieve(prompt=prompt_text, task_type=task_type)
            texts.append(retrieval.text)
            retrievals.append(retrieval)
        if scores is not None:
            for i in _real_rows(batch.tags):
                self.retriever.update(retrievals[i], float(scores[i].sum()))
        unknown = sum(self.retriever.unknown.values())
        metrics["sdar/skills/unknown_task_type_rows"] = unknown / max(self.retriever.rows, 1)
        return texts

    # ------------------------------------------------------------- checkpoint
    def _save_checkpoint(self):
        # Written before verl's save, which marks the checkpoint complete (latest_checkpointed_iteration.txt) last.
        if self.retriever is not None:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump({"retriever": self.retriever.state_dict()}, f)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        super()._load_checkpoint()
        if self.retriever is None or self.global_steps == 0:
            return
        trainer_cfg = self.config.trainer
        if trainer_cfg.resume_mode == "resume_path":
            folder = trainer_cfg.resume_from_path
        else:
            folder = os.path.join(trainer_cfg.default_local_dir, f"global_step_{self.global_steps}")
        path = os.path.join(folder, STATE_FILE)
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"resuming from {folder} with sdar.privileged.source=skills, but it has no {STATE_FILE}; "
                "the skill retriever's state (UCB statistics) would be lost"
            )
        with open(path) as f:
            self.retriever.load_state_dict(json.load(f)["retriever"])
        logger.info("verl-sdar: restored skill retriever state from %s", path)

    def _teacher_metrics(self, batch, rows, teacher_log_probs, texts, built, extra_infos) -> dict[str, float]:
        """Gap / gate statistics at the pre-update policy over real (non-padding) rows."""
        real = _real_rows(batch.tags)
        if not real:
            return {}
        per_row = {  # each field split into rows once
            "old": _rows(rows["old_log_probs"]),
            "teacher": _rows(teacher_log_probs),
            "mask": _rows(rows["response_mask"]),
            "entropy": _rows(rows["entropy"]),
        }
        padded = TensorDict(
            {name: _nested([values[i] for i in real]) for name, values in per_row.items()}, batch_size=len(real)
        ).to_padded_tensor()
        mask = padded["mask"].bool()
        gap = (padded["teacher"] - padded["old"]).masked_fill(~mask, 0.0)
        gate = compute_gate(gap, beta=self.sdar.beta, gate=self.sdar.gate, entropy=padded["entropy"])
        stats = gap_statistics(gap, gate, mask)
        metrics = {f"sdar/{k}": float(v) for k, v in stats.items()}
        with_text = [i for i in real if texts[i]]
        metrics["sdar/rows_with_privileged"] = len(with_text) / len(real)
        plain = torch.tensor([not texts[i] for i in real])
        if plain.any():
            # Self-check of the teacher pass: without privileged text the teacher sequence is the
            # student's, so this must be ~0 (float noise from different micro-batching only).
            metrics["sdar/plain_rows_gap_abs_max"] = float(gap[plain].abs().max())
        metrics["sdar/privileged_tokens_mean"] = sum(built.inserted_tokens[i] for i in real) / len(real)
        metrics["sdar/teacher_rows_truncated"] = sum(built.truncated[i] for i in real) / len(real)
        metrics["sdar/teacher_removed_tokens_mean"] = sum(built.removed_context_tokens[i] for i in real) / len(real)
        task_types = [extra_infos[i].get(TASK_TYPE_KEY) if isinstance(extra_infos[i], dict) else None for i in real]
        for task_type in sorted({t for t in task_types if t is not None}, key=str):
            rows_of_type = torch.tensor([t == task_type for t in task_types])
            type_stats = gap_statistics(gap[rows_of_type], gate[rows_of_type], mask[rows_of_type])
            for key in ("gate_mean", "gate_active_ratio", "gap_mean"):
                metrics[f"sdar/task_type/{task_type}/{key}"] = float(type_stats[key])
        return metrics

    # -------------------------------------------------------------- advantages
    def _turn_row_grpo_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        """GRPO over all turn rows of each group; row score = episode reward - own invalid penalty."""
        fields = ["uid", "rm_scores", "response_mask", "extra_fields"]
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        nested_mask = rows["response_mask"]
        extra = _rows(rows["extra_fields"])
        penalties = torch.tensor(
            [float(e.get("invalid_action_penalty", 0.0)) if isinstance(e, dict) else 0.0 for e in extra]
        )
        scores = torch.stack([r.float().sum() for r in _rows(rows["rm_scores"])]) - penalties
        advantages = turn_row_grpo_advantages(
            scores,
            [str(u) for u in _rows(rows["uid"])],
            norm_by_std=self.config.algorithm.get("norm_adv_by_std_in_grpo", True),
        )
        mask = nested_mask.to_padded_tensor(0) if nested_mask.is_nested else nested_mask
        token_adv = advantages[:, None] * mask.to(advantages.dtype)
        nested = response_to_nested(token_adv, nested_mask)
        batch = tq.kv_batch_put(  # the returned meta lists every stored field, the new one included
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({"advantages": nested, "returns": nested.clone()}, batch_size=len(batch)),
        )
        real = _real_rows(batch.tags)
        metrics["sdar/invalid_action_rows"] = float((penalties[real] > 0).float().mean()) if real else 0.0
        return batch

    def _episode_metrics(self, batch: KVBatchMeta, metrics: dict) -> None:
        """Training success rate, overall and per task type, counting each episode once.

        Agent loops that report an outcome put ``won`` (and ``task_type``) in every turn row's
        ``extra_fields``; single-turn rows without it are skipped.
        """
        if batch.fields is not None and "extra_fields" not in batch.fields:
            return
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        extra = _rows(rows["extra_fields"])
        real = _real_rows(batch.tags)
        keys = [batch.keys[i] for i in real]
        episodes = [real[j] for j in first_row_per_episode(keys)]
        episodes = [i for i in episodes if isinstance(extra[i], dict) and "won" in extra[i]]
        if not episodes:
            return
        won = [float(bool(extra[i]["won"])) for i in episodes]
        metrics["episode/success_rate"] = sum(won) / len(won)
        metrics["episode/episodes"] = float(len(won))
        for task_type, (rate, count) in rate_by_group([extra[i].get(TASK_TYPE_KEY) for i in episodes], won).items():
            metrics[f"episode/{task_type}/success_rate"] = rate
            metrics[f"episode/{task_type}/episodes"] = float(count)

    def _val_metrics_update(self, data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs):
        """verl's validation metrics plus success per task type (one value per final episode row).

        Uses the reward function's ``success`` and ``task_type`` extra outputs when both are present
        (verl skips string-valued extras in its own statistics): ``val-core/<source>/episode_success``
        (all episodes of the source), ``val-core/<source>/success/<type>``,
        ``val-aux/<source>/episodes/<type>``, and ``val-aux/<source>/<name>/<type>`` for every other
        numeric extra (e.g. WebShop's ``webshop_score``).
        """
        metric_dict = super()._val_metrics_update(
            data_sources, sample_uids, reward_extra_infos_dict, sample_turns, **kwargs
        )
        success = reward_extra_infos_dict.get("success")
        task_types = reward_extra_infos_dict.get(TASK_TYPE_KEY)
        if not success or not task_types or len(success) != len(data_sources):
            return metric_dict
        by_source: dict[str, list[int]] = {}
        for i, source in enumerate(data_sources):
            if success[i] is not None:
                by_source.setdefault(str(source), []).append(i)
        # other numeric per-episode values the reward returns (e.g. WebShop's Score) per type too
        numeric = [
            name for name, values in reward_extra_infos_dict.items()
            if name not in ("success", "reward", TASK_TYPE_KEY) and len(values) == len(data_sources)
            and all(v is None or isinstance(v, (int, float)) for v in values)
        ]
        for source, idx in by_source.items():
            groups = [task_types[i] for i in idx]
            metric_dict[f"val-core/{source}/episode_success"] = sum(float(success[i]) for i in idx) / len(idx)
            rates = rate_by_group(groups, [float(success[i]) for i in idx])
            for task_type, (rate, count) in rates.items():
                metric_dict[f"val-core/{source}/success/{task_type}"] = rate
                metric_dict[f"val-aux/{source}/episodes/{task_type}"] = float(count)
            for name in numeric:
                values = reward_extra_infos_dict[name]
                kept = [i for i in idx if values[i] is not None]
                means = rate_by_group([task_types[i] for i in kept], [float(values[i]) for i in kept])
                for task_type, (mean, _) in means.items():
                    metric_dict[f"val-aux/{source}/{name}/{task_type}"] = mean
        return metric_dict

    def _compute_advantage(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        self._episode_metrics(batch, metrics)
        if self.sdar.multi_turn.turn_row_grpo:
            batch = self._turn_row_grpo_advantage(batch, metrics)
        else:
            batch = super()._compute_advantage(batch, metrics)
        if self.sdar.objective not in ("rlsd", "opsd"):
            return batch
        fields = ["advantages", "response_mask", "old_log_probs", "teacher_log_probs"]
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=fields)
        nested_mask = rows["response_mask"]
        padded = rows.to_padded_tensor()
        mask = padded["response_mask"].bool()
        if self.sdar.objective == "opsd":
            advantages = torch.zeros_like(padded["advantages"])
        else:
            mix = self.sdar.rlsd.mix_at(self.global_steps)
            advantages = rlsd_token_advantages(
                padded["advantages"],
                padded["old_log_probs"],
                padded["teacher_log_probs"],
                mask,
                mix=mix,
                clip_eps=self.sdar.rlsd.clip_eps,
            )
            metrics["sdar/rlsd_mix"] = mix
        batch = tq.kv_batch_put(  # the returned meta lists every stored field, the new one included
            keys=batch.keys,
            partition_id=batch.partition_id,
            fields=TensorDict({"advantages": response_to_nested(advantages, nested_mask)}, batch_size=len(batch)),
        )
        return batch
