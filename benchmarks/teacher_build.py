"""Time building privileged teacher sequences: token-level splice (ours) vs decode/re-encode (reference).

Workload: a batch of rows with ~1.5k-token chat prompts (uniform 1000..2000 tokens), ~200-token
responses, and one of 6 skill texts (~1k tokens each, one per task type) as privileged context.

* ours:      ``verl_sdar.teacher.PrivilegedBlocks`` (each distinct skill text tokenised once, as a
             system turn) + ``build_teacher_rows`` (token-level splice; response ids untouched).
             A fresh ``PrivilegedBlocks`` per timed run, so tokenising the 6 skills is included.
* reference: per row, in a Python loop: decode the prompt ids to text, prefix
             ``f"{header}\\n{skill}\\n\\n"``, re-tokenise the whole string, left-truncate /
             left-pad to the prompt budget, append the response ids.

Two tokenizers: the project's tiny tokenizer (``verl_sdar.tiny_model``) and a 32k byte-level BPE
trained here, offline, on Python's own stdlib sources and pydoc topics (~5 MB). Prompt, skill and
response texts are English from the pydoc topics. The table also counts rows where the reference's
left truncation to the prompt budget cut the skill (partly, or entirely); ours never drops it.

    python benchmarks/teacher_build.py [--rows 4096] [--ref-rows 4096] [--repeats 3] [--out docs/teacher_build.md]
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from verl_sdar.teacher import PrivilegedBlocks, build_teacher_rows

HEADER = "Useful knowledge for this task:"  # same wording as the default sdar.privileged.header
N_TASK_TYPES = 6
PROMPT_TOKENS = (1000, 2000)
SKILL_TOKENS = (800, 900, 1000, 1000, 1100, 1200)
RESPONSE_TOKENS = (150, 250)


def english_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def stdlib_corpus() -> list[str]:
    """The top-level stdlib modules' sources (~4.7 MB) plus the pydoc topics (~0.5 MB)."""
    lib = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in sorted(lib.glob("*.py"))]
    return texts + [english_text()]


def train_bpe(vocab_size: int, out_dir: Path):
    """A byte-level BPE (Qwen2 pre-tokenisation, the tiny model's ChatML template) on the stdlib corpus."""
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import train_tokenizer

    train_tokenizer(stdlib_corpus(), vocab_size).save_pretrained(out_dir)
    return AutoTokenizer.from_pretrained(str(out_dir))


def tiny_tokenizer(out_dir: Path):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(str(build_tiny_model(out_dir)))


@dataclass
class Batch:
    prompts: list[torch.Tensor]
    responses: list[torch.Tensor]
    task_types: list[int]
    skills: list[str]
    skill_tokens: list[int]


def make_batch(tokenizer, rows: int, seed: int = 0) -> Batch:
    """Deterministic rows of English text sized in this tokenizer's tokens."""
    rng = random.Random(seed)
    text = english_text()
    sample = text[:200_000]
    chars_per_token = len(sample) / len(tokenizer.encode(sample, add_special_tokens=False))

    def window(n_tokens: int) -> str:
        n_chars = int(n_tokens * chars_per_token)
        start = rng.randrange(0, len(text) - n_chars)
        start = text.find(" ", start) + 1
        return text[start : start + n_chars].strip()

    skills = [f"Skill {j}: {window(n)}" for j, n in enumerate(SKILL_TOKENS)]
    skill_tokens = [len(tokenizer.encode(s, add_special_tokens=False)) for s in skills]
    contents = [f"Answer the question about this text.\n\n{window(rng.randint(*PROMPT_TOKENS))}" for _ in range(rows)]
    rendered = tokenizer.apply_chat_template(
        [[{"role": "user", "content": c}] for c in contents], tokenize=False, add_generation_prompt=True
    )
    prompt_ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    corpus_ids = tokenizer.encode(text[:400_000], add_special_tokens=False)
    responses = []
    for _ in range(rows):
        n = rng.randint(*RESPONSE_TOKENS)
        start = rng.randrange(0, len(corpus_ids) - n)
        responses.append(torch.tensor(corpus_ids[start : start + n]))
    return Batch(
        prompts=[torch.tensor(p) for p in prompt_ids],
        responses=responses,
        task_types=[rng.randrange(N_TASK_TYPES) for _ in range(rows)],
        skills=skills,
        skill_tokens=skill_tokens,
    )


