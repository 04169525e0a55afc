"""The teacher pass: each row's response scored under its privileged prompt (``teacher_log_probs``).

Run by the trainer after verl's ``old_log_probs``, on the rows in TransferQueue:

1. the privileged texts of the rows                           -- ``sdar.privileged.source`` (``privileged``)
2. teacher rows: the text's block spliced into each prompt,   -- ``teacher.TeacherBuilder``
   the response unchanged, carried in their own partition
   (``TEACHER_PARTITION``, cleared after use)
3. log-probs of the response under the teacher rows           -- ``sdar.teacher.source`` (``teacher_sources``)
4. ``teacher_log_probs`` stored on the student rows; the gap, gate and store metrics (``metrics``)
"""

from __future__ import annotations

import time

import transfer_queue as tq
from omegaconf import OmegaConf
from transfer_queue import KVBatchMeta
from verl.workers.utils.padding import response_from_nested

from . import metrics as sdar_metrics
from .config import SDARConfig
from .envs.contract import NOISY
from .privileged import PrivilegedSource, TeacherInputs
from .rows import field_rows, nested, put_fields, real_rows
from .teacher import TeacherBuilder

__all__ = ["TEACHER_PARTITION", "TeacherPass"]

TEACHER_PARTITION = "sdar_teacher"
# Fields recomputed for the teacher row; every other field of the student row is carried over.
SEQUENCE_FIELDS = ("input_ids", "prompts", "attention_mask", "position_ids")


def _plain_dict(node) -> dict:
    """A config mapping (or None) as a plain dict."""
    if node is None:
        return {}
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)


class TeacherPass:
    """Scores a batch's responses under privileged prompts and stores ``teacher_log_probs``.

    ``source`` gives the privileged texts, ``scorer`` (a ``teacher_sources`` object) the log-probs;
    ``temperature`` is the rollout's (the teacher scores at the temperature the student sampled at).
    """

    def __init__(self, sdar: SDARConfig, tokenizer, source: PrivilegedSource, scorer, *, temperature: float,
                 chat_template_kwargs=None):
        privileged = sdar.privileged
        self.sdar, self.tokenizer, self.source, self.scorer = sdar, tokenizer, source, scorer
        self.temperature = temperature
        self.builder = TeacherBuilder(
            tokenizer, header=privileged.header, role=privileged.role, placement=privileged.placement,
            max_prompt_length=sdar.teacher.max_prompt_length, format=privileged.format,
            chat_template_kwargs=_plain_dict(chat_template_kwargs),
        )

    def __call__(self, batch: KVBatchMeta, metrics: dict) -> KVBatchMeta:
        start = time.perf_counter()
        rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id)
        if "position_ids" in rows.keys() and any(r.dim() != 1 for r in field_rows(rows["position_ids"])):
            raise NotImplementedError("verl-sdar: multimodal (multi-axis rope) position ids are not supported yet")
        inputs = TeacherInputs(
            extra_infos=field_rows(rows["extra_info"]),
            prompts=field_rows(rows["prompts"]),
            raw_prompts=field_rows(rows["raw_prompt"]) if "raw_prompt" in rows.keys() else None,
            scores=[float(r.sum()) for r in field_rows(rows["rm_scores"])] if "rm_scores" in rows.keys() else None,
            real=real_rows(batch.tags),
            decode=lambda ids, keep_special=False: self.tokenizer.decode(ids, skip_special_tokens=not keep_special),
        )
        texts = self.source.texts(inputs)
        self.source.feedback(inputs)
        built = self.builder.build(inputs.prompts, field_rows(rows["responses"]), texts)
        teacher_log_probs = self._score(batch, rows, built)
        batch = put_fields(batch, teacher_log_probs=teacher_log_probs)

        key = self.sdar.skills.task_type_key
        metrics.update(self.source.metrics())
        metrics.update(sdar_metrics.teacher_metrics(
            old_log_probs=field_rows(rows["old_log_probs"]), teacher_log_probs=field_rows(teacher_log_probs),
            response_mask=field_rows(rows["response_mask"]), entropy=field_rows(rows["entropy"]), texts=texts,
            built=built, task_types=[i.get(key) if isinstance(i, dict) else None for i in inputs.extra_infos],
            real=inputs.real, beta=self.sdar.beta, gate=self.sdar.gate,
            noisy=[i.get(NOISY) if isinstance(i, dict) else None for i in inputs.extra_infos],
        ))
        metrics.update(sdar_metrics.store_metrics(tq.kv_list(), TEACHER_PARTITION))
        metrics["sdar/teacher_pass_s"] = time.perf_counter() - start
        return batch

    def _score(self, batch: KVBatchMeta, rows, built):
        """The teacher rows in their own partition, scored, then cleared; the padded log-probs."""
        teacher = rows.exclude(*SEQUENCE_FIELDS, "old_log_probs", "entropy", "log_probs")
        for name in SEQUENCE_FIELDS:
            teacher[name] = nested(getattr(built, name))
        tags = [dict(tag, prompt_len=int(p.numel()), seq_len=int(ids.numel()))
                for tag, p, ids in zip(batch.tags, built.prompts, built.input_ids, strict=True)]
        tq.kv_batch_put(keys=batch.keys, partition_id=TEACHER_PARTITION, fields=teacher, tags=tags)
        try:
            extra_info = dict(batch.extra_info, calculate_entropy=False, compute_loss=False,
                              temperature=self.temperature)
            meta = KVBatchMeta(partition_id=TEACHER_PARTITION, keys=list(batch.keys), tags=tags, extra_info=extra_info)
            output = self.scorer.score(meta)
            if len(output) != len(batch):
                raise RuntimeError(f"teacher pass returned {len(output)} rows for {len(batch)}")
            scored = tq.kv_batch_get(
                keys=batch.keys, partition_id=TEACHER_PARTITION, select_fields=["log_probs", "response_mask"]
            )
            return response_from_nested(scored["log_probs"], scored["response_mask"])
        finally:
            tq.kv_clear(keys=batch.keys, partition_id=TEACHER_PARTITION)
