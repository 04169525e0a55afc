"""Token-in/token-out generation with a transformers causal LM: the compute behind the ``hf`` rollout.

No Ray here (see :mod:`verl_sdar.cpu.hf_rollout` for the server around it), so it can be tested on
its own. Semantics follow verl's vLLM server where verl depends on them:

- temperature below ``1e-5`` is greedy; ``top_k <= 0`` and ``top_p >= 1`` disable those filters;
- returned log-probs are those of the *processed* distribution the token was drawn from
  (after repetition penalty, temperature, top-k, top-p: vLLM's ``processed_logprobs``); greedy
  tokens get the log-prob under the unscaled distribution;
- generation stops after an EOS / stop token (which is included in the output) or ``max_tokens``;
- ``prompt_logprobs=k`` returns, for each prompt position, the log-prob of the actual next token
  (``k == 0``) or the top-``k`` (ids, log-probs); the last position holds a dummy entry, so both
  lists have one row per prompt token, as verl's ``extract_prompt_logprobs`` produces from vLLM.

Requests are decoded together when they share sampling settings (left padding, one KV cache).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn

logger = logging.getLogger(__name__)

GREEDY_EPSILON = 1e-5
"""Temperatures below this are greedy decoding, as in vLLM."""

FinishReason = Literal["stop", "length", "abort"]

# sampling_params keys verl may send that have no effect on a token-in/token-out CPU rollout.
_IGNORED_SAMPLING_KEYS = frozenset({"detokenize", "skip_special_tokens", "spaces_between_special_tokens"})
_SUPPORTED_SAMPLING_KEYS = frozenset(
    {
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "logprobs",
        "max_tokens",
        "max_new_tokens",
        "seed",  # the request's own seed: read by the server (HFRolloutServer._seed), not by the sampler
        "prompt_logprobs",
        "ignore_eos",
        "stop_token_ids",
    }
)


@dataclass(frozen=True)
class SamplingSpec:
    """Validated sampling settings of one request."""

    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    max_tokens: int
    logprobs: bool
    prompt_logprobs: int | None
    ignore_eos: bool
    stop_token_ids: tuple[int, ...]

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_EPSILON

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can be decoded in one batch (``max_tokens`` may differ)."""
        return (
            self.greedy,
            self.temperature,
            self.top_p,
            self.top_k,
            self.repetition_penalty,
            self.ignore_eos,
            self.stop_token_ids,
        )


def parse_sampling_params(
    params: Mapping[str, Any],
    prompt_len: int,
    *,
    prompt_length: int,
    response_length: int,
    max_model_len: int,
    ignore_eos: bool = False,
    repetition_penalty: float = 1.0,
    warned_keys: set[str] | None = None,
) -> SamplingSpec:
    """Turn verl's ``sampling_params`` dict into a :class:`SamplingSpec`.

    Without ``max_tokens``/``max_new_tokens`` the budget is
    ``min(response_length, prompt_length + response_length - prompt_len)`` like verl's vLLM server;
    it is always clamped to the room left in ``max_model_len``.

    Args:
        params: the request's sampling parameters.
        prompt_len: number of prompt tokens.
        prompt_length: configured prompt budget (``rollout.prompt_length``).
        response_length: configured response budget (``rollout.response_length``).
        max_model_len: the model's context length.
        ignore_eos: default when the request does not say.
        repetition_penalty: default when the request does not say.
        warned_keys: keys already warned about as unsupported (updated in place).
    """
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"Prompt length ({prompt_len}) leaves no room to generate within the context length ({max_model_len})."
        )
    unknown = set(params) - _SUPPORTED_SAMPLING_KEYS - _IGNORED_SAMPLING_KEYS
    if warned_keys is not None and unknown - warned_keys:
        logger.warning("hf rollout ignores unsupported sampling params: %s", sorted(unknown - warned_keys))
        warned_keys.update(unknown)

    if params.get("max_tokens") is not None:
        max_tokens = int(params["max_tokens"])
    elif params.get("max_new_tokens") is not None:
        max_tokens = int(params["max_new_tokens"])
    else:
        max_tokens = min(response_length, prompt_length + response_length - prompt_len)
    top_k = params.get("top_k")
    top_p = params.get("top_p")
    temperature = params.get("temperature")
    penalty = params.get("repetition_penalty")
    prompt_logprobs = params.get("prompt_logprobs")
    return SamplingSpec(
        temperature=1.0 if temperature is None else float(temperature),
        top_p=1.0 if top_p is None else float(top_p),
        top_k=-1 if top_k is None else int(top_k),
        repetition_penalty=repetition_penalty if penalty is None else float(penalty),
        max_tokens=max(1, min(max_tokens, room)),
        logprobs=bool(params.get("logprobs", False)),
        prompt_logprobs=None if prompt_logprobs is None else int(prompt_logprobs),
        ignore_eos=bool(params.get("ignore_eos", ignore_eos)),
        stop_token_ids=tuple(int(t) for t in params.get("stop_token_ids") or ()),
    )


