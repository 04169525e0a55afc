"""The ``hf`` rollout backend: verl's server-mode rollout contract implemented with transformers.

vLLM has no CPU wheel, so on CPU verl's agent loops talk to this backend instead
(``actor_rollout_ref.rollout.name=hf``). The three pieces mirror verl's vLLM backend:

- :class:`HFRolloutServer`: one Ray actor per replica, named :func:`server_actor_name`; holds the
  model (:class:`~verl_sdar.cpu.hf_generation.HFGenerator`) and serves ``generate`` (token ids in,
  token ids + log-probs out) to verl's ``LLMServerClient``, batching concurrent requests that share
  sampling settings.
- :class:`HFServerAdapter`: lives in each hybrid actor worker (verl's ``BaseRollout``). After every
  actor update verl hands it the new weights; the replica's leader rank streams them to its own
  replica's server in buckets.
- :class:`HFReplica`: verl's ``RolloutReplica``; launches the server and exposes its handle.

The server keeps its weights in host memory, so sleep/wake-up/KV-cache calls are no-ops.
Text only: multimodal inputs raise ``NotImplementedError``. LoRA is supported only as merged weights
(``actor_rollout_ref.model.lora.merge=True``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterable, Iterable
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
from omegaconf import DictConfig
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from torch.distributed.tensor import DTensor
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.tokenizer.tokenizer import normalize_token_ids
from verl.utils.torch_dtypes import PrecisionType
from verl.workers.config import HFModelConfig, RolloutConfig
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.replica import RolloutReplica, TokenOutput
from verl.workers.rollout.utils import ensure_async_iterator, get_max_position_embeddings

from verl_sdar.names import ROLLOUT_NAME
from verl_sdar.request_identity import DETERMINISTIC_PREFIX, SEED_KEY, request_seed

from .hf_generation import GenerationResult, HFGenerator, SamplingSpec, parse_sampling_params

BATCH_WINDOW_S = 0.005
"""How long the server waits for concurrent requests before decoding a batch."""


def server_actor_name(replica_rank: int, role: str = "", suffix: str = "") -> str:
    """Ray actor name of a replica's server; ``role`` is ``""``, ``"reward"`` or ``"teacher"``."""
    role_part = f"{role}_" if role else ""
    return f"{ROLLOUT_NAME}_server_{role_part}{replica_rank}{suffix}"


def _eos_token_ids(model_config: HFModelConfig) -> set[int]:
    ids: set[int] = set()
    for source in (model_config.tokenizer, model_config.generation_config, model_config.hf_config):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, list | tuple):
            ids.update(int(v) for v in value)
    if not ids:
        raise ValueError(f"hf rollout: no eos_token_id in tokenizer, generation or model config of {model_config.path}")
    return ids


@dataclass
class _Request:
    prompt_ids: list[int]
    spec: SamplingSpec
    future: asyncio.Future[GenerationResult] = field(repr=False)
    seed: int = 0


def server_seed(base_seed: int, global_steps: int | None, prompt_ids: list[int], occurrence: int | str) -> int:
    """The sampling seed of a request that names none: a hash of the rollout seed, the weights
    version, the prompt ids and ``occurrence``, how many requests with the same prompt ids (and,
    under verl's ``full_determinism``, the same ``det-`` request id) came before it at this weights
    version.

    The k-th sample of a prompt is then the same in every run, whatever the batch it is decoded in:
    the ``n`` sessions of a GRPO group get ``k = 0..n-1``, so ``n`` different draws, even from a loop
    that sends the same id for all of them (verl's own single-turn loop sends ``det-{priority}``,
    and ``priority`` is 0 on verl's V1 path). *Which* session gets the k-th draw follows the arrival
    order of the concurrent agent loops, so a run's group samples are reproducible as a multiset.
    verl-sdar's own loops name each request's seed (:mod:`verl_sdar.request_identity`), which wins.
    """
    return request_seed(base_seed, global_steps, occurrence, prompt_ids=prompt_ids)


