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
from experiment import KEEP  # noqa: E402

STEP = re.compile(r"\bstep:(\d+) - (.*)$")


def parse(log: str) -> list[dict]:
    """One row per step, the kept metrics only; the last print of a step wins."""
    by_step: dict[int, dict] = {}
    for line in log.splitlines():
        m = STEP.search(line)
        if not m:
            continue
        row = {}
        for item in m.group(2).split(" - "):
            key, _, value = item.partition(":")
            if key.startswith(KEEP):
                try:
                    row[key] = float(value)
                except ValueError:
                    continue
        by_step[int(m.group(1))] = row
    return [{"step": s, **by_step[s]} for s in sorted(by_step)]


if __name__ == "__main__":
    rows = parse(Path(sys.argv[1]).read_text())
    Path(sys.argv[2]).write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"{len(rows)} steps written to {sys.argv[2]}")