def ours(tokenizer, batch: Batch, rows: int, max_prompt: int | None):
    """The trainer's teacher-row steps (``verl_sdar.teacher_pass.TeacherPass``), default
    placement/role; ``max_prompt`` is ``sdar.teacher.max_prompt_length``."""
    blocks = PrivilegedBlocks(tokenizer, header=HEADER + "\n")
    prompts = batch.prompts[:rows]
    row_blocks = [blocks(batch.skills[t]) for t in batch.task_types[:rows]]
    insert_at, cut_from = [], []
    for prompt in prompts:
        ids = prompt.tolist()
        k = blocks.insertion_index(ids)
        insert_at.append(k)
        cut_from.append(blocks.cut_index(ids, k))
    built = build_teacher_rows(
        prompts,
        batch.responses[:rows],
        row_blocks,
        insert_at,
        cut_from=cut_from,
        max_prompt_length=max_prompt,
        keep_tail=blocks.tail_length,
    )
    return built, row_blocks, insert_at


def skill_missing(built, row_blocks, insert_at) -> int:
    """Rows whose teacher prompt does not hold the full skill block at its insertion point."""
    rows = zip(built.prompts, row_blocks, insert_at, strict=True)
    return sum(p[k : k + len(b)].tolist() != list(b) for p, b, k in rows)


def reference(tokenizer, batch: Batch, rows: int, max_prompt: int):
    """The decode / prefix / re-encode / left-truncate-or-pad loop.

    Returns (rows, skill cut partly, skill cut entirely, prompt context cut)."""
    pad = tokenizer.pad_token_id
    header_tokens = len(tokenizer.encode(f"{HEADER}\n", add_special_tokens=False))
    out = []
    cut_rows = gone_rows = context_rows = 0
    for i in range(rows):
        prompt, response = batch.prompts[i], batch.responses[i]
        skill = batch.skills[batch.task_types[i]]
        text = f"{HEADER}\n{skill}\n\n" + tokenizer.decode(prompt.tolist())
        ids = tokenizer.encode(text, add_special_tokens=False)
        if len(ids) > max_prompt:
            cut = len(ids) - max_prompt
            prefix = len(ids) - len(prompt)  # header + skill tokens, in front of the prompt
            cut_rows += cut > header_tokens
            gone_rows += cut >= prefix
            context_rows += cut > prefix
            ids = ids[-max_prompt:]
        n_pad = max_prompt - len(ids)
        prompt_ids = torch.tensor([pad] * n_pad + ids)
        input_ids = torch.cat([prompt_ids, response])
        attention_mask = torch.cat(
            [torch.zeros(n_pad, dtype=torch.int64), torch.ones(input_ids.numel() - n_pad, dtype=torch.int64)]
        )
        position_ids = (attention_mask.cumsum(0) - 1).clamp(min=0)
        out.append((input_ids, attention_mask, position_ids))
    return out, cut_rows, gone_rows, context_rows


def timed(fn, repeats: int):
    """Run ``fn`` ``repeats`` times; return ((cpu_s, wall_s) of the run with the least CPU time,
    its result). CPU time is this process's (all threads), so other jobs on a shared machine
    barely affect it; wall time is shown alongside."""
    best, result = (float("inf"), float("inf")), None
    for _ in range(repeats):
        result = None
        gc.collect()
        cpu, wall = time.process_time(), time.perf_counter()
        result = fn()
        took = (time.process_time() - cpu, time.perf_counter() - wall)
        best = min(best, took)
    return best, result