class HFRolloutServer:
    """A replica's generation server (wrapped with ``ray.remote`` by :class:`HFReplica`).

    Args:
        config: the rollout config (``actor_rollout_ref.rollout``).
        model_config: the model config (``actor_rollout_ref.model``); the weights it points at are
            the starting point, replaced by the actor's at each weight sync.
        replica_rank: index of this replica.
    """

    def __init__(self, config: RolloutConfig | DictConfig, model_config: HFModelConfig | DictConfig, replica_rank: int):
        from transformers import AutoModelForCausalLM

        self.config: RolloutConfig = omega_conf_to_dataclass(config)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.max_model_len = self.config.max_model_len or get_max_position_embeddings(self.model_config.hf_config)

        torch.manual_seed(self.config.seed + replica_rank)
        model = AutoModelForCausalLM.from_pretrained(
            self.model_config.local_path,
            config=self.model_config.hf_config,
            dtype=PrecisionType.to_dtype(self.config.dtype),
            attn_implementation="sdpa",
            trust_remote_code=self.model_config.trust_remote_code,
        )
        model.eval()
        tokenizer = self.model_config.tokenizer
        eos_ids = _eos_token_ids(self.model_config)
        pad_id = getattr(tokenizer, "pad_token_id", None)
        # Any id can pad: padding is masked out.
        self.engine = HFGenerator(model, eos_token_ids=eos_ids, pad_token_id=min(eos_ids) if pad_id is None else pad_id)

        self.global_steps: int | None = None
        """Model weights version, set at each weight sync."""
        self._occurrences: dict[tuple[str, tuple[int, ...]], int] = {}
        """Requests per (deterministic id, prompt) at the current weights version (for :func:`server_seed`)."""
        self._warned_keys: set[str] = set()
        self._queue: list[_Request] = []
        self._worker: asyncio.Task[None] | None = None
        self._model_lock: asyncio.Lock | None = None
        self._abort = threading.Event()
        self._admission: asyncio.Event | None = None
        self._reject_while_paused = False
        self._outstanding: set[asyncio.Future[GenerationResult]] = set()

    # ------------------------------------------------------------------ generation
    def _lazy_async_state(self) -> tuple[asyncio.Lock, asyncio.Event]:
        # Created on first use so they bind to the actor's event loop, not __init__'s.
        if self._model_lock is None or self._admission is None:
            self._model_lock = asyncio.Lock()
            self._admission = asyncio.Event()
            self._admission.set()
        return self._model_lock, self._admission

    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: list[Any] | None = None,
        video_data: list[Any] | None = None,
        audio_data: list[Any] | None = None,
        mm_processor_kwargs: dict[str, Any] | None = None,
        priority: int = 0,
    ) -> TokenOutput:
        """Generate a response for ``prompt_ids``. The sampling seed is ``sampling_params["seed"]``
        when the request names one (as vLLM's), else :func:`server_seed`; ``request_id`` only takes
        part in that under ``full_determinism`` (``det-`` ids); ``priority`` is accepted, unused."""
        if image_data is not None or video_data is not None or audio_data is not None:
            raise NotImplementedError("the hf rollout backend is text-only")
        prompt_ids = normalize_token_ids(prompt_ids)
        spec = parse_sampling_params(
            sampling_params,
            len(prompt_ids),
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.max_model_len,
            ignore_eos=self.config.ignore_eos,
            repetition_penalty=self.config.repetition_penalty,
            warned_keys=self._warned_keys,
        )
        _, admission = self._lazy_async_state()
        if not admission.is_set():
            if self._reject_while_paused:
                return self._to_token_output(GenerationResult([], None, "abort"))
            await admission.wait()
        future: asyncio.Future[GenerationResult] = asyncio.get_running_loop().create_future()
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        seed = self._seed(sampling_params, request_id, prompt_ids)
        self._queue.append(_Request(prompt_ids, spec, future, seed))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._decode_queue())
        return self._to_token_output(await future)

    async def _decode_queue(self) -> None:
        """Drain the queue: group requests by sampling settings and decode each group as a batch."""
        model_lock, _ = self._lazy_async_state()
        while self._queue:
            await asyncio.sleep(BATCH_WINDOW_S)
            batch, self._queue = self._queue[: self.config.max_num_seqs], self._queue[self.config.max_num_seqs :]
            groups: dict[tuple[Any, ...], list[_Request]] = {}
            for request in batch:
                groups.setdefault(request.spec.batch_key, []).append(request)
            for group in groups.values():
                if self._abort.is_set():
                    results = [GenerationResult([], None, "abort") for _ in group]
                else:
                    try:
                        async with model_lock:
                            results = await asyncio.to_thread(
                                self.engine.generate,
                                [r.prompt_ids for r in group],
                                [r.spec for r in group],
                                self._abort.is_set,
                                [r.seed for r in group],
                            )
                    except Exception as exc:  # hand the error to every waiting caller
                        for request in group:
                            if not request.future.done():
                                request.future.set_exception(exc)
                        continue
                for request, result in zip(group, results, strict=True):
                    if not request.future.done():
                        request.future.set_result(result)

    def _seed(self, sampling_params: dict[str, Any], request_id: str, prompt_ids: list[int]) -> int:
        named = sampling_params.get(SEED_KEY)
        if named is not None:
            return int(named)
        key = (request_id if request_id.startswith(DETERMINISTIC_PREFIX) else "", tuple(prompt_ids))
        occurrence = self._occurrences.get(key, 0)
        self._occurrences[key] = occurrence + 1
        return server_seed(self.config.seed + self.replica_rank, self.global_steps, prompt_ids,
                           f"{key[0]}#{occurrence}" if key[0] else occurrence)

    def _to_token_output(self, result: GenerationResult) -> TokenOutput:
        extra: dict[str, Any] = {"global_steps": self.global_steps}
        if result.prompt_logprobs is not None:
            extra["prompt_ids"] = result.prompt_ids
            extra["prompt_logprobs"] = result.prompt_logprobs
        return TokenOutput(
            token_ids=result.token_ids,
            log_probs=result.log_probs,
            stop_reason="aborted" if result.finish_reason == "abort" else "completed",
            extra_fields=extra,
        )

    async def abort_all_requests(self, reject_request: bool = False) -> dict[str, Any]:
        """Stop generation: the running batch returns its partial tokens as ``aborted``, queued
        requests return empty ``aborted`` outputs, and new requests wait for
        :meth:`resume_generation` (or return ``aborted`` at once when ``reject_request``)."""
        _, admission = self._lazy_async_state()
        admission.clear()
        self._reject_while_paused = reject_request
        self._abort.set()
        return {"aborted_count": len(self._outstanding)}

    async def resume_generation(self) -> None:
        _, admission = self._lazy_async_state()
        self._abort.clear()
        self._reject_while_paused = False
        admission.set()

    # ------------------------------------------------------------------ weights
    async def load_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Copy one bucket of actor weights into the model."""
        model_lock, _ = self._lazy_async_state()
        async with model_lock:
            await asyncio.to_thread(self.engine.load_weights, named_tensors)

    async def finish_weight_update(self, global_steps: int | None = None) -> None:
        """End a weight sync (checks every parameter was sent) and record the weights version."""
        model_lock, _ = self._lazy_async_state()
        async with model_lock:
            self.engine.finish_weight_update()
        if global_steps is not None:
            self._set_version(global_steps)

    async def set_global_steps(self, global_steps: int) -> None:
        self._set_version(global_steps)

    def _set_version(self, global_steps: int) -> None:
        if global_steps != self.global_steps:
            self._occurrences.clear()
        self.global_steps = global_steps

    # ------------------------------------------------------------------ no-ops on CPU
    async def wake_up(self, tags: list[str] | None = None) -> None:
        """No-op: weights and cache stay in host memory."""

    async def sleep(self) -> None:
        """No-op: weights and cache stay in host memory."""

    async def clear_kv_cache(self) -> None:
        """No-op: no KV cache outlives a batch."""

    async def release_kv_cache(self) -> None:
        """No-op: no KV cache outlives a batch."""

    async def resume_kv_cache(self) -> None:
        """No-op: no KV cache outlives a batch."""

    async def start_profile(self, **kwargs: Any) -> None:
        """No-op: no profiler for the hf backend."""

    async def stop_profile(self) -> None:
        """No-op: no profiler for the hf backend."""


def _sendable(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU tensor that pickles to its own bytes only (a view would drag its whole storage along)."""
    tensor = tensor.detach().to("cpu")
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size() or not tensor.is_contiguous():
        tensor = tensor.clone(memory_format=torch.contiguous_format)
    return tensor


