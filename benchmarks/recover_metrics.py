"""Rebuild a run's ``train.jsonl`` from its ``train.log`` (verl's console logger prints every metric
of a step as ``step:N - key:value - ...``), for a run whose metrics file a later start truncated.

Used once, for ``docs/results/experiment/grpo_seed3``: its 20 steps ran in one start; the next
session's resume found the finished checkpoint, and verl's file logger reopened (emptied) the
metrics file before exiting. The runner now keeps each start's metrics file (``train`` in
``benchmarks/experiment.py``). Usage: ``python benchmarks/recover_metrics.py <train.log> <train.jsonl>``.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from experiment import kept_rows  # noqa: E402

STEP = re.compile(r"\bstep:(\d+) - (.*)$")


def numbers(items: str) -> dict[str, float]:
    """``key:value - key:value ...`` to ``{key: float}``, skipping values that are not numbers."""
    out = {}
    for item in items.split(" - "):
        key, _, value = item.partition(":")
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def parse(log: str) -> list[dict]:
    """One row per step, the kept metrics only (``kept_rows``, as the runner keeps them)."""
    return kept_rows((int(m.group(1)), numbers(m.group(2))) for line in log.splitlines() if (m := STEP.search(line)))


if __name__ == "__main__":
    rows = parse(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} steps written to {sys.argv[2]}")
