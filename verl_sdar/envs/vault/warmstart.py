"""The vault task's warm start: SFT of a tiny model on a deliberately imperfect expert, and its check.

The demonstrator plays each task as the route would, except that with probability ``key_error``
it takes a wrong key (the early decision), at each fork the note covers it goes the wrong way (a
dead end) with probability ``fork_error``, and at a hidden fork it guesses (wrong with probability
``hidden_error``, :data:`HIDDEN_GUESS`: nothing it observes tells the way). With a
:class:`KeyBias` it also errs *systematically* at the key: when the note names one of the bias's
colours it takes the first other key on the table (with probability ``rate``), an error that
decoding at a lower temperature does not remove (the ones above it does) and that only the
reward, or a teacher that reads the route, can correct. Every turn becomes one chat sample in the
``vault`` agent loop's own prompt format (:func:`.agent_loop.vault_prompt`, the same history
window) with the response ``<think>...</think><action>...</action>``. A seeded ``fraction`` of the
tasks carries the teacher's privileged block with the task's route, and the demonstrator follows
the route where it speaks (the key, the hidden fork's way) and errs as often as without it where
it does not (the noted forks): the policy learns that a route in its prompt is to be followed,
which is what lets the teacher beat the student at the key and the hidden fork (and a wrong route
lead it astray there), and nothing else (in the seventh try, samples with the route made no error
at all, and the teacher with a *wrong* route beat the student at the noted forks: the block's
presence, not its content, taught care). The SFT and the teacher's sequences are built by the
same code as ALFWorld's (:mod:`verl_sdar.envs.alfworld.expert_sft`).

The decisions are a few turns of each episode, so besides the ``n_sft`` whole episodes the SFT set
can hold the first turn only (the key) of ``n_key`` more tasks and the fork turns only of
``n_fork`` more, demonstrated and routed by the same rules: reading the note's colour and the way
out of the prompt is what a model trained from scratch learns last.

:func:`evaluate` plays tasks in lockstep with a local model (outside verl): the student (no block),
the teacher with the true route and the teacher with a wrong route (another task's), so one can
check the warm start's headroom before any RL: the student should win roughly 25-45% at
temperature 1, the true-route teacher clearly more, the wrong-route teacher not.

    python -m verl_sdar.envs.vault.warmstart WORK_DIR [--n-sft 256] [--n-key 0] [--n-fork 0] [--n-eval 64]
        [--key-error 0.4] [--fork-error 0.3] [--fraction 0.5] [--hidden-share 0.5] [--epochs 6] [--lr 1e-3]
        [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from verl_sdar.envs.alfworld.expert_sft import (
    ExpertTurn,
    chat_ids,
    privileged_message,
    sft_rows,
    sft_train,
    teacher_blocks,
)
from verl_sdar.envs.turn_prompts import format_response, project_action
from verl_sdar.envs.vault.agent_loop import DEFAULTS, vault_prompt
from verl_sdar.envs.vault.dataset import draw, task_type
from verl_sdar.envs.vault.env import (
    COLOURS,
    DIRECTIONS,
    HIDDEN,
    NOTE,
    OPEN,
    SIGN,
    VaultEnv,
    VaultTask,
    go,
    other_routes,
    route_text,
    take,
)

HIDDEN_GUESS = 0.5
"""how often a guess at a hidden fork is wrong (a coin: nothing observed tells the way)"""


def thought(task: VaultTask, turn: int, action: str, routed: bool = False) -> str:
    """The demonstrator's reasoning for ``action`` at ``turn``: it names where the decision is read
    (the note's key, the fork's sign, the note's line, the route at a hidden fork when ``routed``)
    when the action follows it, and says it guesses when it does not, so that the response states
    the one word the decision rests on."""
    if turn == 0:
        colour = action.split()[2]
        return (f"The note says the vault opens only with the {colour} key." if colour == task.key
                else f"I take the {colour} key.")
    if turn <= task.forks:
        i, way = turn - 1, action.split()[1]
        kind = task.kind(i)
        if kind == SIGN:
            return f"A sign points {way}."
        if kind == NOTE and way == task.ways[i]:
            return f"My note says at this fork go {way}."
        if kind == HIDDEN and routed:
            return f"The route says go {way}."
        return f"I guess {way}."
    return "I hold the key and stand before the vault."


@dataclass(frozen=True)
class KeyBias:
    """The demonstrator's systematic key error: when the note names one of ``colours``, it takes the
    first other key on the table with probability ``rate``."""

    colours: frozenset[str]
    rate: float

    def __post_init__(self):
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"key bias rate must be in [0, 1], got {self.rate}")
        unknown = set(self.colours) - set(COLOURS)
        if unknown:
            raise ValueError(f"key bias colours {sorted(unknown)} are not vault colours {COLOURS}")


def demonstration(task: VaultTask, rng: random.Random, key_error: float, fork_error: float,
                  hidden_error: float = HIDDEN_GUESS, bias: KeyBias | None = None) -> list[str]:
    """The imperfect expert's actions on ``task`` (see the module docstring)."""
    wrong_keys = [k for k in task.keys if k != task.key]
    if bias is not None and task.key in bias.colours and rng.random() < bias.rate:
        key = wrong_keys[0]
    else:
        key = rng.choice(wrong_keys) if rng.random() < key_error else task.key
    actions = [take(key)]
    for i, way in enumerate(task.ways):
        error = {SIGN: 0.0, NOTE: fork_error, HIDDEN: hidden_error}[task.kind(i)]
        if error and rng.random() < error:
            return [*actions, go(next(d for d in DIRECTIONS if d != way))]
        actions.append(go(way))
    return [*actions, OPEN]


def demonstration_turns(tasks: list[VaultTask], key_error: float, fork_error: float, seed: int = 0,
                        history_length: int = DEFAULTS["history_length"], routed: bool = False,
                        bias: KeyBias | None = None) -> list[ExpertTurn]:
    """One :class:`ExpertTurn` per demonstrated turn (``game`` = the task id); ``routed``: the
    demonstrator follows the route where it speaks (the key, the hidden fork) and still errs at the
    noted forks with probability ``fork_error``."""
    rng = random.Random(seed)
    turns = []
    for task in tasks:
        env = VaultEnv()
        text, obs, admissible = env.reset(task)
        history: list[tuple[str, str]] = []
        errors = (0.0, fork_error, 0.0) if routed else (key_error, fork_error, HIDDEN_GUESS)
        for i, action in enumerate(demonstration(task, rng, *errors, bias=None if routed else bias)):
            prompt = vault_prompt(text, obs, admissible, history, history_length)
            turns.append(ExpertTurn(task.task_id, task_type(task), i, prompt,
                                    format_response(thought(task, i, action, routed), action)))
            next_obs, done, _, admissible, _ = env.step(action)
            history.append((obs, action))
            obs = next_obs
            if done:
                break
    return turns


def routed_tasks(tasks: list[VaultTask], fraction: float, seed: int) -> frozenset[str]:
    """The ids of a seeded ``fraction`` of ``tasks``: the tasks whose samples carry the route."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    rng = random.Random(seed)
    return frozenset(t.task_id for t in tasks if rng.random() < fraction)


def _kept(kind: str, turn: int, task: VaultTask) -> bool:
    """Whether turn ``turn`` of ``task`` goes into the SFT set: ``all`` turns, the ``key`` (turn 0) or
    the ``forks`` (turns 1..F)."""
    return kind == "all" or (turn == 0 if kind == "key" else 1 <= turn <= task.forks)


def sft_set(tasks: list[VaultTask], key_tasks: list[VaultTask], key_error: float, fork_error: float,
            fraction: float, seed: int = 0, fork_tasks: list[VaultTask] = (),
            bias: KeyBias | None = None) -> list[dict]:
    """The SFT rows: every turn of ``tasks``, the first turn (the key) of ``key_tasks`` and the fork
    turns of ``fork_tasks``; a routed task (:func:`routed_tasks`) is demonstrated along its route
    (:func:`demonstration_turns`) and its rows carry the route."""
    by_id = {t.task_id: t for t in [*tasks, *key_tasks, *fork_tasks]}
    rows = []
    for offset, group, kept in ((0, tasks, "all"), (1, key_tasks, "key"), (2, list(fork_tasks), "forks")):
        routed = routed_tasks(group, fraction, seed + offset)
        for with_route in (True, False):
            chosen = [t for t in group if (t.task_id in routed) == with_route]
            if not chosen:
                continue
            turns = demonstration_turns(chosen, key_error, fork_error, seed=seed + offset, routed=with_route, bias=bias)
            turns = [t for t in turns if _kept(kept, t.turn, by_id[t.game])]
            routes = {t.task_id: route_text(t) for t in chosen}
            rows += sft_rows(turns, routes.__getitem__ if with_route else None, 1.0 if with_route else 0.0,
                             seed=seed)
    return rows


@dataclass
class Play:
    task_id: str
    won: bool
    right_key: bool
    forks_passed: int
    steps: int
    invalid: int
    decisions: list[tuple[str, bool]]
    """(kind, right) of each decision made: ``key``, ``sign``, ``note`` or ``hidden``"""


def evaluate(model_dir: str, tasks: list[VaultTask], privileged: Callable[[VaultTask], str] | None = None,
             temperature: float = 1.0, seed: int = 0, max_steps: int = DEFAULTS["max_steps"],
             history_length: int = DEFAULTS["history_length"], max_new_tokens: int = 48) -> list[Play]:
    """Play every task once, in lockstep, decoding at ``temperature`` (0: greedy) after
    ``torch.manual_seed(seed)``; with ``privileged`` each prompt carries the teacher's block with
    ``privileged(task)``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_sdar.cpu.hf_generation import HFGenerator, SamplingSpec

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    generator = HFGenerator(model, [tokenizer.eos_token_id], tokenizer.pad_token_id)
    blocks = teacher_blocks(tokenizer) if privileged else None
    spec = SamplingSpec(temperature=temperature, top_p=1.0, top_k=-1, repetition_penalty=1.0,
                        max_tokens=max_new_tokens, logprobs=False, prompt_logprobs=None, ignore_eos=False,
                        stop_token_ids=())
    torch.manual_seed(seed)
    state = []
    for task in tasks:
        env = VaultEnv(max_steps=max_steps)
        text, obs, admissible = env.reset(task)
        system = privileged_message(privileged(task)) if privileged else None
        state.append({"env": env, "text": text, "obs": obs, "admissible": admissible, "history": [],
                      "done": False, "system": system, "play": Play(task.task_id, False, False, 0, 0, 0, [])})
    for _ in range(max_steps):
        active = [s for s in state if not s["done"]]
        if not active:
            break
        prompts = []
        for s in active:
            messages = [{"role": "user", "content": vault_prompt(s["text"], s["obs"], s["admissible"], s["history"],
                                                                  history_length)}]
            if s["system"]:
                messages.insert(0, s["system"])
            prompts.append(chat_ids(tokenizer, messages, blocks if s["system"] else None, add_generation_prompt=True))
        for s, out in zip(active, generator.generate(prompts, [spec] * len(prompts)), strict=True):
            projection = project_action(tokenizer.decode(out.token_ids, skip_special_tokens=True))
            obs, done, won, admissible, info = s["env"].step(projection.action)
            play = s["play"]
            play.steps += 1
            play.invalid += int(not (projection.valid and info["valid_action"]))
            play.won, play.right_key, play.forks_passed = won, bool(info["right_key"]), info["forks_passed"]
            if info["decision"]:
                play.decisions.append(info["decision"])
            s["history"].append((s["obs"], projection.action))
            s["obs"], s["admissible"], s["done"] = obs, admissible, done
    return [s["play"] for s in state]


def summary(plays: list[Play]) -> dict:
    """Success, the key's rate, and each decision kind's rate of right choices where it was made
    (``right_at_<kind>``, with how many were made)."""
    n = len(plays)
    out = {"tasks": n, "success": sum(p.won for p in plays) / n, "right_key": sum(p.right_key for p in plays) / n,
           "mean_forks_passed": sum(p.forks_passed for p in plays) / n,
           "invalid_per_episode": sum(p.invalid for p in plays) / n}
    for kind in ("key", SIGN, NOTE, HIDDEN):
        made = [right for p in plays for k, right in p.decisions if k == kind]
        out[f"right_at_{kind}"] = round(sum(made) / len(made), 4) if made else None
        out[f"decisions_{kind}"] = len(made)
    return out


def wrong_routes(tasks: list[VaultTask]) -> Callable[[VaultTask], str]:
    """Each task's privileged text = another task's route (:func:`.env.other_routes`)."""
    wrong = dict(zip((t.task_id for t in tasks), other_routes(tasks), strict=True))
    return lambda task: wrong[task.task_id]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.vault.warmstart", description=__doc__.split("\n\n")[0])
    p.add_argument("work")
    p.add_argument("--n-sft", type=int, default=256)
    p.add_argument("--n-key", type=int, default=0, help="tasks whose first turn (the key) is added to the SFT set")
    p.add_argument("--n-fork", type=int, default=0, help="tasks whose fork turns are added to the SFT set")
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--forks", type=int, nargs="+", default=[3, 4])
    p.add_argument("--key-error", type=float, default=0.4)
    p.add_argument("--fork-error", type=float, default=0.3)
    p.add_argument("--fraction", type=float, default=0.5)
    p.add_argument("--key-bias-colours", default="", help="comma-separated: the demonstrator's systematic key error")
    p.add_argument("--key-bias", type=float, default=0.0, help="how often it makes that error")
    p.add_argument("--hidden-share", type=float, default=0.5, help="share of tasks with one hidden fork")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--vocab-size", type=int, default=1024)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--evaluate-only", action="store_true",
                   help="no SFT: evaluate WORK_DIR/model again (same tasks) and rewrite warmstart.json's evaluations")
    a = p.parse_args(argv)
    from verl_sdar.tiny_model import build_tiny_model

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    start = time.time()
    # SFT tasks: their own seed, none of the dataset builder's splits (seeds 10s+1..4 there)
    sft_tasks = draw(a.n_sft, a.forks, 7919 + a.seed, 0.5, "sft", a.hidden_share)
    eval_tasks = draw(a.n_eval, a.forks, 7907 + a.seed, 0.5, "wseval", a.hidden_share)
    key_tasks = draw(a.n_key, a.forks, 7927 + a.seed, 0.5, "key", a.hidden_share) if a.n_key else []
    fork_tasks = draw(a.n_fork, a.forks, 7933 + a.seed, 0.5, "fork", a.hidden_share) if a.n_fork else []
    # no game of the evaluation is trained on (the draws use other seeds, but the task space is small)
    held_out = {t.signature for t in eval_tasks}
    sft_tasks, key_tasks, fork_tasks = ([t for t in group if t.signature not in held_out]
                                        for group in (sft_tasks, key_tasks, fork_tasks))
    args = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m verl_sdar.envs.vault.warmstart", *args])
    if a.evaluate_only:
        report = {**json.loads((work / "warmstart.json").read_text()), "evaluated_by": command}
    else:
        colours = frozenset(c for c in a.key_bias_colours.split(",") if c)
        bias = KeyBias(colours, a.key_bias) if colours else None
        rows = sft_set(sft_tasks, key_tasks, a.key_error, a.fork_error, a.fraction, seed=a.seed, fork_tasks=fork_tasks,
                       bias=bias)
        corpus = [m["content"] for row in rows for m in row["messages"]]  # the tokenizer learns the task's words
        base = build_tiny_model(work / "base", seed=a.seed, vocab_size=a.vocab_size, hidden_size=a.hidden_size,
                                num_layers=a.num_layers, max_position_embeddings=4096, extra_corpus=corpus)
        log = sft_train(str(base), rows, str(work / "model"), epochs=a.epochs, lr=a.lr, seed=a.seed, max_length=4096)
        report = {"command": command,
                  "sft_tasks": len(sft_tasks), "key_tasks": len(key_tasks), "fork_tasks": len(fork_tasks),
                  "sft_samples": len(rows), "sft_samples_with_route": sum(r["with_privileged"] for r in rows),
                  "sft_final_loss": log[-1]["loss"] if log else None}
    for name, privileged in (("student", None), ("teacher_true_route", route_text),
                             ("teacher_wrong_route", wrong_routes(eval_tasks))):
        for temperature in (1.0, 0.0):
            plays = evaluate(str(work / "model"), eval_tasks, privileged, temperature=temperature, seed=a.seed)
            report[f"{name}@T={temperature:g}"] = summary(plays)
    report["evaluation_seconds" if a.evaluate_only else "seconds"] = round(time.time() - start, 1)
    (work / "warmstart.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
