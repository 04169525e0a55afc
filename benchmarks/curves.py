"""Learning curves on offline ALFWorld: GRPO, GRPO+OPSD, SDAR, RLSD, OPSD from one warm start.

The earlier 4-step sweep (``docs/sweep_4step/``), kept to regenerate that page; the question it
asked is now answered by the pre-registered experiment, ``benchmarks/experiment.py``.

Every (method, seed) is one run of verl's real ``main_ppo`` on CPU (recipe
``recipes/alfworld/tiny_cpu_sdar.yaml`` plus the overrides below), from the warm-start model of
``benchmarks/warmstart.py``, on its generated games: training on the train split, validation on
valid_seen and valid_unseen (data sources ``alfworld_seen`` / ``alfworld_unseen``) before training
and every ``--test-freq`` steps (greedy). The teacher's privileged context is each game's expert
route (``extra_info.privileged``, ``verl_sdar.envs.alfworld.privileged.route_hint``; the warm start
learned to use it, see docs/warmstart.md) for every method that has a teacher.

Runs are independent and resumable in parts: a run whose ``docs/sweep_4step/raw/<method>_seed<k>.jsonl``
exists is skipped, so the sweep can be spread over several sessions (``--methods``, ``--seeds``).
Each raw file holds one JSON line per logged step with the metrics the plots use.

    python benchmarks/curves.py [--methods grpo,grpo_opsd,sdar,rlsd,opsd] [--seeds 0,1,2] [--steps 4]
    python benchmarks/curves.py --report        # docs/sweep_4step/results.md, its plots and table, from the raw files

The statistics, table, plots and page of ``--report`` are ``verl_sdar.reports.curves``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from verl_sdar.reports.curves import INITIAL, METHODS, parse_args, report, start_sweep

REPO = Path(__file__).resolve().parent.parent
KEEP = (  # metric prefixes kept in the raw files
    "val-core/alfworld_seen/", "val-core/alfworld_unseen/", "val-aux/alfworld_seen/episodes/",
    "val-aux/alfworld_unseen/episodes/", "episode/", "sdar/gate_mean", "sdar/gate_active_ratio",
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
    from verl_sdar.envs.alfworld.privileged import route_hint

    out.mkdir(parents=True, exist_ok=True)
    games = warm / "games"
    rows = make_rows(find_games(split_dir("train", games)), "train", privileged=route_hint)
    pd.DataFrame(rows).to_parquet(out / "train.parquet")
    for split, source in (("valid_seen", "alfworld_seen"), ("valid_unseen", "alfworld_unseen")):
        rows = make_rows(round_robin_by_type(find_games(split_dir(split, games)))[:n_val], split, privileged=route_hint)
        for row in rows:
            row["data_source"] = source
        pd.DataFrame(rows).to_parquet(out / f"{split}.parquet")


def run(method: str, seed: int, a, data: Path, raw_dir: Path) -> Path:
    """One main_ppo run; ``method == INITIAL``: validation only, of the warm start (greedy, so the
    same for every method and seed: measured once and used as step 0 of every curve)."""
    name = INITIAL if method == INITIAL else f"{method}_seed{seed}"
    work = Path(a.work).resolve() / name
    work.mkdir(parents=True, exist_ok=True)
    metrics = work / "metrics.jsonl"
    metrics.unlink(missing_ok=True)
    overrides = [
        *METHODS.get(method, ["algorithm=grpo", "trainer.val_only=true"]),
        f"actor_rollout_ref.model.path={Path(a.warmstart).resolve() / 'warmstart-model'}",
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files=[{data / 'valid_seen.parquet'},{data / 'valid_unseen.parquet'}]",
        f"data.train_batch_size={a.games_per_step}", f"actor_rollout_ref.actor.ppo_mini_batch_size={a.games_per_step}",
        f"env.rollout.n={a.group}", f"env.max_steps={a.max_env_steps}", f"env.seed={seed}",
        f"actor_rollout_ref.actor.optim.lr={a.lr}", "data.max_prompt_length=1536", "data.max_response_length=48",
        f"data.val_batch_size={2 * a.n_val}", "data.shuffle=true",
        f"trainer.total_training_steps={a.steps}", f"trainer.test_freq={a.test_freq}",
        f"trainer.val_before_train={method == INITIAL}",
        "trainer.save_freq=-1", f"trainer.experiment_name=curves_{name}",
        "trainer.logger=[console,file]", f"hydra.run.dir={work / 'hydra'}",
    ]
    env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(metrics), TOKENIZERS_PARALLELISM="false",
               WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'alfworld'}",
           "--config-name=tiny_cpu_sdar", *overrides]
    t0 = time.perf_counter()
    with open(work / "run.log", "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (rc {proc.returncode}); see {work / 'run.log'}")
    raw = raw_dir / f"{name}.jsonl"
    with open(raw, "w") as out:
        for line in metrics.read_text().splitlines():
            record = json.loads(line)
            kept = {k: v for k, v in record["data"].items() if k.startswith(KEEP)}
            out.write(json.dumps({"step": record["step"], **kept}) + "\n")
    seconds = time.perf_counter() - t0
    timings_file = raw_dir / "wall_seconds.json"
    timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
    timings[name] = round(seconds, 1)
    timings_file.write_text(json.dumps(timings, indent=1, sort_keys=True))
    print(f"{name}: {seconds:.0f} s -> {raw}", flush=True)
    return raw


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv, description=__doc__.split("\n\n")[0])
    raw_dir = Path(a.raw_dir)
    if a.report:
        print(report(raw_dir, Path(a.doc)))
        return 0
    methods, seeds = start_sweep(a)
    data = Path(a.work).resolve() / f"data_nval{a.n_val}"
    if not (data / "train.parquet").exists():
        build_data(Path(a.warmstart), data, a.n_val)
    if not (raw_dir / f"{INITIAL}.jsonl").exists():
        run(INITIAL, 0, a, data, raw_dir)
    for method in methods:
        for seed in seeds:
            if (raw_dir / f"{method}_seed{seed}.jsonl").exists():
                print(f"{method} seed {seed}: done before, skipped", flush=True)
                continue
            run(method, seed, a, data, raw_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
