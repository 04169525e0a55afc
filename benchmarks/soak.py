"""Soak run: the CPU demo (``recipes/cpu/codeword_sdar.yaml``) for many steps, sampling memory.

Every ``--interval`` seconds, the resident memory (RSS) of the driver and of every process it
started (Ray's GCS and raylet, the actor/rollout/ref workers, the agent-loop workers, the
TransferQueue's controller and storage actors), each process named by its first title and its
pid; every step, the TransferQueue's stored row count and the rows left in the teacher's partition
(``sdar/tq_stored_rows``, ``sdar/teacher_partition_rows``, logged by the trainer). Writes the
samples to ``--out`` (JSON) and prints a table: each process's RSS after warm-up and at the end,
with a least-squares slope over the steps after warm-up (MB per 100 steps).

    python benchmarks/soak.py --steps 100 [--out docs/reliability_soak.json]

The steps' wall time depends on the machine; the memory figures are what this run measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent


LABELS: dict[int, str] = {}  # pid -> the first name seen for it (Ray renames a worker while it runs a task)


def label_of(proc: psutil.Process, driver_pid: int) -> str:
    """``<name> <pid>``: Ray's worker title without the running method (``ray::WorkerDict``), a Ray
    daemon's program name, or ``driver``."""
    if proc.pid in LABELS:
        return LABELS[proc.pid]
    try:
        cmd = proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return f"? {proc.pid}"
    title = cmd[0] if cmd else proc.name()
    if proc.pid == driver_pid:
        name = "driver"
    elif title.startswith("ray::"):
        name = title.split()[0].split(".")[0]
        if name == "ray::IDLE":  # a pooled worker before its first task: name it later
            return f"ray::IDLE {proc.pid}"
    else:
        name = next((k for k in ("gcs_server", "raylet", "dashboard", "log_monitor", "runtime_env_agent", "monitor.py")
                     if any(k in part for part in cmd[:3])), os.path.basename(title))
    LABELS[proc.pid] = f"{name} {proc.pid}"
    return LABELS[proc.pid]


def sample(driver: psutil.Process) -> dict[str, float]:
    """RSS in MB of the driver and each process it started (keyed by :func:`label_of`)."""
    out: dict[str, float] = {}
    for proc in [driver, *driver.children(recursive=True)]:
        try:
            out[label_of(proc, driver.pid)] = proc.memory_info().rss / 2**20
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--warmup", type=int, default=10, help="steps excluded from the growth figures")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--work", default=None, help="working folder (default: a temporary one)")
    p.add_argument("--out", default="docs/reliability_soak.json")
    a = p.parse_args(argv)

    work = Path(a.work or tempfile.mkdtemp(prefix="soak-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "verl_sdar.tiny_model", str(work / "tiny-model")], check=True)
    subprocess.run([sys.executable, "-m", "verl_sdar.tasks.codeword", str(work / "codeword")], check=True)
    metrics_file = work / "metrics.jsonl"
    metrics_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'cpu'}",
           "--config-name=codeword_sdar", f"trainer.total_training_steps={a.steps}", "trainer.save_freq=-1",
           "trainer.test_freq=-1", "trainer.val_before_train=false", "trainer.logger=[console,file]",
           f"hydra.run.dir={work / 'hydra'}"]
    env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(metrics_file),
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled")
    print(" ".join(cmd), flush=True)
    samples: list[dict] = []
    t0 = time.perf_counter()
    with open(work / "run.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        driver = psutil.Process(proc.pid)
        stop = threading.Event()

        def sampler() -> None:
            while not stop.is_set() and proc.poll() is None:
                steps = len(metrics_file.read_text().splitlines()) if metrics_file.exists() else 0
                samples.append({"t": round(time.perf_counter() - t0, 1), "steps_done": steps, "rss_mb": sample(driver)})
                stop.wait(a.interval)

        thread = threading.Thread(target=sampler, daemon=True)
        thread.start()
        rc = proc.wait()
        stop.set()
        thread.join()
    seconds = time.perf_counter() - t0
    if rc != 0:
        raise SystemExit(f"soak run failed (rc {rc}); see {work / 'run.log'}")
    records = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    per_step = [{"step": r["step"], **{k: r["data"][k] for k in ("sdar/tq_stored_rows", "sdar/teacher_partition_rows",
                                                                "timing_s/step") if k in r["data"]}}
                for r in records]

    groups = sorted({g for s in samples for g in s["rss_mb"]})
    rows = []
    for g in groups:
        pts = [(s["steps_done"], s["rss_mb"][g]) for s in samples if g in s["rss_mb"] and s["steps_done"] >= a.warmup]
        if not pts:
            continue
        xs, ys = [x for x, _ in pts], [y for _, y in pts]
        rows.append({"group": g, "after_warmup_mb": round(ys[0], 1), "end_mb": round(ys[-1], 1),
                     "max_mb": round(max(ys), 1), "slope_mb_per_100_steps": round(100 * slope(xs, ys), 2)})
    stored = [r.get("sdar/tq_stored_rows") for r in per_step]
    teacher_rows = [r.get("sdar/teacher_partition_rows") for r in per_step]
    result = {"command": " ".join(cmd), "steps": a.steps, "warmup": a.warmup, "seconds": round(seconds, 1),
              "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              "summary": rows, "tq_stored_rows": sorted(set(stored), key=str),
              "teacher_partition_rows_max": max((t for t in teacher_rows if t is not None), default=None),
              "per_step": per_step, "samples": samples}
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{a.steps} steps in {seconds:.0f} s; TransferQueue rows stored after the teacher pass, per step: "
          f"{result['tq_stored_rows']}; teacher partition rows max {result['teacher_partition_rows_max']}\n")
    print("| process | RSS after warm-up (MB) | RSS at the end (MB) | max (MB) | slope (MB / 100 steps) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['group']} | {r['after_warmup_mb']} | {r['end_mb']} | {r['max_mb']} | "
              f"{r['slope_mb_per_100_steps']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
