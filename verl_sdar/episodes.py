"""Episode-level outcomes of multi-turn batches (plain Python, no verl imports).

verl's V1 agent loops store each turn of an episode as its own row, keyed ``{uid}_{session}_{index}``
(``uid``: the prompt, i.e. the GRPO group; ``session``: one rollout of it; ``index``: the turn).
Episode metrics must count each episode once, not once per turn row: an agent that fails in 50
turns would otherwise weigh 50 times as much as one that wins in 5.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence


def session_of(key: str) -> str:
    """The episode a row key belongs to: ``uid_session`` of ``uid_session_index`` (else the key)."""
    parts = str(key).rsplit("_", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}_{parts[1]}"
    return str(key)


def first_row_per_episode(keys: Sequence[str]) -> list[int]:
    """Positions of one row per episode (the first seen), in batch order."""
    seen: set[str] = set()
    positions = []
    for position, key in enumerate(keys):
        session = session_of(key)
        if session not in seen:
            seen.add(session)
            positions.append(position)
    return positions


def rate_by_group(groups: Sequence[str | None], values: Sequence[float]) -> dict[str, tuple[float, int]]:
    """Mean value and count per group (``None`` groups are counted under ``"unknown"``).

    ``rate_by_group(["a", "b", "a"], [1, 0, 0]) == {"a": (0.5, 2), "b": (0.0, 1)}``
    """
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} groups for {len(values)} values")
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for group, value in zip(groups, values):
        name = "unknown" if group is None else str(group)
        sums[name] += float(value)
        counts[name] += 1
    return {name: (sums[name] / counts[name], counts[name]) for name in sorted(sums)}
