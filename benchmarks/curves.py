"""Learning curves on offline ALFWorld: GRPO, GRPO+OPSD, SDAR, RLSD, OPSD from one warm start.

Every (method, seed) is one run of verl's real ``main_ppo`` on CPU (recipe
``recipes/alfworld/tiny_cpu_sdar.yaml`` plus the overrides below), from the warm-start model of
``benchmarks/warmstart.py``, on its generated games: training on the train split, validation on
valid_seen and valid_unseen (data sources ``alfworld_seen`` / ``alfworld_unseen``) before training
and every ``--test-freq`` steps. The teacher's privileged context is our ALFWorld skill library
(task-type retrieval) for every method that has a teacher.

Runs are independent and resumable in parts: a run whose ``docs/results/raw/<method>_seed<k>.jsonl``
exists is skipped, so the sweep can be spread over several sessions (``--methods``, ``--seeds``).
Each raw file holds one JSON line per logged step with the metrics the plots use.

    python benchmarks/curves.py [--methods grpo,grpo_opsd,sdar,rlsd,opsd] [--seeds 0,1,2] [--steps 8]
    python benchmarks/curves.py --report        # the table (initial / final / best success) from the raw files
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
METHODS = {  # name -> algorithm group (and overrides)
    "grpo": ["algorithm=grpo"],
    "grpo_opsd": ["algorithm=grpo_opsd"],      # beta 0: constant gate 0.5
    "sdar": ["algorithm=sdar"],                # beta 5
    "rlsd": ["algorithm=rlsd"],
    "opsd": ["algorithm=opsd"],
}
KEEP = (  # metric prefixes kept in the raw files
    "val-core/alfworld_seen/", "val-core/alfworld_unseen/", "val-aux/alfworld_seen/success/mean",
    "val-aux/alfworld_unseen/success/mean", "episode/", "sdar/gate_mean", "sdar/gate_active_ratio",
    "sdar/gap_mean", "sdar/gap_std", "actor/kl_loss", "actor/entropy", "actor/pg_loss", "actor/sdar/",
    "critic/score/mean", "sdar/invalid_action_rows", "timing_s/step",
)


def round_robin_by_type(games: list[str]) -> list[str]:
    """Games reordered so that any prefix covers the task types evenly (paths start with the type)."""
    by_type: dict[str, list[str]] = {}
    for game in games:
        by_type.setdefault(Path(game).parent.parent.name.split("-")[0], []).append(game)
    queues = [by_type[t] for t in sorted(by_type)]
    return [q[i] for i in range(max(map(len, queues), default=0)) for q in queues if i < len(q)]


def build_data(warm: Path, out: Path, n_val: int) -> None:
    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import find_games, split_dir

    out.mkdir(parents=True, exist_ok=True)
    games = warm / "games"
    pd.DataFrame(make_rows(find_games(split_dir("train", games)), "train")).to_parquet(out / "train.parquet")
    for split, source in (("valid_seen", "alfworld_seen"), ("valid_unseen", "alfworld_unseen")):
        rows = make_rows(round_robin_by_type(find_games(split_dir(split, games)))[:n_val], split)
        for row in rows:
            row["data_source"] = source
        pd.DataFrame(rows).to_parquet(out / f"{split}.parquet")


def run(method: str, seed: int, a, data: Path, raw_dir: Path) -> Path:
    work = Path(a.work) / f"{method}_seed{seed}"
    work.mkdir(parents=True, exist_ok=True)
    metrics = work / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    overrides = [
        *METHODS[method],
        f"actor_rollout_ref.model.path={Path(a.warmstart).resolve() / 'warmstart-model'}",
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files=[{data / 'valid_seen.parquet'},{data / 'valid_unseen.parquet'}]",
        f"data.train_batch_size={a.games_per_step}", f"actor_rollout_ref.actor.ppo_mini_batch_size={a.games_per_step}",
        f"env.rollout.n={a.group}", f"env.max_steps={a.max_env_steps}", f"env.seed={seed}",
        f"actor_rollout_ref.actor.optim.lr={a.lr}", "data.max_prompt_length=1536", "data.max_response_length=48",
        f"data.val_batch_size={2 * a.n_val}", "data.shuffle=true",
        f"trainer.total_training_steps={a.steps}", f"trainer.test_freq={a.test_freq}", "trainer.val_before_train=true",
        "trainer.save_freq=-1", f"trainer.experiment_name=curves_{method}_seed{seed}",
        "trainer.logger=[console,file]", f"hydra.run.dir={work / 'hydra'}",
        "sdar.privileged.source=skills", f"sdar.skills.library={REPO / 'envs' / 'alfworld' / 'skills'}",
    ]
    if method == "grpo":  # no teacher: the skills settings would be unused
        overrides = [o for o in overrides if not o.startswith("sdar.")]
    env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(metrics), TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'alfworld'}",
           "--config-name=tiny_cpu_sdar", *overrides]
    t0 = time.perf_counter()
    with open(work / "run.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"{method} seed {seed} failed (rc {proc.returncode}); see {work / 'run.log'}")
    raw = raw_dir / f"{method}_seed{seed}.jsonl"
    with open(raw, "w") as out:
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            kept = {k: v for k, v in record["data"].items() if k.startswith(KEEP)}
            out.write(json.dumps({"step": record["step"], **kept}) + "\n")
    print(f"{method} seed {seed}: {time.perf_counter() - t0:.0f} s -> {raw}", flush=True)
    return raw


def success_series(records: list[dict], source: str) -> dict[int, float]:
    key = f"val-aux/{source}/success/mean@1"
    return {r["step"]: r[key] for r in records if key in r}


def report(raw_dir: Path, out: Path) -> str:
    """Per method: final and best validation success (mean ± std over seeds), from the raw files."""
    import statistics

    runs: dict[str, list[list[dict]]] = {}
    for path in sorted(raw_dir.glob("*_seed*.jsonl")):
        method = path.stem.rsplit("_seed", 1)[0]
        runs.setdefault(method, []).append([json.loads(line) for line in path.read_text().splitlines()])
    lines = ["| method | seeds | split | initial | final | best |", "|---|---|---|---|---|---|"]

    def fmt(values: list[float]) -> str:
        return f"{statistics.mean(values):.3f} ± {statistics.pstdev(values):.3f}" if values else "-"

    for method in [m for m in METHODS if m in runs]:
        for source in ("alfworld_seen", "alfworld_unseen"):
            series = [success_series(records, source) for records in runs[method]]
            series = [s for s in series if s]
            first = [s[min(s)] for s in series]
            final = [s[max(s)] for s in series]
            best = [max(s.values()) for s in series]
            lines.append(f"| {method} | {len(series)} | {source.split('_')[1]} | {fmt(first)} | {fmt(final)} | {fmt(best)} |")
    table = "\n".join(lines) + "\n"
    out.write_text(table)
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--warmstart", default=".work/warmstart")
    p.add_argument("--work", default=".work/curves")
    p.add_argument("--raw-dir", default="docs/results/raw")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--test-freq", type=int, default=4)
    p.add_argument("--games-per-step", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-env-steps", type=int, default=10)
    p.add_argument("--n-val", type=int, default=12)
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--report", action="store_true", help="only write the table from the raw files")
    a = p.parse_args(argv)
    raw_dir = Path(a.raw_dir)
    if a.report:
        print(report(raw_dir, raw_dir.parent / "table.md"))
        return 0
    raw_dir.mkdir(parents=True, exist_ok=True)
    data = Path(a.work) / "data"
    if not (data / "train.parquet").exists():
        build_data(Path(a.warmstart), data, a.n_val)
    for method in a.methods.split(","):
        if method not in METHODS:
            raise SystemExit(f"unknown method {method!r}; choose from {list(METHODS)}")
        for seed in (int(s) for s in a.seeds.split(",")):
            if (raw_dir / f"{method}_seed{seed}.jsonl").exists():
                print(f"{method} seed {seed}: done before, skipped", flush=True)
                continue
            run(method, seed, a, data, raw_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
