"""verl RL parquet files for the ``vault`` agent loop: one row per task.

    python -m verl_sdar.envs.vault.dataset OUT_DIR [--train 256] [--val 64] [--pilot 64] [--ood 64]
        [--forks 3 4] [--ood-forks 6] [--sign-share 0.5] [--hidden-share 0.5] [--seed 0]

writes, each from its own seed (no task in two splits):

* ``train.parquet``: training tasks (forks drawn from ``--forks``; a ``--hidden-share`` of them has
  one hidden fork, :mod:`.env`), privileged text = the task's route;
* ``train_noisy.parquet``: the same rows, except that a fixed half of them (odd positions) carry
  another training task's route (``extra_info.noisy = true``), the noisy-teacher condition;
* ``val.parquet``: held-out tasks, as train; ``pilot.parquet``: held-out tasks for the pilot only;
* ``ood.parquet``: held-out tasks with ``--ood-forks`` forks (longer than any training task).

Each row: ``agent_name = "vault"``, the task text as the user message (the agent loop builds the
real prompts), ``extra_info`` with ``vault_task`` (JSON), ``task_type`` (``<F>_forks``),
``privileged`` (the route), ``noisy`` and ``split``.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from verl_sdar.envs.contract import NOISY, VAULT_TASK, dataset_row
from verl_sdar.envs.vault.env import VaultTask, generate_tasks, other_routes, route_text, task_text

AGENT_NAME = "vault"
DATA_SOURCE = "vault"
SPLITS = ("train", "val", "pilot", "ood")


def task_type(task: VaultTask) -> str:
    return f"{task.forks}_forks"


def make_rows(tasks: list[VaultTask], split: str, routes: list[str] | None = None,
              noisy: list[bool] | None = None) -> list[dict]:
    """One row per task; ``routes`` (default: each task's own) is the privileged text."""
    routes = routes or [route_text(t) for t in tasks]
    noisy = noisy or [False] * len(tasks)
    return [
        dataset_row(
            data_source=DATA_SOURCE, agent_name=AGENT_NAME, prompt=task_text(task), ability="agent",
            ground_truth="", index=i, split=split,
            fields={VAULT_TASK: json.dumps(task.to_dict()), NOISY: flag},
            task_type=task_type(task), privileged=route,
        )
        for i, (task, route, flag) in enumerate(zip(tasks, routes, noisy, strict=True))
    ]


def draw(n: int, forks: list[int], seed: int, sign_share: float, prefix: str,
         hidden_share: float = 0.5) -> list[VaultTask]:
    """``n`` tasks, the fork counts spread evenly over ``forks`` (in a seeded random order)."""
    tasks = []
    for j, f in enumerate(forks):
        count = n // len(forks) + (1 if j < n % len(forks) else 0)
        if count:
            tasks += generate_tasks(count, f, seed=seed * 1000 + f, sign_share=sign_share, prefix=f"{prefix}{f}-",
                                    hidden_share=hidden_share)
    random.Random(seed).shuffle(tasks)
    return tasks


def noisy_routes(tasks: list[VaultTask]) -> tuple[list[str], list[bool]]:
    """Odd positions get the route of another odd-position task (:func:`.env.other_routes` among
    them), even positions their own; the flags mark the odd ones."""
    out, flags = [route_text(t) for t in tasks], [False] * len(tasks)
    odd = list(range(1, len(tasks), 2))
    for i, route in zip(odd, other_routes([tasks[i] for i in odd]), strict=True):
        out[i], flags[i] = route, True
    return out, flags


def build(out_dir: str | Path, n_train: int = 256, n_val: int = 64, n_pilot: int = 64, n_ood: int = 64,
          forks: tuple[int, ...] = (3, 4), ood_forks: int = 6, sign_share: float = 0.5, seed: int = 0,
          hidden_share: float = 0.5) -> dict:
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {
        "train": draw(n_train, list(forks), seed * 10 + 1, sign_share, "train", hidden_share),
        "val": draw(n_val, list(forks), seed * 10 + 2, sign_share, "val", hidden_share),
        "pilot": draw(n_pilot, list(forks), seed * 10 + 3, sign_share, "pilot", hidden_share),
        "ood": draw(n_ood, [ood_forks], seed * 10 + 4, sign_share, "ood", hidden_share),
    }
    seen = {}
    for name, tasks in splits.items():  # no task in two splits
        for t in tasks:
            if t.signature in seen and seen[t.signature] != name:
                raise ValueError(f"vault task drawn for both {seen[t.signature]} and {name}; use another seed")
            seen[t.signature] = name
    counts = {}
    for name, tasks in splits.items():
        pd.DataFrame(make_rows(tasks, name)).to_parquet(out / f"{name}.parquet")
        counts[name] = len(tasks)
    routes, flags = noisy_routes(splits["train"])
    pd.DataFrame(make_rows(splits["train"], "train", routes, flags)).to_parquet(out / "train_noisy.parquet")
    counts["train_noisy_rows"] = sum(flags)
    return counts


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.vault.dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--train", type=int, default=256)
    p.add_argument("--val", type=int, default=64)
    p.add_argument("--pilot", type=int, default=64)
    p.add_argument("--ood", type=int, default=64)
    p.add_argument("--forks", type=int, nargs="+", default=[3, 4])
    p.add_argument("--ood-forks", type=int, default=6)
    p.add_argument("--sign-share", type=float, default=0.5)
    p.add_argument("--hidden-share", type=float, default=0.5, help="share of tasks with one hidden fork")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    counts = build(a.out_dir, a.train, a.val, a.pilot, a.ood, tuple(a.forks), a.ood_forks, a.sign_share, a.seed,
                   a.hidden_share)
    print(json.dumps(counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
