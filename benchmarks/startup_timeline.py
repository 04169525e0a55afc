"""Where a ``main_ppo`` run's start-up goes: each Ray actor's creation, from a Ray session's logs.

    python benchmarks/startup_timeline.py [SESSION_DIR]   # default: /tmp/ray/session_latest

For every actor process of the session it prints when its creation task started and finished
(seconds after the raylet started; Ray's ``python-core-worker-*.log`` lines ``Creating actor`` and
``Actor creation task finished``), and how long the creation took. An actor's creation covers the
process's imports of its class's module (verl, torch, transformers) and its ``__init__``; on a
2-core machine several starting at once share the cores. ``docs/testing.md`` quotes its output.
Not a test.
"""

from __future__ import annotations

import argparse
import re
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
_NAME = re.compile(r"^:actor_name:(\S+)", re.M)


def _time(line: str) -> datetime | None:
    match = _STAMP.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f") if match else None


def timeline(logs: Path) -> tuple[datetime, list[tuple[str, float, float]]]:
    """(session start, [(actor class, created at, ready at)] in seconds after the start)."""
    start = None
    for raylet in sorted(logs.glob("raylet*.out")):
        for line in raylet.read_text(errors="replace").splitlines():
            start = _time(line)
            if start:
                break
        if start:
            break
    if start is None:
        raise SystemExit(f"{logs}: no raylet log with a timestamp")
    rows = []
    for core in sorted(logs.glob("python-core-worker-*.log")):
        worker, pid = core.stem.removeprefix("python-core-worker-").rsplit("_", 1)
        outs = list(logs.glob(f"worker-{worker}-*-{pid}.out"))
        name = _NAME.search(outs[0].read_text(errors="replace")) if outs else None
        created = ready = None
        for line in core.read_text(errors="replace").splitlines():
            if "Creating actor" in line and created is None:
                created = _time(line)
            elif "Actor creation task finished" in line and ready is None:
                ready = _time(line)
        if name and created:
            end = (ready - start).total_seconds() if ready else float("nan")
            rows.append((name.group(1), (created - start).total_seconds(), end))
    return start, sorted(rows, key=lambda r: r[1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("session", nargs="?", type=Path, default=Path("/tmp/ray/session_latest"))
    args = parser.parse_args(argv)
    start, rows = timeline(args.session / "logs")
    print(f"Ray session {args.session.resolve().name} (raylet started {start:%H:%M:%S})\n")
    print("| actor | created at (s) | ready at (s) | creation (s) |\n|---|---:|---:|---:|")
    for name, created, ready in rows:
        print(f"| {name} | {created:.1f} | {ready:.1f} | {ready - created:.1f} |")


if __name__ == "__main__":
    main()
