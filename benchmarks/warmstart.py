"""Warm-start policy for the ALFWorld learning curves: a tiny model taught from expert trajectories.

Steps (each cached under ``--work``; delete a file to redo that step):

1. generate ALFWorld games (``verl_sdar.envs.alfworld.generator``): train / valid_seen / valid_unseen;
2. replay the planner expert on the train games into chat samples in the agent loop's prompt
   format (``verl_sdar.envs.alfworld.expert_sft``); ``--skill-fraction`` of the games also get
   the privileged skills block (our ALFWorld skill library, by task type);
3. build a tiny Qwen2-architecture model whose tokenizer is trained on those samples;
4. supervised fine-tuning on the assistant tokens (``expert_sft.sft_train``: plain PyTorch, see
   docs/warmstart.md for why not verl's SFT trainer);
5. play valid_seen and valid_unseen greedily, without and with skills in the policy's prompt
   (``verl_sdar.envs.alfworld.evaluate``), and write the table to ``--out``.

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


def command_line(a: argparse.Namespace) -> str:
    """The options of this run, spelled as command-line flags (defaults included)."""
    return " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k not in ("work", "out", "skills"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default=".work/warmstart")
    p.add_argument("--out", default="docs/warmstart.md")
    p.add_argument("--n-train", type=int, default=120)
    p.add_argument("--n-eval", type=int, default=24)
    p.add_argument("--skills", default=str(REPO / "envs" / "alfworld" / "skills"))
    p.add_argument("--skill-fraction", type=float, default=0.5)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=4)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    import pandas as pd

    from verl_sdar.envs.alfworld.evaluate import evaluate, summary
    from verl_sdar.envs.alfworld.expert_sft import expert_turns, sft_rows, sft_train
    from verl_sdar.envs.alfworld.generator import generate
    from verl_sdar.envs.alfworld.play import find_games, split_dir
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
    sft_file = work / "sft_train.parquet"
    if not sft_file.exists():
        t0 = time.perf_counter()
        turns = expert_turns(find_games(split_dir("train", games)))
        pd.DataFrame(sft_rows(turns, a.skills, a.skill_fraction, a.seed)).to_parquet(sft_file)
        timings["expert_replay_s"] = time.perf_counter() - t0
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

    results = {}
    for split in ("valid_seen", "valid_unseen"):
        split_games = find_games(split_dir(split, games))
        for skills in (None, a.skills):
            key = f"{split}/{'with' if skills else 'without'}_skills"
            t0 = time.perf_counter()
            results[key] = summary(evaluate(str(model), split_games, max_steps=a.max_steps, skills=skills, seed=a.seed))
            results[key]["seconds"] = round(time.perf_counter() - t0, 1)
            print(key, json.dumps(results[key]), flush=True)
    (work / "results.json").write_text(json.dumps({"results": results, "timings": timings, "args": vars(a)}, indent=1))

    n_tokens = sum(len(str(m["content"])) for row in rows for m in row["messages"])
    lines = [
        "# Warm-start policy for ALFWorld (tiny model, expert SFT)\n",
        f"Generated by `python benchmarks/warmstart.py {command_line(a)}` "
        f"on {platform.platform()}, Python {platform.python_version()}, seed {a.seed}.\n",
        f"- games: {a.n_train} train, {a.n_eval} valid_seen, {a.n_eval} valid_unseen (generated, expert-validated)",
        f"- SFT samples: {len(rows)} expert turns ({sum(bool(r['with_skills']) for r in rows)} with the skills block, "
        f"games chosen with probability {a.skill_fraction}), {n_tokens / 1e6:.2f} M characters",
        f"- model: Qwen2 architecture, hidden {a.hidden_size}, {a.num_layers} layers, tokenizer vocabulary "
        f"{a.vocab_size} trained on the samples; SFT {a.epochs} epochs, lr {a.lr}, batch {a.batch_size}, "
        f"final loss {sft_log[-1]['loss']:.3f}",
        f"- evaluation: greedy, max {a.max_steps} steps, history 2, the agent loop's prompts; with skills = the "
        "teacher's privileged system block in the policy's own prompt\n",
        "| split | skills in prompt | success | invalid turns | mean steps | by task type |",
        "|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        split, skills = key.split("/")
        by_type = ", ".join(f"{SHORT.get(t, t)} {v:.2f}" for t, v in r["by_type"].items())
        lines.append(f"| {split} | {skills.split('_')[0]} | {r['success']:.3f} ({r['games']} games) | "
                     f"{r['invalid_turn_share']:.3f} | {r['mean_steps']:.1f} | {by_type} |")
    if timings:
        lines.append("\nTimings (this run): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()))
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
