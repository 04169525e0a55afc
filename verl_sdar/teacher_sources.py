"""Teacher sources: which weights score the teacher rows (``sdar.teacher.source``).

The teacher pass builds one teacher row per training row (privileged block spliced into the
prompt, response unchanged; ``verl_sdar.teacher``) and stores the rows in their own TransferQueue
partition. A source runs the no-grad log-prob pass over that partition, which writes each row's
``log_probs`` (over the whole sequence, position ``t`` = log-prob of token ``t+1``); the trainer
reads the response part back as ``teacher_log_probs``. Gate, metrics and every objective are the
same for every source.

* ``self`` (default, the paper's): the actor's ``compute_log_prob`` at its pre-update weights.
  Costs one no-grad pass on the actor; no extra memory.
* ``reference``: verl's reference worker group (``compute_ref_log_prob``), i.e. the frozen initial
  policy; with LoRA verl keeps the reference inside the actor and scores without the adapter, as
  for its own reference pass. Costs one more no-grad pass, on the reference workers, which exist
  whenever the KL loss (or KL in reward) is on; the configuration check refuses it otherwise.
  Before the first update it gives the same log-probs as ``self``.
* ``model``: a separate model with the privileged context, ``sdar.teacher.model`` (e.g. a larger
  model of the student's family), served by verl's own teacher machinery
  (``verl.experimental.teacher_loop.MultiTeacherModelManager``: inference replicas of the
  ``sdar.teacher.model.inference.name`` backend on a dedicated resource pool, ``sdar_teacher_pool``).
  Each teacher row's full sequence (privileged prompt + student response ids) is sent to the
  servers as one prompt with ``prompt_logprobs=0, max_tokens=1`` (verl's
  ``AsyncTeacherLLMServerManager.compute_teacher_logprobs_single``); the answer's position ``t``
  holds the log-prob of token ``t+1``, verl's ``log_probs`` layout, which is stored as the rows'
  ``log_probs``. Costs ``n_gpus_per_node * nnodes`` more GPUs (the teacher's weights and KV cache
  stay resident; nothing is offloaded) and one prefill per row on them; no weight sync (the
  teacher is frozen). The tokenizers must be the same (checked at start-up); prompt log-probs
  are untempered, so the rollout temperature must be 1. verl's distillation loss and its
  per-rollout teacher queries stay off: the servers are built from a private copy of the config,
  the trainer's ``distillation.enabled`` is left false.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from abc import ABC, abstractmethod
from typing import Any

from .names import TEACHER_SOURCES

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

TEACHER_POOL = "sdar_teacher_pool"
"""Name of the resource pool of ``sdar.teacher.source=model`` (verl's ``Role.TeacherModel`` maps to it)."""


class TeacherSource(ABC):
    """Scores the teacher partition's rows (a ``KVBatchMeta``); returns verl's output meta."""

    name: str

    @abstractmethod
    def score(self, meta: Any) -> Any:
        """Run the log-prob pass over ``meta``'s rows (writes their ``log_probs``)."""


class SelfSource(TeacherSource):
    """The actor at its current (pre-update) weights."""

    name = "self"

    def __init__(self, trainer: Any):
        self.actor = trainer.actor_rollout_wg

    def score(self, meta: Any) -> Any:
        return self.actor.compute_log_prob(meta)


class ReferenceSource(TeacherSource):
    """verl's reference policy (frozen initial weights), as verl's own reference pass calls it."""

    name = "reference"

    def __init__(self, trainer: Any):
        if not getattr(trainer, "use_reference_policy", False) or getattr(trainer, "ref_policy_wg", None) is None:
            raise RuntimeError(
                "sdar.teacher.source=reference: verl built no reference policy "
                "(set actor_rollout_ref.actor.use_kl_loss=true)"
            )
        self.in_actor = bool(trainer.ref_in_actor)
        self.worker_group = trainer.actor_rollout_wg if self.in_actor else trainer.ref_policy_wg

    def score(self, meta: Any) -> Any:
        if self.in_actor:
            meta.extra_info["no_lora_adapter"] = True
            return self.worker_group.compute_log_prob(meta)
        return self.worker_group.compute_ref_log_prob(meta)


def teacher_pool_spec(sdar: Any) -> list[int] | None:
    """The process-per-node list of the teacher's resource pool, or None without ``source=model``."""
    if not sdar.needs_teacher or sdar.teacher.source != "model":
        return None
    return [sdar.teacher.model.n_gpus_per_node] * sdar.teacher.model.nnodes


def teacher_server_config(config: Any, sdar: Any) -> Any:
    """A private copy of the run's config whose ``distillation`` block describes the SDAR teacher,
    the form verl's ``MultiTeacherModelManager`` and ``AsyncTeacherLLMServerManager`` read.

    The teacher's ``inference`` is verl's own teacher default (``distillation.teacher_models.
    teacher_model.inference`` of the composed config: student's backend and dtype, real weights,
    ``load_format=auto``), with ``tensor_model_parallel_size=1`` and ``prompt_length`` =
    ``sdar.teacher.max_prompt_length`` (when set) as our defaults, then ``sdar.teacher.model.inference``.
    Loss settings are verl's defaults with ``loss_mode=k3`` (no top-k: one log-prob per position);
    they only shape the request, verl's distillation loss is never built.
    """
    from omegaconf import OmegaConf, open_dict

    model = sdar.teacher.model
    base = OmegaConf.select(config, "distillation.teacher_models.teacher_model.inference", default=None)
    if base is not None:
        inference = OmegaConf.to_container(base, resolve=True)
    else:
        rollout = config.actor_rollout_ref.rollout
        inference = {"_target_": "verl.workers.config.RolloutConfig", "name": rollout.name, "dtype": rollout.dtype,
                     "load_format": "auto", "prompt_length": rollout.prompt_length,
                     "response_length": rollout.response_length}
    inference["tensor_model_parallel_size"] = 1
    if sdar.teacher.max_prompt_length:
        inference["prompt_length"] = sdar.teacher.max_prompt_length
    inference = OmegaConf.merge(OmegaConf.create(inference), OmegaConf.create(dict(model.inference)))
    distillation = OmegaConf.create({
        "_target_": "verl.workers.config.DistillationConfig",
        "enabled": True,
        "n_gpus_per_node": model.n_gpus_per_node,
        "nnodes": model.nnodes,
        "teacher_key": "data_source",
        "distillation_loss": {"_target_": "verl.workers.config.DistillationLossConfig", "loss_mode": "k3",
                              "use_policy_gradient": False},
        "teacher_models": {"teacher_model": {
            "_target_": "verl.workers.config.DistillationTeacherModelConfig",
            "key": None, "model_path": model.path, "num_replicas": 0, "inference": inference,
        }},
    })
    private = copy.deepcopy(config)
    with open_dict(private):
        private.distillation = distillation
    return private


class ModelSource(TeacherSource):
    """A separate frozen model on verl's teacher inference servers (``sdar.teacher.model``)."""

    name = "model"

    def __init__(self, trainer: Any):
        from verl.experimental.teacher_loop import MultiTeacherModelManager
        from verl.experimental.teacher_loop.teacher_manager import AsyncTeacherLLMServerManager
        from verl.trainer.ppo.utils import Role

        if getattr(trainer, "use_teacher_policy", False):
            raise RuntimeError("sdar.teacher.source=model: verl's distillation is enabled too; disable it")
        pool = trainer.resource_pool_manager.get_resource_pool(Role.TeacherModel)
        config = teacher_server_config(trainer.config, trainer.sdar)
        self.model_path = trainer.sdar.teacher.model.path
        self.manager = MultiTeacherModelManager(config=config, resource_pool=pool)
        self.client = AsyncTeacherLLMServerManager(config, self.manager.get_client())
        logger.info("verl-sdar: teacher model %s on %d replica(s) of pool %s", self.model_path,
                    sum(len(a) for a in self.manager.server_addresses.values()), TEACHER_POOL)

    async def _score_sequences(self, sequences: list[list[int]]) -> list[Any]:
        return await asyncio.gather(*(self.client.compute_teacher_logprobs_single(seq) for seq in sequences))

    def log_probs(self, sequences: list[list[int]]) -> list[Any]:
        """Per sequence, a float tensor of its length: position ``t`` holds log p(token ``t+1`` | tokens
        ``<= t``) under the teacher, the last position 0 (verl's ``log_probs`` layout)."""
        from verl.utils.ray_utils import auto_await

        results = auto_await(self._score_sequences)(sequences)
        out = []
        for seq, (ids, log_probs) in zip(sequences, results, strict=True):
            scored = ids[:-1, 0].tolist()
            if scored != seq[1:]:
                raise RuntimeError(f"teacher model {self.model_path}: its prompt log-probs are for other tokens "
                                   "than the sequence sent")
            out.append(log_probs[:, 0].float())
        return out

    def score(self, meta: Any) -> Any:
        import torch
        import transfer_queue as tq
        from tensordict import TensorDict

        rows = tq.kv_batch_get(keys=meta.keys, partition_id=meta.partition_id, select_fields=["input_ids"])
        sequences = [r.tolist() for r in rows["input_ids"].unbind(0)]
        log_probs = torch.nested.as_nested_tensor(self.log_probs(sequences), layout=torch.jagged)
        return tq.kv_batch_put(keys=meta.keys, partition_id=meta.partition_id,
                               fields=TensorDict({"log_probs": log_probs}, batch_size=len(sequences)))


_SOURCES = {SelfSource.name: SelfSource, ReferenceSource.name: ReferenceSource, ModelSource.name: ModelSource}
assert tuple(_SOURCES) == TEACHER_SOURCES


def make_teacher_source(name: str, trainer: Any) -> TeacherSource:
    """The source ``sdar.teacher.source`` names, bound to the trainer's worker groups."""
    if name not in _SOURCES:
        raise ValueError(f"sdar.teacher.source: unknown source {name!r}; expected one of {TEACHER_SOURCES}")
    return _SOURCES[name](trainer)
