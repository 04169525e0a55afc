"""Self-check of the numerics and memory SDAR depends on, on whatever device is present.

    python -m verl_sdar.gpu_check [--device auto|cpu|cuda[:N]] [--model tiny|3b] [--tokens N]
        [--dtypes fp32,bf16] [--out gpu_check.json] [--skip-noise] [--skip-memory]

Needs only torch and transformers (no verl, Ray or vLLM). Three sections:

(a) ``objectives``: :func:`verl_sdar.objectives.sdar_loss` (every divergence x aggregation mode, and
    every gate) and :func:`verl_sdar.objectives.aggregate` (every mode), value and gradient computed
    on the device in each dtype, against the CPU float64 result on the same inputs (rounded to the
    dtype first, so only the arithmetic is compared). Masked tokens hold -inf and NaN log-probs:
    the result must be finite and within a dtype-appropriate tolerance. A failure here makes the
    exit code non-zero.
(b) ``noise_floor``: the same rows scored by a random Qwen2-architecture causal LM in different
    batch packings (alone, right-padded, verl's left-padded prompt / right-padded response at two
    micro-batch sizes, packed into one row), per attention implementation (sdpa, and
    flash_attention_2 when ``flash_attn`` is importable) and dtype: max and mean |delta log-prob|
    over response tokens against scoring each row alone. This is the log-prob difference between
    teacher and student passes that comes from numerics alone. A measurement, not a check.
(c) ``memory``: peak memory and time of a no-grad teacher pass (response-token log-probs) and of
    an update forward+backward (gradient checkpointing, SDAR loss) for one micro-batch. With
    ``--model 3b``: a Qwen2.5-3B-shaped random model in bf16 at the ALFWorld GPU recipe's budget
    (sequences of 2048 + 512 tokens, 24576 tokens per micro-batch). A measurement, not a check;
    an out-of-memory error is reported and the run goes on.

Prints a table per section and writes everything to a JSON file.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import math
import platform
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoModelForCausalLM, PreTrainedModel, Qwen2Config

from verl_sdar import objectives

logger = logging.getLogger("verl_sdar.gpu_check")

DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: (rtol, atol) of section (a): error <= atol + rtol * max|reference|, per quantity (loss, grad).
#: bf16's rtol is about 12 units in the last place (2^-8): its results round once per op.
TOLERANCES: dict[str, tuple[float, float]] = {"fp32": (1e-5, 1e-7), "bf16": (5e-2, 1e-5)}
MIB = 1024.0 * 1024.0


# ----------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class Preset:
    """Model shape and token budget of one ``--model`` choice."""

    name: str
    model: dict[str, Any]
    noise_rows: int
    prompt_len: int
    response_len: int
    tokens: int


_QWEN25_3B = dict(
    hidden_size=2048, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2,
    intermediate_size=11008, vocab_size=151936, tie_word_embeddings=True, rms_norm_eps=1e-6,
    max_position_embeddings=32768, rope_theta=1e6,
)
_TINY = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=128, vocab_size=1024, tie_word_embeddings=True, rms_norm_eps=1e-6,
    max_position_embeddings=4096, rope_theta=1e6,
)
PRESETS: dict[str, Preset] = {
    # ALFWorld GPU recipe: max_prompt_length 2048, max_response_length 512, ppo_max_token_len_per_gpu 24576
    "3b": Preset("3b", _QWEN25_3B, noise_rows=8, prompt_len=2048, response_len=512, tokens=24576),
    "tiny": Preset("tiny", _TINY, noise_rows=3, prompt_len=16, response_len=8, tokens=96),
}


def qwen2_config(preset: Preset, **overrides: Any) -> Qwen2Config:
    """A Qwen2 config of the preset's shape (rope theta passed the way the installed transformers wants)."""
    kwargs = {**preset.model, **overrides}
    theta = kwargs.pop("rope_theta")
    try:
        return Qwen2Config(**kwargs, rope_parameters={"rope_type": "default", "rope_theta": theta})
    except TypeError:  # transformers < 5: no rope_parameters
        return Qwen2Config(**kwargs, rope_theta=theta)


# ----------------------------------------------------------------------------- device helpers
def resolve_device(name: str) -> torch.device:
    """``auto`` is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available")
    return device


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (so wall-clock times are the work's)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free_memory(device: torch.device) -> None:
    """Release cached allocations (between models and after an out-of-memory error)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def flash_attn_available(device: torch.device) -> bool:
    """flash_attention_2 needs CUDA and the ``flash_attn`` package."""
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def packed_sdpa_supported() -> bool:
    """transformers masks packed rows (position ids restarting at 0, no attention mask) for sdpa itself."""
    return importlib.util.find_spec("transformers.masking_utils") is not None and hasattr(
        importlib.import_module("transformers.masking_utils"), "find_packed_sequence_indices"
    )