@dataclass
class GenerationResult:
    """Output of one request."""

    token_ids: list[int]
    log_probs: list[float] | None
    finish_reason: FinishReason
    prompt_ids: list[list[int]] | None = None
    """Per prompt position: the ids whose log-probs are in ``prompt_logprobs`` (when requested)."""
    prompt_logprobs: list[list[float]] | None = None


def _apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """vLLM/CTRL repetition penalty over tokens present in prompt or output (``seen`` is a bool mask)."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Mask logits outside the top-k and the top-p nucleus with ``-inf`` (the top token always stays)."""
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs
        drop_sorted = mass_before >= top_p
        drop_sorted[..., 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, sorted_idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next_tokens(
    logits: torch.Tensor,
    spec: SamplingSpec,
    seen: torch.Tensor | None = None,
    generators: list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row of ``logits`` ``[batch, vocab]``; return ``(tokens, log_probs)``.

    With ``generators`` (one per row) each row samples from its own random stream, so a row's
    tokens do not depend on which other requests share its batch or in which order they came.
    """
    logits = logits.float()
    if spec.repetition_penalty != 1.0 and seen is not None:
        logits = _apply_repetition_penalty(logits, seen, spec.repetition_penalty)
    if spec.greedy:
        tokens = logits.argmax(dim=-1)
        log_probs = torch.log_softmax(logits, dim=-1)
    else:
        logits = _filter_top_k_top_p(logits / spec.temperature, spec.top_k, spec.top_p)
        log_probs = torch.log_softmax(logits, dim=-1)
        probs = log_probs.exp()
        if generators is None:
            tokens = torch.multinomial(probs, num_samples=1).squeeze(-1)
        else:
            if len(generators) != probs.shape[0]:
                raise ValueError(f"{len(generators)} generators for {probs.shape[0]} rows")
            tokens = torch.cat(
                [torch.multinomial(row, 1, generator=g) for row, g in zip(probs, generators, strict=True)]
            )
    return tokens, log_probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class HFGenerator:
    """A causal LM held in memory, with batched sampling and in-place weight updates.

    Args:
        model: a transformers causal LM (``forward(input_ids, attention_mask, position_ids,
            past_key_values, use_cache, logits_to_keep)``), already in eval mode on its device.
        eos_token_ids: tokens that end a response.
        pad_token_id: filler for left padding (masked out, any id works).
    """

    def __init__(self, model: nn.Module, eos_token_ids: Iterable[int], pad_token_id: int) -> None:
        self.model = model
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        self.pad_token_id = int(pad_token_id)
        self.device = next(model.parameters()).device
        self._weights: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
        self._weights.update(model.named_buffers(remove_duplicate=False))
        self._required = {id(p): name for name, p in model.named_parameters()}
        self._updated: set[int] = set()

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    # ------------------------------------------------------------------ generation
    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        specs: list[SamplingSpec],
        should_abort: Callable[[], bool] | None = None,
        seeds: list[int] | None = None,
    ) -> list[GenerationResult]:
        """Decode ``prompts`` as one batch; all ``specs`` must share :attr:`SamplingSpec.batch_key`.

        ``seeds`` (one per prompt): each row samples from its own generator seeded so, which makes
        its tokens independent of the batch it shares (up to float noise of the batched forward).

        ``should_abort`` is polled before each decoding step; once it returns True the unfinished
        rows are returned with what they have so far and ``finish_reason == "abort"``.
        """
        if not prompts:
            return []
        if len({spec.batch_key for spec in specs}) != 1:
            raise ValueError("generate() needs requests with identical sampling settings (SamplingSpec.batch_key)")
        spec = specs[0]
        batch = len(prompts)
        stop_ids = set() if spec.ignore_eos else set(self.eos_token_ids) | set(spec.stop_token_ids)

        width = max(len(p) for p in prompts)
        input_ids = torch.full((batch, width), self.pad_token_id, dtype=torch.long, device=self.device)
        attention_mask = torch.zeros((batch, width), dtype=torch.long, device=self.device)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)

        seen = None
        if spec.repetition_penalty != 1.0:
            seen = torch.zeros((batch, self.vocab_size), dtype=torch.bool, device=self.device)
            seen.scatter_(1, input_ids, attention_mask.bool())

        generators = None
        if seeds is not None:
            if len(seeds) != batch:
                raise ValueError(f"{len(seeds)} seeds for {batch} prompts")
            generators = [torch.Generator(device=self.device).manual_seed(int(seed)) for seed in seeds]
        tokens: list[list[int]] = [[] for _ in range(batch)]
        log_probs: list[list[float]] = [[] for _ in range(batch)]
        finish: list[FinishReason | None] = [None] * batch

        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            logits_to_keep=1,
        )
        for _ in range(max(s.max_tokens for s in specs)):
            if should_abort is not None and should_abort():
                finish = [reason or "abort" for reason in finish]
                break
            next_tokens, next_log_probs = sample_next_tokens(out.logits[:, -1, :], spec, seen, generators)
            for row, (token, log_prob) in enumerate(zip(next_tokens.tolist(), next_log_probs.tolist(), strict=True)):
                if finish[row] is not None:
                    continue
                tokens[row].append(token)
                log_probs[row].append(log_prob)
                if token in stop_ids:
                    finish[row] = "stop"
                elif len(tokens[row]) >= specs[row].max_tokens:
                    finish[row] = "length"
            if all(reason is not None for reason in finish):
                break
            if seen is not None:
                seen.scatter_(1, next_tokens.unsqueeze(-1), True)
            attention_mask = torch.cat([attention_mask, attention_mask.new_ones((batch, 1))], dim=-1)
            position_ids = position_ids[:, -1:] + 1
            out = self.model(
                input_ids=next_tokens.unsqueeze(-1),
                attention_mask=attention_mask,
                position_ids=position_ids,
                past_key_values=out.past_key_values,
                use_cache=True,
                logits_to_keep=1,
            )

        results = []
        for row, row_spec in enumerate(specs):
            result = GenerationResult(
                token_ids=tokens[row],
                log_probs=log_probs[row] if row_spec.logprobs else None,
                finish_reason=finish[row] or "length",
            )
            if row_spec.prompt_logprobs is not None:
                result.prompt_ids, result.prompt_logprobs = self.prompt_logprobs(prompts[row], row_spec.prompt_logprobs)
            results.append(result)
        return results

    @torch.inference_mode()
    def prompt_logprobs(self, prompt: list[int], top_k: int) -> tuple[list[list[int]], list[list[float]]]:
        """Log-probs of each prompt position's next token (``top_k == 0``) or of its top-``top_k``.

        Returns ``(ids, log_probs)``, one row per prompt token; the last row is a dummy (zeros),
        matching verl's ``extract_prompt_logprobs`` for vLLM.
        """
        ids = torch.tensor([prompt], dtype=torch.long, device=self.device)
        logits = self.model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        if top_k == 0:
            targets = ids[0, 1:].unsqueeze(-1)
            row_ids, row_log_probs = targets, log_probs.gather(-1, targets)
        else:
            row_log_probs, row_ids = torch.topk(log_probs, top_k, dim=-1)
        width = max(top_k, 1)
        return [*row_ids.tolist(), [0] * width], [*row_log_probs.tolist(), [0.0] * width]

    # ------------------------------------------------------------------ weights
    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copy tensors into the model's parameters/buffers by (HF) name, casting dtype as needed."""
        for name, tensor in named_tensors:
            target = self._weights.get(name)
            if target is None:
                raise KeyError(f"hf rollout got weight {name!r}, which the rollout model does not have")
            if target.shape != tensor.shape:
                raise ValueError(
                    f"hf rollout weight {name!r}: expected shape {tuple(target.shape)}, got {tuple(tensor.shape)}"
                )
            target.copy_(tensor)
            self._updated.add(id(target))

    def finish_weight_update(self) -> None:
        """End one sync; raise if a model parameter received no tensor since the last sync."""
        missing = [name for key, name in self._required.items() if key not in self._updated]
        self._updated.clear()
        if missing:
            raise RuntimeError(f"hf rollout weight sync left {len(missing)} parameters stale, e.g. {missing[:5]}")
