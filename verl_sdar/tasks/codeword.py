"""Code-word task: a single-turn task where the privileged text decides success.

The student is asked for a secret code word it cannot know; the teacher's privileged text states
it. Reward is 1 when the response's first word is the code word, else 0. Rows carry the
privileged text in ``extra_info["privileged"]`` (the default ``sdar.privileged.key``), and
``extra_info["task_type"]`` names the word list the code word comes from.

    python -m verl_sdar.tasks.codeword OUT_DIR [--train 64] [--val 16] [--seed 0]

writes ``OUT_DIR/train.parquet`` and ``OUT_DIR/val.parquet`` in verl's RL dataset format.
Use ``reward.custom_reward_function.path=pkg://verl_sdar.tasks.codeword``.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from verl_sdar.envs.contract import dataset_row

DATA_SOURCE = "verl_sdar/codeword"
WORDS = {
    "color": ["red", "green", "blue", "yellow", "black", "white"],
    "animal": ["cat", "dog", "bird", "fish", "horse", "mouse"],
    "fruit": ["apple", "pear", "plum", "grape", "lemon", "melon"],
}
CORPUS = " ".join(w for ws in WORDS.values() for w in ws) + " secret code word the is a answer with reply one"


def make_rows(n: int, seed: int, split: str) -> list[dict]:
    rng = random.Random(f"{seed}-{split}")
    rows = []
    for index in range(n):
        task_type = rng.choice(sorted(WORDS))
        word = rng.choice(WORDS[task_type])
        options = ", ".join(WORDS[task_type])
        rows.append(
            dataset_row(
                data_source=DATA_SOURCE,
                prompt=f"Reply with the secret code word, one {task_type} out of: {options}.",
                ability="recall",
                ground_truth=word,
                index=index,
                split=split,
                task_type=task_type,
                privileged=f"The secret code word is {word}.",
            )
        )
    return rows


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """1.0 when the first word of the response is the code word (case-insensitive), else 0.0."""
    words = solution_str.strip().lower().replace(".", " ").split()
    return 1.0 if words and words[0] == str(ground_truth).lower() else 0.0


def build(out_dir: str | Path, n_train: int = 64, n_val: int = 16, seed: int = 0) -> Path:
    """Write train/val parquet files; returns the folder."""
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(make_rows(n_train, seed, "train")).to_parquet(out / "train.parquet")
    pd.DataFrame(make_rows(n_val, seed, "val")).to_parquet(out / "val.parquet")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--train", type=int, default=64)
    parser.add_argument("--val", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = build(args.out_dir, args.train, args.val, args.seed)
    print(f"wrote {out}/train.parquet ({args.train} rows) and {out}/val.parquet ({args.val} rows)")


if __name__ == "__main__":
    main()