def is_oom(error: BaseException) -> bool:
    """An out-of-memory error of the allocator (CUDA or CPU)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


def environment_info(device: torch.device) -> dict[str, Any]:
    """Device name and library versions."""
    flash = importlib.util.find_spec("flash_attn")
    info: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "flash_attn": importlib.import_module("flash_attn").__version__ if flash is not None else None,
        "python": platform.python_version(),
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / MIB / 1024, 1)
    return info


# ============================================================================= (a) objectives
@dataclass(frozen=True)
class ObjectiveCase:
    """One call of an objectives function; the gradient is taken w.r.t. its first tensor argument."""

    name: str
    function: str  # "sdar_loss" or "aggregate"
    kwargs: dict[str, Any] = field(default_factory=dict)


def objective_cases() -> list[ObjectiveCase]:
    """sdar_loss: every divergence x aggregation mode (gap gate), every other gate; aggregate: every mode."""
    cases = [
        ObjectiveCase(f"sdar_loss {div} {mode}", "sdar_loss", {"divergence": div, "loss_agg_mode": mode, "beta": 5.0})
        for div in objectives.DIVERGENCES
        for mode in objectives.LOSS_AGG_MODES
    ]
    cases += [
        ObjectiveCase(f"sdar_loss gate={gate}", "sdar_loss", {"gate": gate, "beta": 5.0})
        for gate in objectives.GATES
        if gate != "gap"
    ]
    cases += [ObjectiveCase(f"aggregate {m}", "aggregate", {"loss_agg_mode": m}) for m in objectives.LOSS_AGG_MODES]
    cases.append(
        ObjectiveCase("aggregate token-mean dp=2", "aggregate", {"loss_agg_mode": "token-mean", "dp_size": 2,
                                                                 "batch_num_tokens": 4096})
    )
    return cases


def poison_masked(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``values`` with -inf and NaN (alternating) on the masked-out positions."""
    poison = torch.full_like(values, -math.inf)
    poison.view(-1)[1::2] = math.nan
    return torch.where(mask, values, poison)


def objective_inputs(rows: int, tokens: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """CPU float64 inputs: varied row lengths (one row fully masked, one full), gaps around 0, poisoned padding.

    Two tokens inside the mask have teacher log-prob -inf (a token the teacher gives zero probability).
    """
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, tokens + 1, (rows,), generator=gen)
    lengths[0], lengths[-1] = 0, tokens
    mask = torch.arange(tokens)[None, :] < lengths[:, None]
    student = -6.0 * torch.rand(rows, tokens, generator=gen, dtype=torch.float64)
    teacher = student + torch.randn(rows, tokens, generator=gen, dtype=torch.float64)
    teacher[-1, :2] = -math.inf
    return {
        "student": poison_masked(student, mask),
        "teacher": poison_masked(teacher, mask),
        "values": poison_masked(torch.randn(rows, tokens, generator=gen, dtype=torch.float64), mask),
        "entropy": 3.0 * torch.rand(rows, tokens, generator=gen, dtype=torch.float64),
        "mask": mask,
    }


