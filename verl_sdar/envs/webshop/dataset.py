"""verl RL parquet files for the ``webshop`` agent loop: one row per goal.

    python -m verl_sdar.envs.webshop.dataset CATALOGUE_DIR OUT_DIR [--limit-train N] [--limit-val N]

writes ``OUT_DIR/train.parquet`` (``goals_train.jsonl``) and ``OUT_DIR/val.parquet``
(``goals_test.jsonl``). Each row: ``agent_name = "webshop"``, the instruction as the user
message (the agent loop builds the real prompts), ``extra_info`` with ``goal`` (JSON),
``task_type`` (the product category: the skill key), ``split`` and ``privileged`` ("").
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from verl_sdar.envs.contract import GOAL, dataset_row

AGENT_NAME = "webshop"
DATA_SOURCE = "webshop"


def make_rows(goals: list[dict], split: str) -> list[dict]:
    return [
        dataset_row(
            data_source=DATA_SOURCE,
            agent_name=AGENT_NAME,
            prompt=goal["instruction_text"],
            ability="agent",
            ground_truth="",
            index=i,
            split=split,
            fields={GOAL: json.dumps(goal)},
            task_type=goal["category"],
        )
        for i, goal in enumerate(goals)
    ]


def build(catalogue_dir: str | Path, out_dir: str | Path, limit_train: int = 0, limit_val: int = 0) -> dict[str, int]:
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    for name, source, limit in (("train", "goals_train", limit_train), ("val", "goals_test", limit_val)):
        with open(Path(catalogue_dir) / f"{source}.jsonl") as f:
            goals = [json.loads(line) for line in f if line.strip()][: limit or None]
        pd.DataFrame(make_rows(goals, name)).to_parquet(out / f"{name}.parquet")
        counts[name] = len(goals)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.webshop.dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("catalogue_dir")
    p.add_argument("out_dir")
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-val", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(build(a.catalogue_dir, a.out_dir, a.limit_train, a.limit_val)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
