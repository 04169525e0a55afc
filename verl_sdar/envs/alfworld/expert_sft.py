"""Supervised warm start for ALFWorld: expert trajectories in the agent loop's own prompt format.

The planner expert plays each game; every turn becomes one chat sample whose user message is
exactly what the ``alfworld`` agent loop would show at that point (:func:`.prompts.build_prompt`,
same history window) and whose assistant message is ``<think>...</think><action>expert action</action>``.
A share of the games (``fraction``) also carries the privileged block the SDAR teacher sees: a
first message ``sdar.privileged.header + text`` (role ``sdar.privileged.role``; header and role are
the defaults of :class:`verl_sdar.config.PrivilegedConfig`), the text being one of
:mod:`.privileged`'s kinds (the skill library's text for the task type, or the game's expert
route), so a model trained on the mix has seen prompts both with and without it. Token ids
(:func:`tokenize_rows`, and :mod:`.evaluate`'s prompts) render that block with the teacher's own
:class:`verl_sdar.teacher.PrivilegedBlocks` and splice it where the teacher does
(``sdar.privileged.placement``), so they are the teacher's sequences and cannot drift from them.

    python -m verl_sdar.envs.alfworld.expert_sft GAMES_ROOT OUT.parquet [--split train]
        [--privileged route|skills] [--skills builtin:alfworld] [--fraction 0.5]
        [--history-length 2] [--seed 0]

writes verl's multi-turn SFT format (a ``messages`` column, plus ``task_type``, ``game``, ``turn``,
``with_privileged``), usable by verl's SFT trainer and by :func:`sft_train`.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from verl_sdar.config import PrivilegedConfig
from verl_sdar.envs.alfworld.prompts import build_prompt, format_response

logger = logging.getLogger(__name__)
TEACHER_BLOCK = PrivilegedConfig()
"""The teacher's block settings (``sdar.privileged.*`` defaults): header, role, placement."""
DEFAULT_HEADER = TEACHER_BLOCK.header


@dataclass(frozen=True)
class ExpertTurn:
    game: str
    task_type: str
    turn: int
    prompt: str
    response: str


def thought_for(action: str) -> str:
    """A short template thought naming the action's intent (the expert has no words of its own)."""
    verb = action.split(" ", 1)[0]
    intents = {
        "go": "I should go and look there.", "open": "I should open it to see inside.",
        "take": "This is the object I need.", "move": "I can place the object here.",
        "clean": "The object has to be cleaned first.", "heat": "The object has to be heated first.",
        "cool": "The object has to be cooled first.", "use": "I need the light to examine it.",
        "examine": "Now I can examine it.", "close": "I can close this.",
    }
    return intents.get(verb, "This brings me closer to the goal.")


def expert_turns(games: list[str], history_length: int = 2, max_steps: int = 50) -> list[ExpertTurn]:
    """Replay the planner expert on ``games``; one :class:`ExpertTurn` per expert step (won games only)."""
    from verl_sdar.envs.alfworld.play import AlfworldEnv, run_expert, strip_welcome, task_type_of

    turns: list[ExpertTurn] = []
    env = AlfworldEnv(max_steps=max_steps)
    try:
        for game in games:
            plan = run_expert(game, max_steps=max_steps)
            if not plan.won:
                logger.warning("expert did not win %s (%s): skipped", game, plan.error)
                continue
            obs, info = env.reset(game)
            obs, task, admissible = strip_welcome(obs), info.get("task", ""), info["admissible_commands"]
            history: list[tuple[str, str]] = []
            for i, action in enumerate(plan.actions):
                prompt = build_prompt(task, obs, admissible, history, history_length)
                response = format_response(thought_for(action), action)
                turns.append(ExpertTurn(game, task_type_of(game), i, prompt, response))
                next_obs, _, _, info = env.step(action)
                history.append((obs, action))
                obs, admissible = next_obs, info["admissible_commands"]
    finally:
        env.close()
    return turns