def bench(name: str, tokenizer, args) -> list[dict]:
    t0 = time.perf_counter()
    batch = make_batch(tokenizer, args.rows)
    setup = time.perf_counter() - t0
    prompt_lens = [p.numel() for p in batch.prompts]
    resp_lens = [r.numel() for r in batch.responses]
    print(
        f"[{name}] vocab {len(tokenizer)}: prompts {statistics.mean(prompt_lens):.0f} tokens (mean), "
        f"skills {batch.skill_tokens} tokens, responses {statistics.mean(resp_lens):.0f} tokens; setup {setup:.1f}s",
        flush=True,
    )
    results = []
    # The reference first, and its output freed before ours runs: neither pays for the other's
    # live objects (Python's cyclic GC slows down with many live containers).
    ref_rows = min(args.ref_rows, args.rows)
    (cpu, wall), (_, cut, gone, context_cut) = timed(lambda: reference(tokenizer, batch, ref_rows, args.max_prompt), 1)
    print(f"[{name}] reference: {ref_rows} rows in {cpu:.3f}s CPU, {wall:.3f}s wall", flush=True)
    results.append(
        dict(
            method=f"reference, decode + re-encode (budget {args.max_prompt}: left-truncated)",
            rows=ref_rows,
            cpu=cpu,
            wall=wall,
            cut=cut,
            gone=gone,
            context_cut=context_cut,
            counted=ref_rows,
            teacher=f"{args.max_prompt} (left-padded)",
        )
    )
    for budget in (None, args.max_prompt):
        (cpu, wall), (built, row_blocks, insert_at) = timed(
            lambda budget=budget: ours(tokenizer, batch, args.rows, budget), args.repeats
        )
        missing = skill_missing(built, row_blocks, insert_at)
        teacher = [p.numel() for p in built.prompts]
        label = "no budget" if budget is None else f"budget {budget}: oldest context trimmed"
        print(f"[{name}] ours ({label}): {args.rows} rows in {cpu:.3f}s CPU, {wall:.3f}s wall", flush=True)
        results.append(
            dict(
                method=f"ours, token splice ({label})",
                rows=args.rows,
                cpu=cpu,
                wall=wall,
                cut=missing,
                gone=missing,
                context_cut=sum(built.truncated),
                counted=args.rows,
                teacher=f"{statistics.mean(teacher):.0f} / {max(teacher)}",
            )
        )
        del built, row_blocks, insert_at
    ref_rps = results[0]["rows"] / results[0]["cpu"]
    workload = (
        f"| {name} ({len(tokenizer):,} vocab) "
        f"| {statistics.mean(prompt_lens):.0f} ({min(prompt_lens)}..{max(prompt_lens)}) "
        f"| {', '.join(map(str, batch.skill_tokens))} | {statistics.mean(resp_lens):.0f} "
        f"({min(resp_lens)}..{max(resp_lens)}) |"
    )
    for r in results:
        r.update(tokenizer=name, vocab=len(tokenizer), rps=r["rows"] / r["cpu"], workload=workload)
        r["ratio"] = r["rps"] / ref_rps
    return results


