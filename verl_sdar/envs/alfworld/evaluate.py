"""Play ALFWorld games with a local causal LM outside verl (warm-start checks, quick evaluations).

Games are played in lockstep: each turn the prompts of all unfinished games (the ``alfworld`` agent
loop's prompts, same history window) are decoded as one batch by
:class:`verl_sdar.cpu.hf_generation.HFGenerator`, projected to commands and stepped. With
``privileged`` (a function game path -> text, :func:`.privileged.privileged_text`), each prompt gets
the privileged block the SDAR teacher would see (header + text, rendered and placed by the
teacher's :class:`verl_sdar.teacher.PrivilegedBlocks`: :func:`.expert_sft.chat_ids`) -- that is how
the policy does *with* the privileged context in its own prompt.

    python -m verl_sdar.envs.alfworld.evaluate MODEL_DIR GAMES_ROOT [--split valid_seen] [--max-steps 20]
        [--privileged none|route|skills] [--skills builtin:alfworld] [--temperature 0] [--seed 0] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from verl_sdar.envs.alfworld.expert_sft import DEFAULT_HEADER, chat_ids, privileged_message, teacher_blocks
from verl_sdar.envs.alfworld.prompts import build_prompt, project_action
from verl_sdar.envs.contract import WON


@dataclass
class GameResult:
    game: str
    task_type: str
    won: bool
    steps: int
    invalid: int
    actions: list[str] = field(default_factory=list)


def evaluate(model_dir: str, games: list[str], max_steps: int = 20, history_length: int = 2,
             privileged: Callable[[str], str] | None = None, temperature: float = 0.0, seed: int = 0,
             max_new_tokens: int = 48, header: str = DEFAULT_HEADER) -> list[GameResult]:
    """Play every game of ``games`` once (lockstep), decoding at ``temperature`` (0: greedy) with
    the global torch seed ``seed``."""
    return evaluate_plays(model_dir, games, [(temperature, seed)], max_steps, history_length, privileged,
                          max_new_tokens, header)[0]


def evaluate_plays(model_dir: str, games: list[str], plays: list[tuple[float, int]], max_steps: int = 20,
                   history_length: int = 2, privileged: Callable[[str], str] | None = None,
                   max_new_tokens: int = 48, header: str = DEFAULT_HEADER) -> list[list[GameResult]]:
    """Play every game once per ``(temperature, seed)`` of ``plays``; one result list per play.

    The model is loaded once, and each game's env once: later plays reset the already parsed
    game (loading a game costs about as much as a dozen steps), so k plays cost less than k calls
    of :func:`evaluate`. Each play is seeded on its own (``torch.manual_seed(seed)`` before it),
    so its results do not depend on the plays before it.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_sdar.cpu.hf_generation import HFGenerator
    from verl_sdar.envs.alfworld.play import AlfworldEnv

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    generator = HFGenerator(model, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    blocks = teacher_blocks(tokenizer) if privileged else None
    envs = [AlfworldEnv(max_steps=max_steps) for _ in games]
    try:
        return [_play(generator, tokenizer, envs, games, temperature, seed, max_steps, history_length, privileged,
                      blocks, max_new_tokens, header) for temperature, seed in plays]
    finally:
        for env in envs:
            env.close()


def _play(generator, tokenizer, envs: list, games: list[str], temperature: float, seed: int, max_steps: int,
          history_length: int, privileged: Callable[[str], str] | None, blocks, max_new_tokens: int,
          header: str) -> list[GameResult]:
    """One lockstep play of ``games`` on ``envs`` (one env per game, reset here)."""
    import torch

    from verl_sdar.cpu.hf_generation import SamplingSpec
    from verl_sdar.envs.alfworld.play import strip_welcome, task_type_of

    torch.manual_seed(seed)
    spec = SamplingSpec(temperature=temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                        max_tokens=max_new_tokens, logprobs=False, prompt_logprobs=None, ignore_eos=False,
                        stop_token_ids=())
    state = []
    for env, game in zip(envs, games, strict=True):
        obs, info = env.reset(game)
        system = privileged_message(privileged(game), header) if privileged else None
        state.append({"obs": strip_welcome(obs), "task": info.get("task", ""),
                      "admissible": info["admissible_commands"], "history": [], "done": False,
                      "result": GameResult(game, task_type_of(game), False, 0, 0), "system": system})
    for _ in range(max_steps):
        active = [i for i, s in enumerate(state) if not s["done"]]
        if not active:
            break
        prompts = []
        for i in active:
            s = state[i]
            messages = [{"role": "user", "content": build_prompt(s["task"], s["obs"], s["admissible"], s["history"],
                                                                  history_length)}]
            if s["system"]:
                messages.insert(0, s["system"])
            prompts.append(chat_ids(tokenizer, messages, blocks if s["system"] else None,
                                    add_generation_prompt=True))
        outputs = generator.generate([list(p) for p in prompts], [spec] * len(prompts))
        for i, out in zip(active, outputs, strict=True):
            s, r = state[i], state[i]["result"]
            projection = project_action(tokenizer.decode(out.token_ids, skip_special_tokens=True))
            obs, _, done, info = envs[i].step(projection.action)
            r.steps += 1
            r.invalid += int(not projection.valid)
            r.actions.append(projection.action)
            r.won = bool(info.get(WON, False))
            s["history"].append((s["obs"], projection.action))
            s["obs"], s["admissible"], s["done"] = obs, info["admissible_commands"], done or r.won
    return [s["result"] for s in state]


def expert_logprob(model_dir: str, turns: list, privileged: Callable[[str], str] | None = None,
                   header: str = DEFAULT_HEADER, batch_size: int = 8) -> dict:
    """Teacher-forced score of the expert's responses (:class:`.expert_sft.ExpertTurn`), with or
    without the privileged block in the prompt: ``mean_logprob`` = mean over turns of
    ``sum_t log pi(y_t | prompt, y_<t)`` over the response tokens, and ``mean_prob`` = mean of its
    ``exp`` (the chance of sampling the expert's exact response at T=1). The with/without difference
    is the per-turn signal a teacher with that context has over the student."""
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_sdar.envs.alfworld.expert_sft import pad_batch, sft_rows, tokenize_rows

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    samples = tokenize_rows(tokenizer, sft_rows(turns, privileged, 1.0 if privileged else 0.0, header=header), 8192)
    totals = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            ids, attention, mask = pad_batch(samples[start : start + batch_size], tokenizer.pad_token_id)
            logp = torch.log_softmax(model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
            token = logp.gather(-1, ids[:, 1:, None])[..., 0]
            totals += (token * mask[:, 1:]).sum(-1).tolist()
    return {"turns": len(totals), "mean_logprob": sum(totals) / max(len(totals), 1),
            "mean_prob": sum(math.exp(t) for t in totals) / max(len(totals), 1)}


def summary(results: list[GameResult]) -> dict:
    by_type: dict[str, list[bool]] = {}
    for r in results:
        by_type.setdefault(r.task_type, []).append(r.won)
    return {
        "games": len(results),
        "success": sum(r.won for r in results) / max(len(results), 1),
        "by_type": {t: sum(v) / len(v) for t, v in sorted(by_type.items())},
        "invalid_turn_share": sum(r.invalid for r in results) / max(sum(r.steps for r in results), 1),
        "mean_steps": sum(r.steps for r in results) / max(len(results), 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.alfworld.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("root")
    p.add_argument("--split", default="valid_seen")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--history-length", type=int, default=2)
    p.add_argument("--privileged", choices=("none", "route", "skills"), default="none",
                   help="privileged block in the policy's prompt")
    p.add_argument("--skills", default=None,
                   help="skill library: builtin:alfworld (shipped) or a folder (for --privileged skills)")
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0)
    a = p.parse_args(argv)
    from verl_sdar.envs.alfworld.play import find_games, split_dir
    from verl_sdar.envs.alfworld.privileged import privileged_text

    games = find_games(split_dir(a.split, a.root))[: a.limit or None]
    t0 = time.perf_counter()
    text_for = privileged_text(a.privileged, a.skills)
    results = evaluate(a.model_dir, games, a.max_steps, a.history_length, text_for, a.temperature, a.seed)
    print(json.dumps({**summary(results), "seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