def sft_rows(turns: list[ExpertTurn], privileged: Callable[[str], str] | None, fraction: float, seed: int = 0,
             header: str = DEFAULT_HEADER) -> list[dict]:
    """Chat samples; a seeded ``fraction`` of the games get the privileged system block.

    ``privileged`` maps a game path to its privileged text (:func:`.privileged.privileged_text`);
    ``None`` means no sample gets a block.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    chosen = {g: rng.random() < fraction for g in sorted({t.game for t in turns})}
    texts: dict[str, str] = {}
    rows = []
    for t in turns:
        messages = [{"role": "user", "content": t.prompt}, {"role": "assistant", "content": t.response}]
        use = privileged is not None and chosen[t.game]
        if use:
            if t.game not in texts:
                texts[t.game] = privileged(t.game)
            messages.insert(0, privileged_message(texts[t.game], header))
        rows.append({"messages": messages, "task_type": t.task_type, "game": t.game, "turn": t.turn,
                     "with_privileged": bool(use)})
    return rows


def privileged_message(text: str, header: str = DEFAULT_HEADER) -> dict:
    """The privileged block as a chat message (the teacher's role; content ``header + text``)."""
    return {"role": TEACHER_BLOCK.role, "content": header + text}


def teacher_blocks(tokenizer):
    """The teacher's block renderer for ``tokenizer`` (:class:`verl_sdar.teacher.PrivilegedBlocks`, with
    the teacher's role and placement); it is given a block's whole content, header included, as
    :func:`privileged_message` writes it."""
    from verl_sdar.teacher import PrivilegedBlocks

    return PrivilegedBlocks(tokenizer, header="", role=TEACHER_BLOCK.role, placement=TEACHER_BLOCK.placement)


def chat_ids(tokenizer, messages: list[dict], blocks=None, add_generation_prompt: bool = False) -> list[int]:
    """Token ids of a chat. With ``blocks`` (:func:`teacher_blocks`), ``messages[0]`` is the privileged
    block: the other messages are rendered by the chat template and the block's ids
    (``blocks(content)``) are spliced in at ``blocks.insertion_index``, exactly as the SDAR teacher
    builds its sequences."""
    rest = messages[1:] if blocks is not None else messages
    ids = list(tokenizer.apply_chat_template(rest, add_generation_prompt=add_generation_prompt, tokenize=True,
                                             return_dict=False))
    if blocks is None:
        return ids
    if messages[0]["role"] != blocks.role:
        raise ValueError(
            f"the privileged message has role {messages[0]['role']!r}, the teacher's blocks {blocks.role!r}"
        )
    k = blocks.insertion_index(ids)
    return ids[:k] + blocks(messages[0]["content"]) + ids[k:]


def tokenize_rows(tokenizer, rows: list[dict], max_length: int) -> list[tuple[list[int], list[int]]]:
    """(input ids, loss mask) per sample: the loss covers the assistant message and its end-of-turn.

    A row ``with_privileged`` starts with the privileged message: it is rendered as the teacher
    renders and places its block (:func:`chat_ids`)."""
    samples = []
    blocks = None
    for row in rows:
        messages = list(row["messages"])
        row_blocks = None
        if row.get("with_privileged"):
            blocks = blocks or teacher_blocks(tokenizer)
            row_blocks = blocks
        prompt = chat_ids(tokenizer, messages[:-1], row_blocks, add_generation_prompt=True)
        full = chat_ids(tokenizer, messages, row_blocks)
        if full[: len(prompt)] != prompt:
            raise ValueError("the chat template does not extend the prompt with the assistant message")
        if len(full) > max_length:
            raise ValueError(f"sample of {len(full)} tokens exceeds max_length={max_length}")
        # the loss covers the response up to its end-of-turn token (what generation produces), not the
        # template's trailing newline after it
        end = len(full)
        eos = tokenizer.eos_token_id
        while end > len(prompt) and full[end - 1] != eos:
            end -= 1
        end = end if end > len(prompt) else len(full)
        samples.append((full, [0] * len(prompt) + [1] * (end - len(prompt)) + [0] * (len(full) - end)))
    return samples


def pad_batch(samples: list[tuple[list[int], list[int]]], pad_token_id: int):
    """Right-padded ``(input_ids, attention_mask, loss_mask)`` tensors for :func:`tokenize_rows` samples
    (``loss_mask`` is boolean and False on padding)."""
    import torch

    width = max(len(ids) for ids, _ in samples)
    input_ids = torch.full((len(samples), width), pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    loss_mask = torch.zeros((len(samples), width), dtype=torch.bool)
    for row, (ids, mask) in enumerate(samples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        loss_mask[row, : len(ids)] = torch.tensor(mask, dtype=torch.bool)
    return input_ids, attention, loss_mask


def sft_train(model_dir: str, rows: list[dict], out_dir: str, epochs: int = 3, lr: float = 1e-3,
              batch_size: int = 16, max_length: int = 2048, seed: int = 0, log_every: int = 20) -> list[dict]:
    """Plain next-token SFT on the assistant tokens (AdamW, cosine decay); saves to ``out_dir``.

    Returns the logged ``{"step", "epoch", "loss"}`` records (mean over the last ``log_every`` steps).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32)
    model.train()
    samples = tokenize_rows(tokenizer, rows, max_length)
    steps_per_epoch = (len(samples) + batch_size - 1) // batch_size
    total = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(total // 20, 1)) * 0.5 * (1 + math.cos(math.pi * s / total)))
    rng = random.Random(seed)
    log, window, step = [], [], 0
    for epoch in range(epochs):
        order = list(range(len(samples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            input_ids, attention, loss_mask = pad_batch([samples[i] for i in order[start : start + batch_size]],
                                                        tokenizer.pad_token_id)
            labels = input_ids.masked_fill(~loss_mask, -100)
            loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            step += 1
            window.append(float(loss.detach()))
            if step % log_every == 0 or step == total:
                log.append({"step": step, "epoch": epoch, "loss": sum(window) / len(window)})
                logger.info("sft step %d/%d epoch %d loss %.4f", step, total, epoch, log[-1]["loss"])
                print(f"sft step {step}/{total} epoch {epoch} loss {log[-1]['loss']:.4f}", flush=True)
                window = []
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return log


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.alfworld.expert_sft",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="ALFWorld data root (json_2.1.1/<split>/...)")
    p.add_argument("out", help="output parquet")
    p.add_argument("--split", default="train")
    p.add_argument("--privileged", choices=("route", "skills", "none"), default="route")
    p.add_argument("--skills", default=None,
                   help="skill library: builtin:alfworld (shipped) or a folder (for --privileged skills)")
    p.add_argument("--fraction", type=float, default=0.5, help="share of games whose samples get the block")
    p.add_argument("--history-length", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import pandas as pd

    from verl_sdar.envs.alfworld.play import find_games, split_dir

    from verl_sdar.envs.alfworld.privileged import privileged_text

    games = find_games(split_dir(a.split, a.root))
    text_for = privileged_text(a.privileged, a.skills)
    rows = sft_rows(expert_turns(games, a.history_length), text_for, a.fraction, a.seed)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(a.out)
    with_privileged = sum(r["with_privileged"] for r in rows)
    print(json.dumps({"games": len(games), "samples": len(rows), "with_privileged": with_privileged}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