def round_to(inputs: dict[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Float inputs rounded to ``dtype`` and back to float64 (the reference sees what the device sees)."""
    return {k: v.to(dtype).to(torch.float64) if v.is_floating_point() else v for k, v in inputs.items()}


def _call_case(case: ObjectiveCase, t: dict[str, torch.Tensor]) -> torch.Tensor:
    if case.function == "aggregate":
        return objectives.aggregate(t["values"], t["mask"], **case.kwargs)
    entropy = t["entropy"] if case.kwargs.get("gate") in ("entropy", "soft_or") else None
    loss, _ = objectives.sdar_loss(t["student"], t["teacher"], t["mask"], entropy=entropy, **case.kwargs)
    return loss


def evaluate_case(
    case: ObjectiveCase, inputs: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and gradient (w.r.t. the student log-probs, or the values for ``aggregate``), as CPU float64."""
    moved = {k: v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device) for k, v in inputs.items()}
    target = "values" if case.function == "aggregate" else "student"
    moved[target].requires_grad_(True)
    loss = _call_case(case, moved)
    loss.backward()
    return loss.detach().to("cpu", torch.float64), moved[target].grad.to("cpu", torch.float64)


@dataclass(frozen=True)
class Comparison:
    """Max abs error of a value against its reference, the tolerance it had, and the verdict."""

    max_abs_error: float
    tolerance: float
    finite: bool
    passed: bool


def compare(value: torch.Tensor, reference: torch.Tensor, rtol: float, atol: float) -> Comparison:
    """Pass when ``value`` is finite and ``max|value - reference| <= atol + rtol * max|reference|``."""
    value, reference = value.to(torch.float64), reference.to(torch.float64)
    finite = bool(torch.isfinite(value).all())
    error = float((value - reference).abs().max()) if finite else math.inf
    tolerance = atol + rtol * float(reference.abs().max())
    return Comparison(error, tolerance, finite, finite and error <= tolerance)


def check_case(
    case: ObjectiveCase, inputs: dict[str, torch.Tensor], device: torch.device, dtype_name: str
) -> dict[str, Any]:
    """One check: the case on the device in ``dtype_name`` against CPU float64 on the rounded inputs."""
    rtol, atol = TOLERANCES[dtype_name]
    loss, grad = evaluate_case(case, inputs, device, DTYPES[dtype_name])
    ref_loss, ref_grad = evaluate_case(case, round_to(inputs, DTYPES[dtype_name]), torch.device("cpu"), torch.float64)
    loss_cmp, grad_cmp = compare(loss, ref_loss, rtol, atol), compare(grad, ref_grad, rtol, atol)
    return {
        "check": case.name, "dtype": dtype_name, "loss": float(loss), "loss_ref": float(ref_loss),
        "loss_abs_err": loss_cmp.max_abs_error, "loss_tol": loss_cmp.tolerance,
        "grad_abs_err": grad_cmp.max_abs_error, "grad_tol": grad_cmp.tolerance,
        "finite": loss_cmp.finite and grad_cmp.finite, "passed": loss_cmp.passed and grad_cmp.passed,
    }


def run_objective_checks(
    device: torch.device, dtype_names: Sequence[str], rows: int = 16, tokens: int = 256, seed: int = 0
) -> dict[str, Any]:
    """Section (a): every case in every dtype, a per-dtype summary, and the section's verdict."""
    inputs = objective_inputs(rows, tokens, seed)
    checks = []
    for dtype_name in dtype_names:
        logger.info("(a) objectives on %s in %s: %d checks", device, dtype_name, len(objective_cases()))
        checks += [check_case(case, inputs, device, dtype_name) for case in objective_cases()]
    summary = {
        name: {
            "max_loss_abs_err": max(c["loss_abs_err"] for c in checks if c["dtype"] == name),
            "max_grad_abs_err": max(c["grad_abs_err"] for c in checks if c["dtype"] == name),
            "passed": sum(c["passed"] for c in checks if c["dtype"] == name),
            "total": sum(c["dtype"] == name for c in checks),
        }
        for name in dtype_names
    }
    return {"rows": rows, "tokens": tokens, "tolerances": {n: TOLERANCES[n] for n in dtype_names},
            "checks": checks, "summary": summary, "passed": all(c["passed"] for c in checks)}


# ============================================================================= models
def build_model(
    config: Qwen2Config, device: torch.device, dtype: torch.dtype, attn: str, seed: int, norm_scale: float = 1.0
) -> PreTrainedModel:
    """Random-init model on ``device`` (fp32 init from ``seed``, then cast: same weights for every dtype/attn).

    ``norm_scale`` multiplies the final norm's weight, i.e. every logit (a trained model's logits are
    far from the near-uniform ones of a random init).
    """
    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, attn_implementation=attn)
    with torch.no_grad():
        model.get_decoder().norm.weight.mul_(norm_scale)
    return model.to(dtype).eval()


def final_hidden(model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                 position_ids: torch.Tensor | None) -> torch.Tensor:
    """Last hidden states of the decoder (no lm_head, no cache)."""
    out = model.get_decoder()(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                              use_cache=False)
    return out.last_hidden_state


