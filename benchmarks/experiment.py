"""The pre-registered SDAR vs GRPO experiment on offline ALFWorld (docs/experiment_plan_alfworld.md).

One *run* is (arm, seed): verl's real ``main_ppo`` on CPU (``recipes/alfworld/tiny_cpu_sdar.yaml``
plus the plan's overrides) from the warm-start model of ``benchmarks/warmstart.py``, then an
evaluation of the trained policy outside verl (``verl_sdar.envs.alfworld.evaluate``: the agent
loop's prompts, games played in lockstep) on every evaluation game of valid_seen and valid_unseen,
greedy once and sampled ``k`` times. The warm start itself is evaluated the same way once
(``initial``). The arms of one seed share the data order, the rollout seed and the evaluation seed.

Outputs, per run, under ``--raw-dir`` (committed as they come in; ``--commit`` does the commit):

* ``<run>/train.jsonl``: one line per training step, the metrics the report uses;
* ``<run>/eval.jsonl``: one line per evaluation episode (split, game, task type, decoding, sample,
  won, steps, invalid turns);
* ``<run>/run.json``: settings, wall times (training, evaluation), versions.

A run whose ``run.json`` exists is done and never redone. A run killed during training resumes from
its last checkpoint (verl's ``resume_mode=auto``, every ``--save-freq`` steps; ``run.json`` then
counts the training wall time of every start, ``train_starts`` of them); killed during
evaluation, its evaluation restarts. The settings are fixed in ``settings.json`` next to the raw
folders; a later invocation with other settings is refused. Checkpoints and logs live under
``--work``/<raw folder name>/<run> (its own ``settings.json``: a run is never resumed under others).

    python benchmarks/experiment.py run --arms grpo,sdar --seeds 0,1,2,3,4,5 [--commit]
    python benchmarks/experiment.py cost            # per-step and evaluation cost (pilot, not committed)
    python benchmarks/experiment.py report [--doc docs/results_alfworld.md]   # the page, from the raw files
    python benchmarks/experiment.py run --arms grpo --seeds 100,101 --lr 3e-5 --splits valid_seen \
        --raw-dir docs/results/pilot/lr3e-05       # the learning-rate pilot (GRPO, valid_seen only)
    python benchmarks/experiment.py pilot --raw-dir docs/results/pilot   # its summary: lr, seeds per arm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

from verl_sdar.reports.settings import pin_settings

WALL_EVERY_S = 5  # how often a training run's wall time is written down (a kill loses at most this)
REPO = Path(__file__).resolve().parent.parent
ARMS = {
    "grpo": ["algorithm=grpo"],
    "sdar": ["algorithm=sdar"],            # beta 5, tau 0.2
    "grpo_opsd": ["algorithm=grpo_opsd"],  # beta 0: the naive sum (constant gate 0.5)
    "sdar_noisy": ["algorithm=sdar"],      # teacher text wrong for a share of games
    "grpo_opsd_noisy": ["algorithm=grpo_opsd"],
}
INITIAL = "initial"
KEEP = ("episode/", "sdar/gate_mean", "sdar/gate_active_ratio", "sdar/gap_mean", "sdar/gap_std",
        "sdar/teacher_pass_s", "sdar/invalid_action_rows", "actor/kl_loss", "actor/entropy", "actor/pg_loss",
        "actor/grad_norm", "actor/sdar/", "critic/score/mean", "response_length/mean", "timing_s/step",
        "timing_s/gen", "timing_s/teacher", "timing_s/update_actor")
SETTING_KEYS = ("warmstart", "steps", "games_per_step", "group", "train_max_steps", "eval_max_steps", "n_eval",
                "k_samples", "eval_temperature", "lr", "max_prompt_length", "history_length", "save_freq",
                "noisy_share", "splits")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("run", "cost", "report", "pilot"))
    p.add_argument("--doc", default="docs/results_alfworld.md", help="report: the page to write")
    p.add_argument("--arms", default="grpo,sdar")
    p.add_argument("--seeds", default="0,1,2,3,4,5")
    p.add_argument("--warmstart", default=".work/warmstart96")
    p.add_argument("--work", default=".work/experiment")
    p.add_argument("--raw-dir", default="docs/results/experiment")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--games-per-step", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--train-max-steps", type=int, default=8)
    p.add_argument("--eval-max-steps", type=int, default=20)
    p.add_argument("--n-eval", type=int, default=96)
    p.add_argument("--k-samples", type=int, default=4)
    p.add_argument("--eval-temperature", type=float, default=0.4)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-prompt-length", type=int, default=1536)
    p.add_argument("--history-length", type=int, default=2)
    p.add_argument("--save-freq", type=int, default=5)
    p.add_argument("--noisy-share", type=float, default=0.5)
    p.add_argument("--splits", default="valid_seen,valid_unseen", help="evaluation splits (the lr pilot: valid_seen)")
    p.add_argument("--commit", action="store_true", help="git-commit each finished run's raw folder")
    p.add_argument("--eval-only-initial", action="store_true", help="only evaluate the warm start")
    p.add_argument("--interim", action="store_true",
                   help="report: the full page before every planned seed is done (marked incomplete; not to publish)")
    return p.parse_args(argv)


def settings_of(a: argparse.Namespace) -> dict:
    return {k: getattr(a, k) for k in SETTING_KEYS}


# ----------------------------------------------------------------------------- data
def eval_games(games_root: Path, split: str, n: int) -> list[str]:
    from verl_sdar.envs.alfworld.play import find_games, split_dir

    games = sorted(find_games(split_dir(split, games_root)))
    if len(games) < n:
        raise SystemExit(f"{split}: {len(games)} games under {games_root}, the plan needs {n}")
    return games[:n]


def build_data(a: argparse.Namespace, out: Path) -> None:
    """``train.parquet`` (every train game, the expert route as the teacher's text),
    ``train_noisy.parquet`` (the same, but for ``noisy_share`` of the games, fixed by seed 0, the
    route of another game of the same task type) and a small ``val.parquet`` (verl wants one)."""
    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import find_games, split_dir
    from verl_sdar.envs.alfworld.privileged import route_hint

    out.mkdir(parents=True, exist_ok=True)
    games = Path(a.warmstart) / "games"
    train = sorted(find_games(split_dir("train", games)))
    rows = make_rows(train, "train", privileged=route_hint)
    pd.DataFrame(rows).to_parquet(out / "train.parquet")
    rng = random.Random(0)
    noisy = [dict(r, extra_info=dict(r["extra_info"])) for r in rows]
    chosen = set(rng.sample(range(len(rows)), round(a.noisy_share * len(rows))))
    for i in sorted(chosen):
        same_type = [j for j, r in enumerate(rows) if j != i
                     and r["extra_info"].get("task_type") == rows[i]["extra_info"].get("task_type")]
        donor = rows[rng.choice(same_type)] if same_type else rows[(i + 1) % len(rows)]
        noisy[i]["extra_info"]["privileged"] = donor["extra_info"]["privileged"]
        noisy[i]["extra_info"]["privileged_noisy"] = True
    pd.DataFrame(noisy).to_parquet(out / "train_noisy.parquet")
    val = make_rows(eval_games(games, "valid_seen", 4), "valid_seen", privileged=route_hint)
    pd.DataFrame(val).to_parquet(out / "val.parquet")


# ----------------------------------------------------------------------------- one run
def run_folder(a: argparse.Namespace, work: Path, raw: Path, name: str) -> Path:
    """The run's working folder (checkpoints, logs): ``<work>/<raw folder name>/<run>``, so that runs
    of the same name under other settings (the pilot's lrs, the sweep) never resume each other's
    checkpoints. It records the settings it was started with; resuming under others is refused."""
    folder = work / raw.name / name
    pin_settings(folder, settings_of(a), "{folder} was started under other settings (started, given): {differ}; "
                                         "move it away to restart the run")
    return folder


def train(a: argparse.Namespace, arm: str, seed: int, data: Path, work: Path) -> list[float]:
    """main_ppo for (arm, seed); resumes from the last checkpoint. Returns the wall seconds of each
    start of this run (one entry unless it was killed and resumed)."""
    train_file = data / ("train_noisy.parquet" if arm.endswith("_noisy") else "train.parquet")
    overrides = [
        *ARMS[arm],
        *run_overrides(model=Path(a.warmstart).resolve() / "warmstart-model", train_file=train_file,
                       val_file=data / "val.parquet", batch=a.games_per_step, group=a.group,
                       max_steps=a.train_max_steps, seed=seed, lr=a.lr, steps=a.steps, save_freq=a.save_freq),
        f"env.history_length={a.history_length}", "actor_rollout_ref.rollout.full_determinism=true",
        f"data.max_prompt_length={a.max_prompt_length}", "data.max_response_length=48",
    ]
    return run_recipe("alfworld/tiny_cpu_sdar", overrides, work, f"{arm}_seed{seed}")


def run_overrides(*, model: Path, train_file: Path, val_file: Path, batch: int, group: int, max_steps: int,
                  seed: int, lr: float, steps: int, save_freq: int) -> list[str]:
    """The overrides every experiment run sets: model, data, ``batch`` tasks a step (one mini-batch),
    groups of ``group``, the env's step cap, the run's seed (env and rollout), lr, steps, the
    checkpoint period; no validation inside verl (the evaluation runs outside it)."""
    return [
        f"actor_rollout_ref.model.path={model}", f"data.train_files={train_file}", f"data.val_files={val_file}",
        f"data.train_batch_size={batch}", f"actor_rollout_ref.actor.ppo_mini_batch_size={batch}",
        f"env.rollout.n={group}", f"env.max_steps={max_steps}", f"env.seed={seed}",
        f"actor_rollout_ref.rollout.seed={seed}", "data.shuffle=true", f"actor_rollout_ref.actor.optim.lr={lr}",
        f"trainer.total_training_steps={steps}", "trainer.test_freq=-1", "trainer.val_before_train=false",
        f"trainer.save_freq={save_freq}",
    ]


def run_recipe(recipe: str, overrides: list[str], work: Path, name: str) -> list[float]:
    """``main_ppo`` on ``recipes/<recipe>.yaml`` with ``overrides``, resumable (verl's
    ``resume_mode=auto``; checkpoints with the HF model, under ``work``), logging to files in
    ``work`` (:func:`launch`); ``SystemExit`` when it fails. Returns the wall seconds of each start."""
    folder, config = recipe.split("/")
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / folder}",
           f"--config-name={config}", *overrides, "trainer.resume_mode=auto",
           "actor_rollout_ref.actor.checkpoint.save_contents=[model,optimizer,extra,hf_model]",
           "actor_rollout_ref.actor.checkpoint.load_contents=[model,optimizer,extra]",
           f"trainer.default_local_dir={work / 'checkpoints'}", f"trainer.experiment_name={name}",
           "trainer.logger=[console,file]", f"hydra.run.dir={work / 'hydra'}"]
    work.mkdir(parents=True, exist_ok=True)
    rc, walls = launch(cmd, work)
    if rc != 0:
        raise SystemExit(f"{name}: training failed (rc {rc}); see {work / 'train.log'}")
    return walls


def launch(cmd: list[str], work: Path) -> tuple[int, list[float]]:
    """Run ``cmd`` (a ``main_ppo`` command) in ``work``, appending to ``train.log``; returns its exit
    code and the wall seconds of every start of the run, this one included (``train_wall.json``,
    rewritten every few seconds while it runs: a run killed and resumed reports the training time
    of all its starts, lost work included). verl's file logger empties its file when main_ppo
    starts: each start logs to its own ``metrics.start<k>.jsonl``, so a resumed run keeps the
    metrics of the steps its earlier starts ran (:func:`kept_metrics` reads all)."""
    walls_file = work / "train_wall.json"
    walls = json.loads(walls_file.read_text()) if walls_file.exists() else []
    walls.append(0.0)
    metrics_file = work / f"metrics.start{len(walls)}.jsonl"
    env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(metrics_file),
               TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", HYDRA_FULL_ERROR="1")
    t0 = time.perf_counter()
    with open(work / "train.log", "a") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=work)
        while True:
            try:
                rc = proc.wait(timeout=WALL_EVERY_S)
            except subprocess.TimeoutExpired:
                rc = None
            walls[-1] = round(time.perf_counter() - t0, 1)
            walls_file.write_text(json.dumps(walls) + "\n")
            if rc is not None:
                return rc, walls


def _evaluate_split(model: str, games_root: str, split: str, n_eval: int, plays: list, max_steps: int,
                    history_length: int) -> list[dict]:
    """One split, every play (worker process: one torch thread, the other core plays the other split)."""
    import torch

    from verl_sdar.envs.alfworld.evaluate import evaluate_plays

    torch.set_num_threads(1)
    root = Path(games_root).resolve()
    games = eval_games(root, split, n_eval)
    results = evaluate_plays(model, games, [(t, seed) for _, _, t, seed in plays], max_steps=max_steps,
                             history_length=history_length)
    records = []
    for (decoding, j, _, _), play in zip(plays, results, strict=True):
        for r in play:
            game = Path(r.game).resolve()
            name = str(game.relative_to(root)) if game.is_relative_to(root) else r.game
            records.append({"split": split, "game": name, "task_type": r.task_type, "decoding": decoding,
                            "sample": j, "won": bool(r.won), "steps": r.steps, "invalid": r.invalid})
    return records


def evaluate_model(a: argparse.Namespace, model: Path, seed: int) -> tuple[list[dict], float]:
    """Every evaluation game of each split, greedy once and ``k`` times at the evaluation
    temperature (sample j seeded ``1000 * seed + j + 1``; greedy ``1000 * seed``): one record per
    episode. Two processes play in parallel: one split each, or half of the plays of a single split."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    plays = [("greedy", 0, 0.0, 1000 * seed)] + [
        ("sampled", j, a.eval_temperature, 1000 * seed + j + 1) for j in range(a.k_samples)]
    splits = a.splits.split(",")
    # two worker processes (one per core): a split each, or the plays of a single split shared out
    jobs = [(split, plays) for split in splits] if len(splits) > 1 else [
        (splits[0], plays[: (len(plays) + 1) // 2]), (splits[0], plays[(len(plays) + 1) // 2:])]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=len(jobs), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(_evaluate_split, str(model), str(Path(a.warmstart) / "games"), split, a.n_eval, part,
                               a.eval_max_steps, a.history_length) for split, part in jobs if part]
        records = [record for future in futures for record in future.result()]
    for split in splits:
        for decoding, j, _, _ in plays:
            won = [r["won"] for r in records if r["split"] == split and r["decoding"] == decoding and r["sample"] == j]
            print(f"  eval {split} {decoding}#{j}: {sum(won) / len(won):.3f}", flush=True)
    return records, time.perf_counter() - t0


def metrics_files(work: Path) -> list[Path]:
    """The run's metrics files in start order (``metrics.jsonl``: runs started before each start had its own)."""
    starts = sorted(work.glob("metrics.start*.jsonl"), key=lambda p: int(p.name[len("metrics.start"):-len(".jsonl")]))
    return [p for p in [work / "metrics.jsonl", *starts] if p.exists()]


def kept_rows(records, keep: tuple[str, ...] = KEEP) -> list[dict]:
    """``(step, metrics)`` pairs to one row per step holding the metrics named by the prefixes
    ``keep``, in step order; a later record of a step wins, key by key (a resumed run may repeat a
    step)."""
    by_step: dict[int, dict] = {}
    for step, data in records:
        by_step.setdefault(step, {}).update({k: v for k, v in data.items() if k.startswith(keep)})
    return [{"step": s, **by_step[s]} for s in sorted(by_step)]


def kept_metrics(work: Path, keep: tuple[str, ...] = KEEP) -> list[dict]:
    """One row per step over all starts of the run (``kept_rows`` of its metrics files)."""
    records = (json.loads(line) for f in metrics_files(work) for line in f.read_text().splitlines() if line.strip())
    return kept_rows(((r["step"], r["data"]) for r in records), keep)


def write_run(out: Path, train_rows: list[dict], eval_rows: list[dict], info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    (out / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n")  # last: marks the run done


def versions() -> dict:
    import torch
    import verl

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return {"python": platform.python_version(), "torch": torch.__version__, "verl": verl.__version__,
            "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "commit": head or None}


def commit(paths: list[Path], message: str) -> None:
    subprocess.run(["git", "add", *map(str, paths)], cwd=REPO, check=True)
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=REPO, check=False)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    raw = Path(a.raw_dir)
    if a.command == "report":  # the page from the raw files (verl_sdar.reports.experiment)
        from verl_sdar.reports.experiment import report

        print(report(raw, Path(a.doc), interim=a.interim))
        return 0
    if a.command == "pilot":  # the lr pilot's summary and the plan's decisions (verl_sdar.reports.pilot)
        from verl_sdar.reports.pilot import page, summarize

        text = page(summarize(raw), raw)
        (raw / "summary.md").write_text(text)
        print(text)
        return 0
    work = Path(a.work).resolve()
    data = work / "data"
    if not (data / "train_noisy.parquet").exists():
        build_data(a, data)
    if a.command == "cost":  # a short GRPO run and one evaluation pass, timed: nothing is committed
        cost = argparse.Namespace(**{**vars(a), "steps": 3, "save_freq": 3})
        seconds = sum(train(cost, "grpo", 0, data, work / "cost"))
        rows = kept_metrics(work / "cost")
        model = work / "cost" / "checkpoints" / "global_step_3" / "actor" / "huggingface"
        records, eval_s = evaluate_model(a, model, 0)
        print(json.dumps({
            "train_wall_s": round(seconds, 1), "step_s": [round(r.get("timing_s/step", 0), 1) for r in rows],
            "gen_s": [round(r.get("timing_s/gen", 0), 1) for r in rows],
            "evaluation_s": round(eval_s, 1), "evaluation_episodes": len(records),
            "mean_steps": sum(r["steps"] for r in records) / len(records)}, indent=1))
        return 0

    pin_settings(raw, settings_of(a))
    arms = [x for x in a.arms.split(",") if x]
    unknown = [x for x in arms if x not in ARMS]
    if unknown:
        raise SystemExit(f"unknown arms {unknown}; known: {sorted(ARMS)}")
    seeds = [int(s) for s in a.seeds.split(",") if s]
    if not (raw / INITIAL / "run.json").exists():
        print("initial: evaluating the warm start", flush=True)
        records, eval_s = evaluate_model(a, Path(a.warmstart) / "warmstart-model", 0)
        write_run(raw / INITIAL, [], records, {"run": INITIAL, "eval_seed": 0, "eval_s": round(eval_s, 1),
                                                "settings": settings_of(a), **versions()})
        if a.commit:
            commit([raw / INITIAL, raw / "settings.json"], "experiment: warm start evaluated (raw)")
    if a.eval_only_initial:
        return 0
    for seed in seeds:  # seed-major: every arm of a seed before the next seed (pairs complete first)
        for arm in arms:
            name = f"{arm}_seed{seed}"
            if (raw / name / "run.json").exists():
                print(f"{name}: done before, skipped", flush=True)
                continue
            run_work = run_folder(a, work, raw, name)
            print(f"{name}: training", flush=True)
            walls = train(a, arm, seed, data, run_work)
            train_s = sum(walls)
            train_rows = kept_metrics(run_work)
            logged = [r["step"] for r in train_rows]
            if logged != list(range(1, a.steps + 1)):
                raise SystemExit(f"{name}: the metrics files in {run_work} hold steps {logged}, not 1..{a.steps}; "
                                 "the run is not recorded (its checkpoints and train.log are kept)")
            model = run_work / "checkpoints" / f"global_step_{a.steps}" / "actor" / "huggingface"
            print(f"{name}: evaluating {model}", flush=True)
            records, eval_s = evaluate_model(a, model, seed)
            info = {"run": name, "arm": arm, "seed": seed, "overrides": ARMS[arm], "train_wall_s": round(train_s, 1),
                    "train_starts": len(walls),
                    "eval_s": round(eval_s, 1), "eval_seed": seed, "settings": settings_of(a), **versions()}
            write_run(raw / name, train_rows, records, info)
            print(f"{name}: done ({train_s:.0f} s training, {eval_s:.0f} s evaluation)", flush=True)
            if a.commit:
                commit([raw / name], f"experiment: {name} (raw, {raw})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