class HFServerAdapter(BaseRollout):
    """In-worker side of the ``hf`` rollout (verl's ``BaseRollout``): pushes actor weights to the server.

    Every rank of a replica consumes the weight iterator (turning a DTensor into a full tensor is a
    collective); only the replica's leader rank sends, to its own replica's server.
    """

    def __init__(
        self,
        config: RolloutConfig,
        model_config: HFModelConfig,
        device_mesh: Any,
        replica_rank: int = -1,
    ) -> None:
        super().__init__(config, model_config, device_mesh)
        rank = int(os.environ.get("RANK", "0"))
        rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = rank // rollout_world_size if replica_rank == -1 else replica_rank
        self.rollout_rank = rank % rollout_world_size
        self._server: ray.actor.ActorHandle | None = None

    @property
    def is_leader_rank(self) -> bool:
        return self.rollout_rank == 0

    def _server_handle(self) -> ray.actor.ActorHandle:
        # Looked up lazily: the server is launched after the hybrid workers.
        if self._server is None:
            self._server = ray.get_actor(server_actor_name(self.replica_rank))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        """No-op: the server never releases its weights or cache."""

    async def release(self) -> None:
        """No-op: the server never releases its weights or cache."""

    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterable[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        global_steps: int | None = None,
        peft_config: Any = None,
        **kwargs: Any,
    ) -> None:
        """Send ``(name, tensor)`` pairs to this replica's server in buckets of
        ``checkpoint_engine.update_weights_bucket_megabytes``, then close the sync with ``global_steps``."""
        if wire_format != "named_tensors":
            raise NotImplementedError(f"hf rollout supports wire_format='named_tensors' only, got {wire_format!r}")
        if peft_config is not None:
            raise NotImplementedError(
                "hf rollout takes merged weights only: set actor_rollout_ref.model.lora.merge=True"
            )
        server = self._server_handle() if self.is_leader_rank else None
        bucket_limit = self.config.checkpoint_engine.update_weights_bucket_megabytes << 20
        bucket: list[tuple[str, torch.Tensor]] = []
        bucket_bytes = 0
        async for name, tensor in ensure_async_iterator(weights):
            if isinstance(tensor, DTensor):
                tensor = tensor.full_tensor()
            if server is None:
                continue
            tensor = _sendable(tensor)
            bucket.append((name, tensor))
            bucket_bytes += tensor.numel() * tensor.element_size()
            if bucket_bytes >= bucket_limit:
                await server.load_weights.remote(bucket)
                bucket, bucket_bytes = [], 0
        if server is not None:
            if bucket:
                await server.load_weights.remote(bucket)
            await server.finish_weight_update.remote(global_steps)


class HFReplica(RolloutReplica):
    """verl ``RolloutReplica`` for the ``hf`` backend: one server actor per replica, single node."""

    async def launch_servers(self) -> None:
        if self.nnodes != 1:
            raise NotImplementedError(f"hf rollout replicas run on one node; this one spans {self.nnodes}")
        role = "reward" if self.is_reward_model else "teacher" if self.is_teacher_model else ""
        name = server_actor_name(self.replica_rank, role=role, suffix=self.name_suffix)
        options: dict[str, Any] = {"name": name, "num_cpus": 0, "max_concurrency": self.max_concurrency}
        if self.workers:
            node_id = await self.workers[0].__ray_call__.remote(lambda _: ray.get_runtime_context().get_node_id())
            options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)
        server = (
            ray.remote(HFRolloutServer)
            .options(**options)
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.__ray_ready__.remote()
        self.servers = [server]
        self._server_handle = server
        self._server_address = name
