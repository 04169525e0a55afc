"""Where the test suite's time goes: a table by tier and by test file from a ``--durations=0`` log.

Run the suite with ``pytest -q --durations=0 tests > LOG`` (the README's ``make test`` plus
``PYTEST_ARGS=--durations=0``), then::

    python benchmarks/test_durations.py LOG [--label after] [--top 15]

prints a markdown section: the pytest summary line, seconds per tier (``unit``, ``envs``, ``e2e``;
the tiers of ``tests/conftest.py``, found by collecting ``-m <tier>``), seconds per test file
(setup + call + teardown of its tests: a module fixture's run is charged to the first test that
uses it) and the slowest tests. ``docs/testing.md`` holds the tables it printed, with the dates.
Not a test: it asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TIERS = ("unit", "envs", "e2e")
_LINE = re.compile(r"^(?P<s>\d+(?:\.\d+)?)s (?P<phase>setup|call|teardown)\s+(?P<node>\S.*)$")
_SUMMARY = re.compile(r"^=*\s*(?P<text>\d+ (passed|failed)[^=]* in [\d.]+s[^=]*?)\s*=*$")


def parse(log: str) -> tuple[dict[str, float], str]:
    """Seconds per test node (all phases), and pytest's summary line."""
    seconds: dict[str, float] = defaultdict(float)
    summary = ""
    for line in log.splitlines():
        match = _LINE.match(line.strip())
        if match:
            seconds[match["node"].strip()] += float(match["s"])
        found = _SUMMARY.match(line.strip())
        if found:
            summary = found["text"]
    return dict(seconds), summary


def tiers(repo: Path = REPO) -> dict[str, str]:
    """Test node id -> tier, by collecting each tier's marker in ``repo``."""
    out = {}
    env = dict(os.environ, PYTHONPATH=str(repo))
    for tier in TIERS:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-p", "no:cacheprovider",
                               "-m", tier, "tests"], cwd=repo, capture_output=True, text=True, check=False, env=env)
        for line in proc.stdout.splitlines():
            if line.startswith("tests/") and "::" in line:
                out[line.strip()] = tier
    return out


def _base(node: str) -> str:
    return node.split("[", 1)[0]


def table(seconds: dict[str, float], tier_of: dict[str, str], summary: str, label: str, top: int) -> str:
    """The markdown section: per tier, per (file, tier), the slowest tests. Test counts come from the
    collection; seconds from the durations (pytest hides those under 5 ms: they count as 0)."""
    count: dict[str, int] = defaultdict(int)
    file_count: dict[tuple[str, str], int] = defaultdict(int)
    for node, tier in tier_of.items():
        count[tier] += 1
        file_count[(node.split("::", 1)[0], tier)] += 1
    by_tier: dict[str, float] = defaultdict(float)
    by_file: dict[tuple[str, str], float] = defaultdict(float)
    for node, s in seconds.items():
        tier = tier_of.get(node) or tier_of.get(_base(node), "?")
        by_tier[tier] += s
        by_file[(node.split("::", 1)[0], tier)] += s
    total = sum(seconds.values())
    lines = [f"### {label}", "", f"pytest: `{summary}`" if summary else "pytest: (no summary line)", "",
             "| tier | tests | seconds | share |", "|---|---:|---:|---:|"]
    for tier in (*TIERS, "?"):
        if tier in by_tier or count.get(tier):
            s = by_tier.get(tier, 0.0)
            lines.append(f"| {tier} | {count.get(tier, 0)} | {s:.0f} | {s / total:.0%} |")
    lines.append(f"| all | {sum(count.values())} | {total:.0f} | 100% |")
    lines += ["", "| test file | tier | tests | seconds |", "|---|---|---:|---:|"]
    for (path, tier), s in sorted(by_file.items(), key=lambda kv: -kv[1]):
        if s >= 0.5:
            lines.append(f"| `{path}` | {tier} | {file_count.get((path, tier), 0)} | {s:.0f} |")
    lines.append("| (the rest, under 0.5 s a file and tier) | | | |")
    lines += ["", f"Slowest {top} tests (setup + call + teardown):", "", "| test | tier | seconds |", "|---|---|---:|"]
    for node, s in sorted(seconds.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"| `{node}` | {tier_of.get(node) or tier_of.get(_base(node), '?')} | {s:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("log", type=Path)
    parser.add_argument("--label", default="durations")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose tests ran (for the tiers)")
    args = parser.parse_args(argv)
    seconds, summary = parse(args.log.read_text(errors="replace"))
    if not seconds:
        raise SystemExit(f"{args.log}: no --durations=0 lines (run pytest with --durations=0)")
    print(table(seconds, tiers(args.repo), summary, args.label, args.top))


if __name__ == "__main__":
    main()
