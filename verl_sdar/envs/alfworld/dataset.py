"""verl RL parquet files for the ``alfworld`` agent loop: one row per ALFWorld game.

The prompt is a placeholder user message (the agent loop builds the real prompts from the env);
it only has to pass verl's dataset checks and fix the batch size. Each row carries
``agent_name = "alfworld"`` and ``extra_info`` with ``game_path`` (absolute), ``task_type``,
``split`` and ``privileged`` (``""``, or the game's expert route with ``--privileged route`` -- the
text ``sdar.privileged.source=column`` gives the teacher; see :mod:`.privileged`).

    python -m verl_sdar.envs.alfworld.dataset ROOT OUT_DIR [--train-split train]
        [--val-split valid_seen] [--limit-train N] [--limit-val N] [--repeat-train K] [--privileged route]

``ROOT`` is an ALFWorld data root holding ``json_2.1.1/<split>/...`` (e.g.
``envs/alfworld/data_small`` or ``$ALFWORLD_DATA``). Writes ``OUT_DIR/train.parquet`` and
``OUT_DIR/val.parquet``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

from verl_sdar.envs.alfworld.play import task_type_of  # defined next to find_games; still importable here
from verl_sdar.envs.contract import GAME_PATH, dataset_row

DATA_SOURCE = "alfworld"
AGENT_NAME = "alfworld"
PLACEHOLDER = "Play the ALFWorld game given in extra_info; the agent loop builds the prompts."


def make_rows(games: list[str], split: str, repeat: int = 1,
              privileged: Callable[[str], str] | None = None) -> list[dict]:
    """One row per game (``repeat`` times); ``privileged`` maps a game path to ``extra_info["privileged"]``."""
    rows = []
    for _ in range(repeat):
        for game in games:
            game = os.path.abspath(game)
            rows.append(
                dataset_row(
                    data_source=DATA_SOURCE,
                    agent_name=AGENT_NAME,
                    prompt=PLACEHOLDER,
                    ability="agent",
                    ground_truth="",
                    index=len(rows),
                    split=split,
                    fields={GAME_PATH: game},
                    task_type=task_type_of(game),
                    privileged=privileged(game) if privileged else "",
                )
            )
    return rows


def build(root: str | Path, out_dir: str | Path, train_split: str = "train", val_split: str = "valid_seen",
          limit_train: int = 0, limit_val: int = 0, repeat_train: int = 1,
          privileged: Callable[[str], str] | None = None) -> dict[str, int]:
    """Write ``train.parquet`` / ``val.parquet``; returns the row counts."""
    import pandas as pd

    from verl_sdar.envs.alfworld.play import find_games, split_dir

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts = {}
    splits = (("train", train_split, limit_train, repeat_train), ("val", val_split, limit_val, 1))
    for name, split, limit, repeat in splits:
        games = find_games(split_dir(split, root))
        if limit:
            games = games[:limit]
        if not games:
            raise SystemExit(f"no solvable games under {split_dir(split, root)}")
        rows = make_rows(games, split, repeat, privileged)
        pd.DataFrame(rows).to_parquet(out / f"{name}.parquet")
        counts[name] = len(rows)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.alfworld.dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("root", help="ALFWorld data root (holds json_2.1.1/)")
    p.add_argument("out_dir")
    p.add_argument("--train-split", default="train")
    p.add_argument("--val-split", default="valid_seen")
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-val", type=int, default=0)
    p.add_argument("--repeat-train", type=int, default=1, help="repeat the train games K times")
    p.add_argument("--privileged", choices=("none", "route"), default="none",
                   help="extra_info['privileged'] of each row (the teacher's text with sdar.privileged.source=column)")
    a = p.parse_args(argv)
    from verl_sdar.envs.alfworld.privileged import privileged_text

    counts = build(a.root, a.out_dir, a.train_split, a.val_split, a.limit_train, a.limit_val, a.repeat_train,
                   privileged_text(a.privileged))
    print(f"wrote {a.out_dir}/train.parquet ({counts['train']} rows) and "
          f"{a.out_dir}/val.parquet ({counts['val']} rows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