def token_log_probs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[labels] in fp32 (logits in the model's dtype, upcast here, as verl does)."""
    logits = logits.float()
    return logits.gather(-1, labels[..., None]).squeeze(-1) - torch.logsumexp(logits, dim=-1)


# ============================================================================= (b) noise floor
@dataclass(frozen=True)
class Row:
    """One prompt + response, 1-D token ids on the CPU."""

    prompt: torch.Tensor
    response: torch.Tensor


@dataclass(frozen=True)
class Batch:
    """Model inputs and, per row, ``(batch index, first response position, end)``."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor | None
    position_ids: torch.Tensor
    spans: list[tuple[int, int, int]]


@dataclass(frozen=True)
class Packing:
    """How rows are grouped into forward passes: ``layout`` with ``micro_batch`` rows per pass (0: all)."""

    name: str
    layout: str  # alone | right_pad | verl | packed
    micro_batch: int = 0


PACKINGS = (
    Packing("right-padded, all rows", "right_pad"),
    Packing("verl layout, 2 rows", "verl", 2),
    Packing("verl layout, all rows", "verl"),
    Packing("packed in one row", "packed"),
)


def random_rows(n: int, prompt_len: int, response_len: int, vocab: int, seed: int) -> list[Row]:
    """``n`` rows of random tokens, prompt and response lengths between half and the full length."""
    gen = torch.Generator().manual_seed(seed)

    def length(full: int) -> int:
        return int(torch.randint(max(1, full // 2), full + 1, (1,), generator=gen))

    return [Row(torch.randint(0, vocab, (length(prompt_len),), generator=gen),
                torch.randint(0, vocab, (length(response_len),), generator=gen)) for _ in range(n)]


def layout_alone(row: Row) -> Batch:
    """One row, no padding."""
    ids = torch.cat([row.prompt, row.response])[None]
    return Batch(ids, None, torch.arange(ids.shape[1])[None], [(0, len(row.prompt), ids.shape[1])])


def layout_padded(rows: Sequence[Row], verl: bool) -> Batch:
    """Padded batch: right-padded rows, or verl's layout (prompt left-padded, response right-padded)."""
    p_max = max(len(r.prompt) for r in rows)
    if verl:
        width = p_max + max(len(r.response) for r in rows)
    else:
        width = max(len(r.prompt) + len(r.response) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    spans = []
    for b, row in enumerate(rows):
        start = p_max - len(row.prompt) if verl else 0
        seq = torch.cat([row.prompt, row.response])
        ids[b, start:start + len(seq)] = seq
        mask[b, start:start + len(seq)] = 1
        spans.append((b, start + len(row.prompt), start + len(seq)))
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    return Batch(ids, mask, position_ids, spans)


def layout_packed(rows: Sequence[Row]) -> Batch:
    """All rows concatenated in one row, position ids restarting at 0 per row, no attention mask."""
    seqs = [torch.cat([r.prompt, r.response]) for r in rows]
    spans, offset = [], 0
    for row, seq in zip(rows, seqs, strict=True):
        spans.append((0, offset + len(row.prompt), offset + len(seq)))
        offset += len(seq)
    position_ids = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    return Batch(torch.cat(seqs)[None], None, position_ids, spans)


def batch_log_probs(model: PreTrainedModel, batch: Batch, device: torch.device) -> list[torch.Tensor]:
    """Per row, the fp32 log-probs of its response tokens (logits only at those positions), on the CPU."""
    mask = batch.attention_mask.to(device) if batch.attention_mask is not None else None
    ids = batch.input_ids.to(device)
    with torch.no_grad():
        hidden = final_hidden(model, ids, mask, batch.position_ids.to(device))
        out = []
        for b, start, end in batch.spans:
            logits = model.get_output_embeddings()(hidden[b, start - 1:end - 1])
            out.append(token_log_probs(logits, ids[b, start:end]).cpu())
    return out


def score_rows(model: PreTrainedModel, rows: Sequence[Row], packing: Packing,
               device: torch.device) -> list[torch.Tensor]:
    """Response log-probs of every row, scored in ``packing``'s micro-batches."""
    if packing.layout == "alone":
        return [batch_log_probs(model, layout_alone(row), device)[0] for row in rows]
    size = packing.micro_batch or len(rows)
    out: list[torch.Tensor] = []
    for i in range(0, len(rows), size):
        chunk = rows[i:i + size]
        batch = layout_packed(chunk) if packing.layout == "packed" else layout_padded(chunk, packing.layout == "verl")
        out += batch_log_probs(model, batch, device)
    return out


def delta_stats(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> dict[str, float]:
    """Max and mean |a - b| over all response tokens of all rows."""
    delta = torch.cat([(x - y).abs() for x, y in zip(a, b, strict=True)])
    return {"max_abs_delta": float(delta.max()), "mean_abs_delta": float(delta.mean()), "tokens": delta.numel()}


def mean_entropy(logits: torch.Tensor) -> float:
    """Mean entropy (nats) of the softmax of each row of ``logits``."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return float(-(logp.exp() * logp).sum(-1).mean())


def logit_scale_for_entropy(logits: torch.Tensor, target: float, steps: int = 40) -> float:
    """Factor ``s`` such that ``softmax(s * logits)`` has mean entropy ``target`` (bisection on ``log s``)."""
    lo, hi = math.log(1e-3), math.log(1e4)
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if mean_entropy(logits * math.exp(mid)) > target else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def response_logits(model: PreTrainedModel, row: Row, device: torch.device) -> torch.Tensor:
    """fp32 logits at the positions that predict ``row``'s response tokens (row scored alone)."""
    batch = layout_alone(row)
    with torch.no_grad():
        hidden = final_hidden(model, batch.input_ids.to(device), None, batch.position_ids.to(device))
        return model.get_output_embeddings()(hidden[0, len(row.prompt) - 1:-1]).float()


def prepare_rows(config: Qwen2Config, preset: Preset, device: torch.device, target_entropy: float, seed: int
                 ) -> tuple[list[Row], float, dict[str, float]]:
    """Rows with responses sampled from the sharpened fp32 model, the final-norm scale that sharpens it, stats.

    A random init gives near-uniform logits; they are scaled (through the final norm's weight) so the
    mean entropy on the first row is ``target_entropy``, as for a trained policy. Each response token
    is then resampled from the model's distribution at its position (one teacher-forced pass per
    row, not autoregressive generation), so the scored tokens are as likely as the model's own samples.
    """
    rows = random_rows(preset.noise_rows, preset.prompt_len, preset.response_len, config.vocab_size, seed)
    model = build_model(config, device, torch.float32, "sdpa", seed)
    norm_scale = logit_scale_for_entropy(response_logits(model, rows[0], device), target_entropy)
    with torch.no_grad():
        model.get_decoder().norm.weight.mul_(norm_scale)
    gen = torch.Generator(device=device).manual_seed(seed)
    sampled, logits_all, chosen = [], [], []
    for row in rows:
        logits = response_logits(model, row, device)
        response = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
        sampled.append(Row(row.prompt, response.cpu()))
        chosen.append(token_log_probs(logits, response))
        logits_all.append(logits)
    logits = torch.cat(logits_all)
    stats = {"mean_entropy": mean_entropy(logits), "mean_log_prob": float(torch.cat(chosen).mean()),
             "logit_std": float(logits.std()), "mean_max_logit": float(logits.max(-1).values.mean())}
    del model, logits, logits_all
    free_memory(device)
    return sampled, norm_scale, stats


def attention_settings(device: torch.device, dtype_names: Sequence[str]) -> list[tuple[str, str]]:
    """(attn, dtype) pairs to measure: sdpa in every dtype, flash_attention_2 in half precision if present."""
    settings = [("sdpa", d) for d in dtype_names]
    if flash_attn_available(device):
        settings += [("flash_attention_2", d) for d in dtype_names if d != "fp32"]
    return settings


def packings_for(attn: str) -> list[Packing]:
    """The packings an attention implementation scores correctly (packed rows need transformers' support)."""
    return [p for p in PACKINGS if p.layout != "packed" or attn == "flash_attention_2" or packed_sdpa_supported()]


def score_packings(model: PreTrainedModel, rows: Sequence[Row], device: torch.device, attn: str,
                   dtype_name: str) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Each row scored alone, and every packing's |delta log-prob| against that."""
    alone = score_rows(model, rows, Packing("alone", "alone"), device)
    results = []
    for packing in packings_for(attn):
        logger.info("(b) noise floor: %s %s, %s", attn, dtype_name, packing.name)
        stats = delta_stats(score_rows(model, rows, packing, device), alone)
        results.append({"attn": attn, "dtype": dtype_name, "comparison": f"{packing.name} vs alone", "status": "ok",
                        **stats})
    return alone, results


def measure_setting(config: Qwen2Config, rows: Sequence[Row], device: torch.device, attn: str, dtype_name: str,
                    seed: int, norm_scale: float) -> tuple[list[torch.Tensor] | None, list[dict[str, Any]]]:
    """:func:`score_packings` for one (attn, dtype) on a fresh model; an error is reported, not raised."""
    try:
        model = build_model(config, device, DTYPES[dtype_name], attn, seed, norm_scale)
        return score_packings(model, rows, device, attn, dtype_name)
    except Exception as error:  # report and go on: one setting must not cost the others
        logger.exception("(b) %s %s failed", attn, dtype_name)
        return None, [{"attn": attn, "dtype": dtype_name, "comparison": "-", **error_record(error)}]
    finally:
        model = None
        free_memory(device)


def cross_setting_deltas(alone: dict[tuple[str, str], list[torch.Tensor]]) -> list[dict[str, Any]]:
    """Rows scored alone: bf16 against fp32 (sdpa), and flash_attention_2 against sdpa (same dtype)."""
    out = []
    if ("sdpa", "fp32") in alone and ("sdpa", "bf16") in alone:
        out.append({"attn": "sdpa", "dtype": "bf16 vs fp32", "comparison": "alone vs alone", "status": "ok",
                    **delta_stats(alone[("sdpa", "bf16")], alone[("sdpa", "fp32")])})
    for (attn, dtype_name), lps in alone.items():
        if attn == "flash_attention_2" and ("sdpa", dtype_name) in alone:
            out.append({"attn": "fa2 vs sdpa", "dtype": dtype_name, "comparison": "alone vs alone", "status": "ok",
                        **delta_stats(lps, alone[("sdpa", dtype_name)])})
    return out


def run_noise_floor(preset: Preset, device: torch.device, dtype_names: Sequence[str], target_entropy: float,
                    seed: int) -> dict[str, Any]:
    """Section (b): |delta log-prob| of the same rows across packings, per attention implementation and dtype."""
    config = qwen2_config(preset, tie_word_embeddings=False)
    logger.info("(b) noise floor: sampling %d rows from the %s model", preset.noise_rows, preset.name)
    rows, norm_scale, token_stats = prepare_rows(config, preset, device, target_entropy, seed)
    alone: dict[tuple[str, str], list[torch.Tensor]] = {}
    measurements: list[dict[str, Any]] = []
    for attn, dtype_name in attention_settings(device, dtype_names):
        lps, results = measure_setting(config, rows, device, attn, dtype_name, seed, norm_scale)
        measurements += results
        if lps is not None:
            alone[(attn, dtype_name)] = lps
    measurements += cross_setting_deltas(alone)
    return {"model": preset.name, "rows": len(rows), "prompt_tokens": [len(r.prompt) for r in rows],
            "response_tokens": [len(r.response) for r in rows], "tied_embeddings": False,
            "target_entropy": target_entropy, "norm_scale": norm_scale, **token_stats,
            "flash_attn": flash_attn_available(device), "measurements": measurements}


# ============================================================================= (c) memory
def update_batch(preset: Preset, tokens: int, device: torch.device, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``tokens // seq_len`` full sequences (prompt + response), or one of ``tokens`` tokens; the response mask.

    The mask covers the predicted tokens ``ids[:, 1:]``: the last ``response_len`` of each row.
    """
    seq_len = min(preset.prompt_len + preset.response_len, tokens)
    response_len = min(preset.response_len, seq_len - 1)
    n = max(1, tokens // seq_len)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, preset.model["vocab_size"], (n, seq_len), generator=gen)
    mask = torch.zeros(n, seq_len - 1, dtype=torch.bool)
    mask[:, -response_len:] = True
    return ids.to(device), mask.to(device)


def sequence_log_probs(model: PreTrainedModel, input_ids: torch.Tensor) -> torch.Tensor:
    """Log-probs of ``input_ids[:, 1:]``: logits of every token in the model dtype, fp32 log-softmax row by row."""
    logits = model(input_ids=input_ids, use_cache=False).logits[:, :-1]
    return torch.stack([token_log_probs(logits[b], input_ids[b, 1:]) for b in range(input_ids.shape[0])])


def teacher_pass(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """No-grad forward: response-token log-probs (zero elsewhere)."""
    model.eval()
    with torch.no_grad():
        return torch.where(mask, sequence_log_probs(model, input_ids), 0.0)


def update_step(model: PreTrainedModel, input_ids: torch.Tensor, mask: torch.Tensor, teacher: torch.Tensor) -> float:
    """Forward + backward of the SDAR loss with gradient checkpointing (gradients freed afterwards)."""
    model.train()
    model.zero_grad(set_to_none=True)
    loss, _ = objectives.sdar_loss(sequence_log_probs(model, input_ids), teacher, mask)
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss.detach())


def error_record(error: BaseException) -> dict[str, str]:
    """``status`` (``oom`` or ``error``) and the message, for a measurement that raised."""
    return {"status": "oom" if is_oom(error) else "error", "error": f"{type(error).__name__}: {error}"[:500]}


def measure(name: str, fn: Callable[[], Any], device: torch.device, repeats: int) -> dict[str, Any]:
    """Time of ``fn`` (first and last of ``repeats`` runs) and its peak memory; an error is reported, not raised."""
    record: dict[str, Any] = {"measurement": name}
    times = []
    try:
        for _ in range(max(1, repeats)):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
        record.update(status="ok", time_first_s=times[0], time_s=times[-1])
    except Exception as error:
        logger.warning("(c) %s: %s", name, error)
        record.update(error_record(error))
    record.update(memory_record(device))
    free_memory(device)
    return record


def memory_record(device: torch.device) -> dict[str, Any]:
    """Peak and current allocated memory on CUDA; on the CPU only the process' peak RSS (over its lifetime)."""
    rss_max_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if device.type != "cuda":
        return {"peak_mib": None, "allocated_mib": None, "rss_max_mib": rss_max_mib}
    return {"peak_mib": torch.cuda.max_memory_allocated(device) / MIB,
            "allocated_mib": torch.cuda.memory_allocated(device) / MIB, "rss_max_mib": rss_max_mib}


def measure_model(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, device: torch.device,
                  repeats: int) -> list[dict[str, Any]]:
    """Teacher pass, then update step (whose teacher log-probs are the teacher pass' plus 0.1)."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    teacher = torch.zeros_like(mask, dtype=torch.float32)

    def teacher_fn() -> None:
        teacher.copy_(teacher_pass(model, ids, mask) + 0.1)

    return [measure("teacher pass (no grad)", teacher_fn, device, repeats),
            measure("update fwd+bwd", lambda: update_step(model, ids, mask, teacher), device, repeats)]


def run_memory(preset: Preset, device: torch.device, tokens: int, repeats: int, seed: int) -> dict[str, Any]:
    """Section (c): teacher pass and update step of one micro-batch, bf16 weights, gradient checkpointing.

    The peak includes weights and gradients (bf16, no fp32 master copy) but no optimizer state.
    """
    ids, mask = update_batch(preset, tokens, device, seed)
    section: dict[str, Any] = {"model": preset.name, "dtype": "bf16", "sequences": ids.shape[0],
                               "seq_len": ids.shape[1], "tokens": ids.numel(), "gradient_checkpointing": True,
                               "optimizer_state": "not included", "measurements": []}
    logger.info("(c) memory: %s model, %d x %d tokens", preset.name, ids.shape[0], ids.shape[1])
    try:
        model = build_model(qwen2_config(preset), device, torch.bfloat16, "sdpa", seed)
        section["parameters"] = sum(p.numel() for p in model.parameters())
        section["weights_mib"] = sum(p.numel() * p.element_size() for p in model.parameters()) / MIB
        section["measurements"] = measure_model(model, ids, mask, device, repeats)
    except Exception as error:  # building the model failed (measure() reports its own errors)
        logger.exception("(c) building the %s model failed", preset.name)
        section["measurements"].append({"measurement": "build model", **error_record(error)})
    finally:
        model = None
        free_memory(device)
    return section


# ============================================================================= report
def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, columns padded to their widest cell."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "PASS" if value else "FAIL"
    if isinstance(value, float):
        return f"{value:.3g}"
    return "n/a" if value is None else str(value)


def render_objectives(section: dict[str, Any]) -> list[str]:
    """Section (a): one line per check, then the per-dtype summary."""
    return [
        "\n(a) objectives vs CPU float64 on the same (rounded) inputs; masked tokens hold -inf/NaN",
        format_table(["check", "dtype", "loss err", "loss tol", "grad err", "grad tol", "result"],
                     [[c["check"], c["dtype"], c["loss_abs_err"], c["loss_tol"], c["grad_abs_err"], c["grad_tol"],
                       c["passed"]] for c in section["checks"]]),
        format_table(["dtype", "max loss err", "max grad err", "passed"],
                     [[d, s["max_loss_abs_err"], s["max_grad_abs_err"], f"{s['passed']}/{s['total']}"]
                      for d, s in section["summary"].items()]),
    ]


def render_noise_floor(section: dict[str, Any]) -> list[str]:
    """Section (b): one line per (attn, dtype, comparison)."""
    return [
        f"\n(b) log-prob noise floor, {section['model']} model (untied head), {section['rows']} rows, sampled "
        f"tokens: mean log-prob {section['mean_log_prob']:.3g}, mean entropy {section['mean_entropy']:.3g}, "
        f"logit std {section['logit_std']:.3g}, mean max logit {section['mean_max_logit']:.3g}",
        format_table(["attn", "dtype", "comparison", "max |dlp|", "mean |dlp|", "status"],
                     [[m["attn"], m["dtype"], m["comparison"], m.get("max_abs_delta"), m.get("mean_abs_delta"),
                       m["status"]] for m in section["measurements"]]),
    ]


def render_memory(section: dict[str, Any]) -> list[str]:
    """Section (c): one line per measurement."""
    return [
        f"\n(c) memory, {section['model']} model bf16, {section['sequences']} x {section['seq_len']} = "
        f"{section['tokens']} tokens, gradient checkpointing, weights {section.get('weights_mib', 0):.1f} MiB, "
        "no optimizer state",
        format_table(["measurement", "time (s)", "first (s)", "peak MiB", "process max RSS MiB", "status"],
                     [[m["measurement"], m.get("time_s"), m.get("time_first_s"), m.get("peak_mib"),
                       m.get("rss_max_mib"), m["status"]] for m in section["measurements"]]),
    ]


def render_report(report: dict[str, Any]) -> str:
    """All sections as readable tables."""
    meta = report["meta"]
    parts = [f"gpu_check on {meta['device']} ({meta['device_name']}), torch {meta['torch']}, "
             f"transformers {meta['transformers']}, flash_attn {meta['flash_attn']}"]
    parts += render_objectives(report["objectives"])
    if "noise_floor" in report:
        parts += render_noise_floor(report["noise_floor"])
    if "memory" in report:
        parts += render_memory(report["memory"])
    parts.append(f"\noverall: {'PASS' if report['passed'] else 'FAIL'} (the correctness checks of section (a))")
    return "\n".join(parts)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(prog="python -m verl_sdar.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda or cuda:N")
    parser.add_argument("--model", choices=sorted(PRESETS), default=None,
                        help="model shape and token budget (default: 3b on CUDA, tiny on the CPU)")
    parser.add_argument("--tokens", type=int, default=None, help="tokens of the section (c) micro-batch")
    parser.add_argument("--dtypes", default="fp32,bf16",
                        help=f"sections (a) and (b), comma-separated, of {sorted(DTYPES)} (section (c) is bf16)")
    parser.add_argument("--out", type=Path, default=Path("gpu_check.json"), help="JSON report")
    parser.add_argument("--repeats", type=int, default=2,
                        help="runs per section (c) measurement; the last one is reported, the first as well")
    parser.add_argument("--target-entropy", type=float, default=1.0,
                        help="section (b): mean entropy (nats) the random model's logits are scaled to")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-noise", action="store_true", help="skip section (b)")
    parser.add_argument("--skip-memory", action="store_true", help="skip section (c)")
    return parser


def parse_dtypes(text: str) -> list[str]:
    """``fp32,bf16`` -> ``["fp32", "bf16"]``, every name checked against :data:`DTYPES`."""
    names = [d.strip() for d in text.split(",") if d.strip()]
    unknown = [d for d in names if d not in DTYPES]
    if unknown or not names:
        raise SystemExit(f"--dtypes: unknown {unknown}; expected a comma-separated subset of {sorted(DTYPES)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sections, print the tables, write the JSON; 1 when a section (a) check fails."""
    args = build_parser().parse_args(argv)
    device = resolve_device(args.device)
    preset = PRESETS[args.model or ("3b" if device.type == "cuda" else "tiny")]
    dtype_names = parse_dtypes(args.dtypes)
    if preset.name == "3b" and device.type == "cpu":
        logger.warning("--model 3b on the CPU: sections (b) and (c) will take very long (use --model tiny)")
    started = time.perf_counter()
    meta = {**environment_info(device), "model": preset.name, "argv": list(sys.argv[1:] if argv is None else argv)}
    report: dict[str, Any] = {"meta": meta}
    report["objectives"] = run_objective_checks(device, dtype_names, seed=args.seed)
    if not args.skip_noise:
        report["noise_floor"] = run_noise_floor(preset, device, dtype_names, args.target_entropy, args.seed)
    if not args.skip_memory:
        report["memory"] = run_memory(preset, device, args.tokens or preset.tokens, args.repeats, args.seed)
    report["passed"] = report["objectives"]["passed"]
    report["meta"]["duration_s"] = time.perf_counter() - started
    print(render_report(report))
    args.out.write_text(json.dumps(report, indent=2, default=str))
    logger.info("wrote %s", args.out)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    sys.exit(main())
