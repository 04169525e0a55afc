"""Row access on verl's TransferQueue batches (``KVBatchMeta``): the few conversions the trainer's
passes share. A stored field comes back per row; rows are written back as one ``TensorDict``."""

from __future__ import annotations

import torch
import transfer_queue as tq
from tensordict import NonTensorStack, TensorDict
from transfer_queue import KVBatchMeta

__all__ = ["field_rows", "nested", "put_fields", "real_rows"]


def field_rows(value) -> list:
    """A stored field as a list of per-row values (tensors for nested/stacked, objects otherwise)."""
    if isinstance(value, torch.Tensor):
        return list(value.unbind(0))
    if isinstance(value, NonTensorStack):
        return value.tolist()
    return list(value)


def real_rows(tags: list[dict]) -> list[int]:
    """Indices of the rows that are not verl's batch-balancing padding clones."""
    return [i for i, tag in enumerate(tags) if not tag.get("is_padding", False)]


def nested(rows: list[torch.Tensor]) -> torch.Tensor:
    """Per-row tensors of different lengths as one jagged nested tensor (how verl stores them)."""
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def put_fields(batch: KVBatchMeta, **fields) -> KVBatchMeta:
    """Store fields on the batch's rows; the returned meta lists every stored field, the new ones included."""
    return tq.kv_batch_put(
        keys=batch.keys, partition_id=batch.partition_id, fields=TensorDict(fields, batch_size=len(batch))
    )
