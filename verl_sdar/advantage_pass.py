"""What the trainer does around verl's advantage step, on the rows in TransferQueue.

Before verl's step (``before_advantages``): episode success, GRPO-group and env-fault metrics
(``metrics``, ``faults``: a tripped ``sdar.faults`` rule raises ``faults.EnvFaultError``), and with
``sdar.invalid_action_penalty=reward`` each row's penalty subtracted from its reward
(``advantages.penalise_rewards``). After it (``after_advantages``): the environment's score put
back (the logged ``critic/score`` stays the environment's), the penalty on the advantages with
``=advantage``, the objective's advantage transform (``methods``) and the advantage metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import transfer_queue as tq
from transfer_queue import KVBatchMeta
from verl.workers.utils.padding import response_to_nested

from . import metrics as sdar_metrics
from .advantages import penalise_advantages, penalise_rewards, row_penalties
from .config import SDARConfig
from .envs.contract import INVALID_ACTION_PENALTY
from .faults import FaultMonitor, count_faults, fault_metrics, trainable_rows
from .rows import field_rows, nested, put_fields, real_rows

__all__ = ["Prepared", "after_advantages", "before_advantages"]


@dataclass
class Prepared:
    """``before_advantages``'s result: the batch; the rows' unpenalised rewards when the penalty went
    into the rewards (else None); the rows' penalties when it goes into the advantages (else None)."""

    batch: KVBatchMeta
    env_scores: object = None
    penalties: list[float] | None = None


def before_advantages(batch: KVBatchMeta, sdar: SDARConfig, monitor: FaultMonitor, step: int,
                      metrics: dict) -> Prepared:
    """Episode, group and fault metrics of a batch of agent-loop rows; the invalid-action penalty."""
    rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["extra_fields", "rm_scores", "response_mask", "responses"])
    extra = field_rows(rows["extra_fields"])
    real = real_rows(batch.tags)
    metrics.update(sdar_metrics.episode_metrics(batch.keys, extra, real))
    metrics.update(sdar_metrics.group_metrics(batch.keys, field_rows(rows["responses"]),
                                              [float(r.sum()) for r in field_rows(rows["rm_scores"])], real,
                                              step=step))
    faults = count_faults(batch.keys, extra, real)
    metrics.update(fault_metrics(faults))
    monitor.update(step, faults, trainable_rows=trainable_rows(field_rows(rows["response_mask"]), real))
    if not any(isinstance(e, dict) and INVALID_ACTION_PENALTY in e for e in extra):
        return Prepared(batch)
    penalties = row_penalties(extra)
    metrics["sdar/invalid_action_rows"] = sum(penalties[i] > 0 for i in real) / len(real) if real else 0.0
    if not any(penalties):
        return Prepared(batch)
    if sdar.invalid_action_penalty == "advantage":
        return Prepared(batch, penalties=penalties)
    batch = put_fields(batch, rm_scores=nested(penalise_rewards(field_rows(rows["rm_scores"]), penalties)))
    return Prepared(batch, env_scores=rows["rm_scores"])


def after_advantages(batch: KVBatchMeta, prepared: Prepared, sdar: SDARConfig, step: int,
                     metrics: dict) -> KVBatchMeta:
    """The batch after verl's advantages: scores restored, penalty or transform applied, metrics logged."""
    if prepared.env_scores is not None:
        batch = put_fields(batch, rm_scores=prepared.env_scores)
    spec = sdar.objective_spec
    transform, penalties = spec.transform_advantages, prepared.penalties
    rows = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id,
                           select_fields=["advantages", "response_mask", *spec.advantage_fields])
    padded = rows.to_padded_tensor()
    advantages, mask = padded["advantages"], padded["response_mask"].bool()
    if penalties is not None:
        advantages = penalise_advantages(advantages, mask, penalties)
    if transform is not None:
        inputs = {name: padded[name] for name in spec.advantage_fields}
        advantages, extra = transform(advantages, inputs, mask, sdar, step)
        metrics.update(extra)
    if penalties is not None or transform is not None:
        batch = put_fields(batch, advantages=response_to_nested(advantages, rows["response_mask"]))
    metrics.update(sdar_metrics.advantage_metrics(advantages, mask, real_rows(batch.tags)))
    return batch
