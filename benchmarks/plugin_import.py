"""What verl-sdar's ``verl.plugins`` entry point costs a process: ``import verl`` with and without it.

``import verl`` loads every ``verl.plugins`` entry point (``verl_sdar.plugin``) in the driver, in
every Ray worker and in any process that imports verl. verl's own switch
``VERL_USE_EXTERNAL_PLUGINS=none`` turns the discovery off: that is the "plugin disabled" baseline.
Each scenario runs in a fresh ``python -c`` process (repeated, scenarios interleaved) and reports
the median of

* ``import (s)``: wall time of the import statements inside the process (interpreter start-up
  excluded); ``import CPU (s)``: the CPU time the process spent on them (``time.process_time``,
  less sensitive to other jobs on a shared machine than wall time); ``process (s)``: wall time of
  the whole subprocess, start-up and exit included;
* ``modules``: ``len(sys.modules)`` after the imports;
* which of verl-sdar's heavy dependencies the process ended up with.

Scenarios:

* ``import verl`` with the plugin disabled / enabled: what a process that never trains pays;
* ``import verl`` + ``get_trainer_cls(<mode>)``: what the process that builds the trainer pays
  (``python -m verl.trainer.main_ppo``'s TaskRunner does exactly this): verl's own ``sync``
  trainer with the plugin disabled, the SDAR trainer with it enabled.

The subprocesses run in a temporary folder, so ``PYTHONPATH`` decides which ``verl_sdar`` they
import (the installed one by default); ``--compare DIR`` measures the package in ``DIR`` as well,
interleaved with the installed one (fair on a shared machine), e.g. the code before a change:

    git worktree add /tmp/verl_sdar_before <commit>
    python benchmarks/plugin_import.py [--repeat 5] [--compare /tmp/verl_sdar_before] [--json results.json]

The table names the ``verl_sdar`` each row measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

# Modules whose presence tells what a process paid for (reported per scenario, not timed).
HEAVY = {
    "verl_sdar.trainer": "verl_sdar.trainer",
    "trainer_sync": "verl.trainer.ppo.v1.trainer_sync",
    "fsdp_engine": "verl.workers.engine.fsdp.transformer_impl",
    "rollout_replica": "verl.workers.rollout.replica",
}

PROBE = """
import json, os, sys, time
t, c = time.perf_counter(), time.process_time()
import verl
{extra}
elapsed, cpu = time.perf_counter() - t, time.process_time() - c
import verl_sdar
heavy = {heavy!r}
print(json.dumps({{"import_s": elapsed, "import_cpu_s": cpu, "modules": len(sys.modules),
                   "loaded": [k for k, m in heavy.items() if m in sys.modules],
                   "plugin": "verl_sdar.plugin" in sys.modules, "verl_sdar": os.path.dirname(verl_sdar.__file__)}}))
"""

GET_TRAINER = "from verl.trainer.ppo.v1 import get_trainer_cls\nget_trainer_cls({mode!r})"

SCENARIOS = [
    # (label, plugin enabled, extra code)
    ("import verl, plugin disabled", False, ""),
    ("import verl, plugin enabled", True, ""),
    ("import verl + get_trainer_cls('sync'), plugin disabled", False, GET_TRAINER.format(mode="sync")),
    ("import verl + get_trainer_cls('sdar'), plugin enabled", True, GET_TRAINER.format(mode="sdar")),
]


def run_once(enabled: bool, extra: str, cwd: str, pythonpath: str | None = None) -> dict:
    env = dict(os.environ)
    env.pop("VERL_USE_EXTERNAL_PLUGINS", None)
    if not enabled:
        env["VERL_USE_EXTERNAL_PLUGINS"] = "none"  # verl's own switch: no entry point is loaded
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    code = PROBE.format(extra=extra, heavy=HEAVY)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=cwd,
                         env=env)
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise RuntimeError(f"probe failed ({'enabled' if enabled else 'disabled'}, {extra!r}):\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["process_s"] = wall
    if result["plugin"] != enabled:
        raise RuntimeError(f"verl_sdar.plugin loaded={result['plugin']}, expected {enabled}")
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="fresh processes per scenario (median reported)")
    parser.add_argument("--compare", metavar="DIR",
                        help="also measure the verl_sdar package found in DIR (prepended to PYTHONPATH; e.g. a "
                             "`git worktree` of another commit), interleaved with this one")
    parser.add_argument("--json", help="also write the raw per-run results here")
    args = parser.parse_args(argv)

    variants: list[str | None] = [None] + ([os.path.abspath(args.compare)] if args.compare else [])
    rows = [(label, enabled, extra, v) for label, enabled, extra in SCENARIOS for v in variants
            if enabled or v is None]  # with the plugin disabled no verl_sdar is loaded: one row
    runs: dict[tuple, list[dict]] = {row: [] for row in rows}
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as cwd:
        for _ in range(args.repeat):  # interleaved, so drift on a shared machine hits every row alike
            for row in rows:
                label, enabled, extra, pythonpath = row
                runs[row].append(run_once(enabled, extra, cwd, pythonpath))
    load_after = os.getloadavg()[0]

    print(f"python {platform.python_version()}; {os.cpu_count()} CPU cores; 1-min load average "
          f"{load_before:.1f} before / {load_after:.1f} after; median of {args.repeat} fresh processes per row\n")
    print("| scenario | verl_sdar | import (s) | import CPU (s) | process (s) | modules | heavy modules loaded |")
    print("|---|---|---:|---:|---:|---:|---|")
    for (label, enabled, _, _), results in runs.items():
        loaded = sorted({name for r in results for name in r["loaded"]})
        print(f"| {label} | {results[0]['verl_sdar'] if enabled else '-'} "
              f"| {statistics.median(r['import_s'] for r in results):.2f} "
              f"| {statistics.median(r['import_cpu_s'] for r in results):.2f} "
              f"| {statistics.median(r['process_s'] for r in results):.2f} "
              f"| {statistics.median(r['modules'] for r in results):.0f} | {', '.join(loaded) or '-'} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"load_average": [load_before, load_after],
                       "runs": [{"scenario": label, "pythonpath": v, "results": results}
                                for (label, _, _, v), results in runs.items()]}, f, indent=1)


if __name__ == "__main__":
    main()