def table(results: list[dict], args) -> str:
    lines = [
        "| tokenizer | method | rows timed | CPU time (s) | wall time (s) | rows/s (CPU) | ratio vs reference "
        "| rows with skill cut (any / entirely) | rows with prompt context cut "
        "| teacher prompt tokens (mean / max) |",
        "|---|---|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in results:
        extrapolated = "" if r["rows"] == args.rows else f" (rows/s extrapolated to {args.rows})"
        lines.append(
            f"| {r['tokenizer']} ({r['vocab']:,} vocab) | {r['method']} | {r['rows']}{extrapolated} "
            f"| {r['cpu']:.3f} | {r['wall']:.3f} | {r['rps']:,.0f} | {r['ratio']:.1f}x "
            f"| {r['cut']} / {r['gone']} of {r['counted']} | {r['context_cut']} of {r['counted']} | {r['teacher']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--ref-rows", type=int, default=4096, help="rows timed for the (slow) reference method")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of ours (best is reported)")
    parser.add_argument("--max-prompt", type=int, default=2048, help="the reference's prompt budget")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary of the trained BPE")
    parser.add_argument("--out", default=None, help="also write the table (markdown) here")
    args = parser.parse_args()

    start = time.perf_counter()
    load_before = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results += bench("tiny_model", tiny_tokenizer(Path(tmp) / "tiny"), args)
        t0 = time.perf_counter()
        bpe = train_bpe(args.vocab, Path(tmp) / "bpe")
        print(f"trained the {args.vocab}-vocab BPE in {time.perf_counter() - t0:.1f}s", flush=True)
        results += bench("stdlib BPE", bpe, args)
    total = time.perf_counter() - start
    load = (load_before, os.getloadavg()[0])
    md = table(results, args)
    print()
    print(md)
    print(f"\ntotal run time {total:.0f}s")
    if args.out:
        write_doc(Path(args.out), md, args, total, load, results)
        print(f"wrote {args.out}")


def write_doc(path: Path, md: str, args, total: float, load: tuple[float, float], results: list[dict]) -> None:
    import tokenizers
    import transformers

    cmd = "python benchmarks/teacher_build.py " + " ".join(sys.argv[1:])
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    extrapolated = args.ref_rows < args.rows
    workload = "\n".join(dict.fromkeys(r["workload"] for r in results))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"""# Building privileged teacher sequences: token splice vs decode/re-encode

Generated by `benchmarks/teacher_build.py` (its docstring describes the workload).

    {cmd.strip()}

Machine: {os.cpu_count()} CPU cores ({cpu}), no GPU; Python {platform.python_version()}, torch {torch.__version__},
transformers {transformers.__version__}, tokenizers {tokenizers.__version__}. Total run time {total:.0f} s
(including building the tiny model and training the {args.vocab:,}-vocab BPE). 1-minute load
average {load[0]:.1f} before / {load[1]:.1f} after the run: the machine is shared with other
jobs competing for the 2 cores, so wall times vary between runs; rows/s and ratios are computed
from this process's CPU time, which they barely affect.

Workload: {args.rows} rows of English text (pydoc topics): chat prompts of ~{PROMPT_TOKENS[0]}..{PROMPT_TOKENS[1]}
tokens, {N_TASK_TYPES} skill texts (task types) of ~{min(SKILL_TOKENS)}..{max(SKILL_TOKENS)} tokens (one per row, by
its task type), responses of {RESPONSE_TOKENS[0]}..{RESPONSE_TOKENS[1]} tokens; prompt budget {args.max_prompt}
tokens. Measured, in each tokenizer's tokens:

| tokenizer | prompt tokens, mean (range) | the {N_TASK_TYPES} skill texts' tokens | response tokens, mean (range) |
|---|---|---|---|
{workload}

Results:

{md}

* **ours**: the trainer's teacher-row steps: `PrivilegedBlocks` (default role `system`, placement
  `start`) + `insertion_index` / `cut_index` per row + `build_teacher_rows` from
  `verl_sdar.teacher`. Best of {args.repeats} runs (least CPU time), each with a fresh `PrivilegedBlocks` (so
  tokenising the {N_TASK_TYPES} skill blocks is included). "no budget": `sdar.teacher.max_prompt_length=null`;
  "budget {args.max_prompt}": over-budget rows lose their oldest user-message context after the block.
* **reference**: per row, decode the prompt ids, prefix `"{HEADER}\\n{{skill}}\\n\\n"`,
  re-tokenise, left-truncate/pad to {args.max_prompt}, append the response; one run
  {f"over {args.ref_rows} rows, rows/s extrapolated to {args.rows}" if extrapolated else "over all rows"}.
* **tokenizers**: `tiny_model` is the project's test tokenizer (`verl_sdar.tiny_model`, byte-level
  BPE on a tiny corpus, so English splits into short pieces); `stdlib BPE` is a {args.vocab:,}-vocab
  byte-level BPE (Qwen2 pre-tokenisation, ChatML template) trained here on the Python stdlib's
  sources and pydoc topics. Token counts above are in each tokenizer's own tokens.
* **rows/s (CPU)**: rows / CPU seconds of this process; **ratio**: rows/s of the method / rows/s of
  the reference on the same tokenizer.
* **skill cut**: reference: rows where left truncation removed skill tokens (the prefix is header,
  then skill, so: more tokens than the header; "any"), and rows where it removed the whole
  header + skill ("entirely").
  Ours: rows whose teacher prompt lacks the full tokenised skill block at its insertion point,
  checked token by token: 0, the block is never cut.
* **prompt context cut**: reference: rows where truncation went past the skill into the prompt
  (the chat turn header is then gone too). Ours with a budget: rows whose oldest user-message
  context was trimmed (counted by the trainer as `sdar/teacher_rows_truncated`).
"""
    )


if __name__ == "__main__":
    main()
