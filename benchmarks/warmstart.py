"""Warm-start policy for the ALFWorld learning curves: a tiny model taught from expert trajectories.

Steps (each cached under ``--work``; delete a file to redo that step):

1. generate ALFWorld games (``verl_sdar.envs.alfworld.generator``): train / valid_seen / valid_unseen;
2. replay the planner expert on the train games into chat samples in the agent loop's prompt
   format (``verl_sdar.envs.alfworld.expert_sft``, cached as ``expert_turns.parquet``);
   ``--fraction`` of the games also get the privileged block (``--privileged route``: the game's
   expert route, or ``skills``: our ALFWorld skill library by task type;
   ``verl_sdar.envs.alfworld.privileged``);
3. build a tiny Qwen2-architecture model whose tokenizer is trained on those samples;
4. supervised fine-tuning on the assistant tokens (``expert_sft.sft_train``: plain PyTorch; verl's
   SFT trainer does not start on CPU, see ``WHY_NOT_VERL_SFT``);
5. play valid_seen and valid_unseen (greedy and sampled at ``--temperature``), without and with the
   privileged block in the policy's prompt (``verl_sdar.envs.alfworld.evaluate``), and write the
   table to ``--out``.

    python benchmarks/warmstart.py [--work .work/warmstart] [--out docs/warmstart.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHORT = {"pick_and_place_simple": "pick", "look_at_obj_in_light": "look", "pick_clean_then_place_in_recep": "clean",
         "pick_heat_then_place_in_recep": "heat", "pick_cool_then_place_in_recep": "cool",
         "pick_two_obj_and_place": "two"}


WHY_NOT_VERL_SFT = """\
**Why not verl's SFT trainer.** Tried on this machine with verl 0.9.1 (`torchrun --standalone
--nproc_per_node=1 -m verl.trainer.sft_trainer trainer.device=cpu engine.strategy=fsdp2
data.messages_key=messages ...` on these samples): it exits at start-up in
`verl.utils.distributed.initialize_global_process_group`, which builds the process-group backend
`"cpu:gloo,cpu:gloo"` on a CPU-only machine, and torch rejects it ("Duplicate device type cpu").
verl-sdar's CPU patch fixes the same default only on the Ray path that `main_ppo` uses
(`initialize_global_process_group_ray`, `verl_sdar/cpu/patches.py`); extending it to the torchrun
SFT path, and checking the rest of that trainer on CPU, is not done. The samples are written in
verl's multi-turn SFT format (`messages` column), so on a GPU machine the same parquet file trains
with verl's trainer unchanged; here `expert_sft.sft_train` (next-token loss on the assistant tokens,
AdamW, cosine schedule) is the stand-in.
"""


def command_line(a: argparse.Namespace) -> str:
    """The options of this run, spelled as command-line flags (defaults included)."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k not in ("out", "skills"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=".work/warmstart")
    p.add_argument("--out", default="docs/warmstart.md")
    p.add_argument("--n-train", type=int, default=360)
    p.add_argument("--n-eval", type=int, default=24)
    p.add_argument("--skills", default="builtin:alfworld")
    p.add_argument("--privileged", choices=("route", "skills"), default="route")
    p.add_argument("--fraction", type=float, default=0.5, help="share of train games whose samples get the block")
    p.add_argument("--hidden-size", type=int, default=192)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--temperature", type=float, default=1.0, help="sampled evaluation (besides greedy)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import pandas as pd

    from verl_sdar.envs.alfworld.evaluate import evaluate, expert_logprob, summary
    from verl_sdar.envs.alfworld.expert_sft import ExpertTurn, expert_turns, sft_rows, sft_train
    from verl_sdar.envs.alfworld.generator import generate
    from verl_sdar.envs.alfworld.play import find_games, split_dir
    from verl_sdar.envs.alfworld.privileged import privileged_text
    from verl_sdar.tiny_model import build_tiny_model

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    games = work / "games"
    if not (games / "manifest.jsonl").exists():
        t0 = time.perf_counter()
        generate(str(games), a.n_train, a.n_eval, a.n_eval, seed=a.seed, initial_state=False,
                 log=lambda m: print(m, flush=True))
        timings["generate_s"] = time.perf_counter() - t0
    turns_file = work / "expert_turns.parquet"
    if not turns_file.exists():
        t0 = time.perf_counter()
        turns = expert_turns(find_games(split_dir("train", games)))
        pd.DataFrame([vars(t) for t in turns]).to_parquet(turns_file)
        timings["expert_replay_s"] = time.perf_counter() - t0
    text_for = privileged_text(a.privileged, a.skills)
    sft_file = work / "sft_train.parquet"
    if not sft_file.exists():
        turns = [ExpertTurn(**t) for t in pd.read_parquet(turns_file).to_dict("records")]
        pd.DataFrame(sft_rows(turns, text_for, a.fraction, a.seed)).to_parquet(sft_file)
    rows = pd.read_parquet(sft_file).to_dict("records")
    for row in rows:
        row["messages"] = [dict(m) for m in row["messages"]]
    base = work / "base-model"
    if not (base / "config.json").exists():
        corpus = [m["content"] for row in rows for m in row["messages"]]
        build_tiny_model(base, seed=a.seed, vocab_size=a.vocab_size, hidden_size=a.hidden_size,
                         num_layers=a.num_layers, max_position_embeddings=4096, extra_corpus=corpus)
    model = work / "warmstart-model"
    sft_log_file = work / "sft_log.json"
    if not (model / "config.json").exists():
        t0 = time.perf_counter()
        log = sft_train(str(base), rows, str(model), epochs=a.epochs, lr=a.lr, batch_size=a.batch_size,
                        max_length=4096, seed=a.seed)
        timings["sft_s"] = time.perf_counter() - t0
        sft_log_file.write_text(json.dumps(log))
    sft_log = json.loads(sft_log_file.read_text())

    # cached evaluations and timings of earlier invocations (a step whose output exists is not redone)
    results_file = work / "results.json"
    saved = json.loads(results_file.read_text()) if results_file.exists() else {}
    results, scores = saved.get("results", {}), saved.get("expert_scores", {})
    timings = {**saved.get("timings", {}), **timings}

    def save() -> None:
        results_file.write_text(json.dumps({"results": results, "expert_scores": scores, "timings": timings,
                                            "args": vars(a)}, indent=1))

    for split in ("valid_seen", "valid_unseen"):
        split_games = find_games(split_dir(split, games))
        for temperature in (0.0, a.temperature):
            for privileged in (None, text_for):
                key = f"{split}/{'with' if privileged else 'without'}/T={temperature:g}"
                if key in results:
                    continue
                t0 = time.perf_counter()
                results[key] = summary(evaluate(str(model), split_games, max_steps=a.max_steps, privileged=privileged,
                                                temperature=temperature, seed=a.seed))
                results[key]["seconds"] = round(time.perf_counter() - t0, 1)
                print(key, json.dumps(results[key]), flush=True)
                save()
        if split not in scores:
            split_turns = expert_turns(split_games)
            scores[split] = {kind: expert_logprob(str(model), split_turns, privileged)
                             for kind, privileged in (("without", None), ("with", text_for))}
            print(split, json.dumps(scores[split]), flush=True)
            save()
    n_tokens = sum(len(str(m["content"])) for row in rows for m in row["messages"])
    lines = [
        "# Warm-start policy for ALFWorld (tiny model, expert SFT)\n",
        f"Generated by `python benchmarks/warmstart.py {command_line(a)}` "
        f"on {platform.platform()}, Python {platform.python_version()}, seed {a.seed}.\n",
        f"- games: {a.n_train} train, {a.n_eval} valid_seen, {a.n_eval} valid_unseen (generated, expert-validated)",
        f"- SFT samples: {len(rows)} expert turns ({sum(bool(r['with_privileged']) for r in rows)} with the privileged "
        f"block ({a.privileged}), games chosen with probability {a.fraction}), {n_tokens / 1e6:.2f} M characters",
        f"- model: Qwen2 architecture, hidden {a.hidden_size}, {a.num_layers} layers, tokenizer trained on the samples "
        f"(vocabulary {json.loads((model / 'config.json').read_text())['vocab_size']}, at most {a.vocab_size}); "
        f"SFT {a.epochs} epochs, lr {a.lr}, batch {a.batch_size}, "
        f"final loss {sft_log[-1]['loss']:.3f}",
        f"- evaluation: max {a.max_steps} steps, history 2, the agent loop's prompts, greedy (T=0) and sampled; "
        f"with = the teacher's privileged system block ({a.privileged}) in the policy's own prompt\n",
        "| split | privileged block in prompt | decoding | success | invalid turns | mean steps | by task type |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        split, privileged, decoding = key.split("/")
        by_type = ", ".join(f"{SHORT.get(t, t)} {v:.2f}" for t, v in r["by_type"].items())
        lines.append(f"| {split} | {privileged} | {decoding} | {r['success']:.3f} ({r['games']} games) | "
                     f"{r['invalid_turn_share']:.3f} | {r['mean_steps']:.1f} | {by_type} |")
    lines += ["", "Teacher-forced score of the planner expert's responses on the validation games (every expert turn): "
              "mean over turns of the response's summed log-prob, and of its probability (the chance of sampling "
              "exactly the expert's response at T=1). The with - without difference is the per-turn signal a "
              f"teacher holding the {a.privileged} text has over the student.\n",
              "| split | expert turns | log-prob without | log-prob with | gap | P(expert) without | P(expert) with |",
              "|---|---|---|---|---|---|---|"]
    for split, sc in scores.items():
        w, p_ = sc["without"], sc["with"]
        lines.append(f"| {split} | {w['turns']} | {w['mean_logprob']:.2f} | {p_['mean_logprob']:.2f} | "
                     f"{p_['mean_logprob'] - w['mean_logprob']:+.2f} | {w['mean_prob']:.3f} | {p_['mean_prob']:.3f} |")
    if timings:
        lines.append("\nTimings (this run): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    lines += ["", WHY_NOT_VERL_SFT]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
