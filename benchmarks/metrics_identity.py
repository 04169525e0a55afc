"""Fixed-seed CPU runs whose per-step metrics must not change under a refactor (not a test).

Runs ``python -m verl.trainer.main_ppo`` on a CPU recipe with verl's ``file`` logger, keeps every
per-step metric except wall-clock ones (``timing_s/*``, ``timing_per_token_ms/*``, ``perf/*``,
``sdar/teacher_pass_s``, memory), and writes them to one JSON file per run. ``--compare`` prints a
table of the largest differences between two such files (or between runs of the same commit, to
measure the run-to-run spread first).

    python benchmarks/metrics_identity.py run --case codeword --out /tmp/before_1.json
    python benchmarks/metrics_identity.py run --case alfworld --out /tmp/before_alf.json
    python benchmarks/metrics_identity.py compare /tmp/before_1.json /tmp/after_1.json
    python benchmarks/metrics_identity.py spread --before /tmp/before_*.json --after /tmp/after_*.json

The CPU path is not bitwise reproducible run to run (the hf rollout batches concurrent requests
by arrival time and samples from one RNG), so ``spread`` compares ranges over several runs per
commit: a metric passes when it is identical in every run or the two commits' ranges overlap.

Cases: ``codeword`` (``recipes/cpu/codeword_sdar``, 3 steps, the demo) and ``alfworld``
(``recipes/alfworld/tiny_cpu_sdar``, 2 steps, turn-row GRPO with the invalid-action penalty).
Each run takes 1.5-3 minutes on 2 cores. The model, data and games are built under ``--work``
(default ``.work/identity``) once and reused.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WALL_CLOCK = re.compile(
    r"^(timing_s/|timing_per_token_ms/|perf/|sdar/teacher_pass_s$|.*memory.*|.*_time.*|.*seconds.*)"
)

CASES = {
    "codeword": dict(
        config_path="recipes/cpu",
        config_name="codeword_sdar",
        overrides=["trainer.total_training_steps=3"],
    ),
    "alfworld": dict(
        config_path="recipes/alfworld",
        config_name="tiny_cpu_sdar",
        overrides=["trainer.total_training_steps=2"],
    ),
}


def _prepare(case: str, work: Path) -> None:
    py = sys.executable
    if not (work / "tiny-model" / "config.json").exists():
        subprocess.run([py, "-m", "verl_sdar.tiny_model", str(work / "tiny-model")], check=True)
    if case == "codeword" and not (work / "codeword" / "train.parquet").exists():
        subprocess.run([py, "-m", "verl_sdar.tasks.codeword", str(work / "codeword")], check=True)
    if case == "alfworld" and not (work / "alfworld" / "train.parquet").exists():
        games = work / "alfworld_games"
        subprocess.run(
            [py, "-m", "verl_sdar.envs.alfworld.generate", str(games), "--n-train", "12", "--n-eval-seen", "12",
             "--n-eval-unseen", "12", "--seed", "0", "--no-initial-state"],
            check=True,
        )
        subprocess.run(
            [py, "-m", "verl_sdar.envs.alfworld.dataset", str(games), str(work / "alfworld"), "--limit-val", "4"],
            check=True,
        )


def run(case: str, out: Path, work: Path, extra: list[str]) -> dict:
    work = work.resolve()
    _prepare(case, work)
    spec = CASES[case]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "metrics.jsonl"
        env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(log), PYTHONUNBUFFERED="1")
        cmd = [
            sys.executable, "-m", "verl.trainer.main_ppo",
            f"--config-path={REPO / spec['config_path']}", f"--config-name={spec['config_name']}",
            "trainer.logger=[console,file]", f"hydra.run.dir={tmp}/hydra",
            f"trainer.default_local_dir={tmp}/ckpt", *spec["overrides"], *extra,
        ]
        print("+", " ".join(cmd), flush=True)
        proc = subprocess.run(cmd, env=env, cwd=tmp, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
            raise SystemExit(f"main_ppo failed with exit status {proc.returncode}")
        steps = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    kept = {
        str(s["step"]): {
            k: v for k, v in sorted(s["data"].items()) if not WALL_CLOCK.match(k) and isinstance(v, (int, float))
        }
        for s in steps
    }
    result = {"case": case, "command": cmd, "steps": kept}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, sort_keys=True))
    print(f"wrote {out}: {len(kept)} steps, {sum(len(v) for v in kept.values())} values")
    return result


def compare(a_path: Path, b_path: Path, top: int = 15) -> float:
    a = json.loads(a_path.read_text())["steps"]
    b = json.loads(b_path.read_text())["steps"]
    rows, only = [], []
    for step in sorted(set(a) | set(b), key=int):
        ka, kb = a.get(step, {}), b.get(step, {})
        only += [f"step {step}: {k} only in {a_path.name}" for k in sorted(set(ka) - set(kb))]
        only += [f"step {step}: {k} only in {b_path.name}" for k in sorted(set(kb) - set(ka))]
        for k in sorted(set(ka) & set(kb)):
            x, y = float(ka[k]), float(kb[k])
            diff = 0.0 if (x == y or (math.isnan(x) and math.isnan(y))) else abs(x - y)
            rows.append((diff, step, k, x, y))
    rows.sort(key=lambda r: -r[0])
    identical = sum(1 for r in rows if r[0] == 0.0)
    print(f"{len(rows)} values compared, {identical} identical, max abs diff {rows[0][0] if rows else 0.0:.3g}")
    print(f"| step | metric | {a_path.name} | {b_path.name} | abs diff |\n|---|---|---|---|---|")
    for diff, step, k, x, y in rows[:top]:
        if diff == 0.0:
            break
        print(f"| {step} | {k} | {x:.6g} | {y:.6g} | {diff:.3g} |")
    for line in only:
        print(line)
    return rows[0][0] if rows else 0.0


def spread(before: list[Path], after: list[Path]) -> int:
    """Per metric: identical in every run, or the after-runs' range overlaps the before-runs' range.

    Prints the metrics whose ranges do not overlap (with both ranges); returns their count.
    """
    def load(paths):
        runs = [json.loads(p.read_text())["steps"] for p in paths]
        values: dict[tuple[str, str], list[float]] = {}
        for run in runs:
            for step, metrics in run.items():
                for k, v in metrics.items():
                    values.setdefault((step, k), []).append(float(v))
        return values

    b, a = load(before), load(after)
    common = sorted(set(b) & set(a), key=lambda sk: (int(sk[0]), sk[1]))
    same = [sk for sk in common if len(set(b[sk] + a[sk])) == 1]
    apart = [sk for sk in common if sk not in same and (min(a[sk]) > max(b[sk]) or max(a[sk]) < min(b[sk]))]
    print(f"{len(common)} (step, metric) pairs in both; {len(same)} identical in all {len(before)}+{len(after)} runs; "
          f"{len(common) - len(same) - len(apart)} vary but the ranges overlap; {len(apart)} ranges apart")
    print("| step | metric | before min..max | after min..max |\n|---|---|---|---|")
    for step, k in apart:
        print(f"| {step} | {k} | {min(b[(step, k)]):.6g}..{max(b[(step, k)]):.6g} | "
              f"{min(a[(step, k)]):.6g}..{max(a[(step, k)]):.6g} |")
    for step, k in sorted(set(b) - set(a)):
        print(f"step {step}: {k} only before")
    for step, k in sorted(set(a) - set(b)):
        print(f"step {step}: {k} only after")
    return len(apart)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run")
    r.add_argument("--case", choices=sorted(CASES), default="codeword")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--work", type=Path, default=REPO / ".work" / "identity")
    r.add_argument("overrides", nargs="*", help="extra Hydra overrides")
    c = sub.add_parser("compare")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    c.add_argument("--top", type=int, default=15)
    s = sub.add_parser("spread")
    s.add_argument("--before", type=Path, nargs="+", required=True)
    s.add_argument("--after", type=Path, nargs="+", required=True)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        run(args.case, args.out, args.work, args.overrides)
    elif args.cmd == "spread":
        spread(args.before, args.after)
    else:
        compare(args.a, args.b, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
