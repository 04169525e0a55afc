"""The vault experiment (issue #29; the plan: docs/experiment_plan.md): runs, evaluations, the pilot's gate.

One *run* is (arm, seed): verl's real ``main_ppo`` on CPU (``recipes/cpu/vault_sdar.yaml`` plus the
overrides below) from the warm start of ``python -m verl_sdar.envs.vault.warmstart``, then an
evaluation outside verl (``verl_sdar.envs.vault.warmstart.evaluate``: the agent loop's prompts, the
training step cap, tasks played in lockstep) of its mid and final checkpoints on the held-out
evaluation split: ``k`` plays per task at temperature 1 and one greedy. The warm start itself is
evaluated once (``initial``) the same way and at the temperatures of ``--baseline-temperatures``
(the "re-tune the warm start's temperature" baseline the learning gate compares with).

Outputs under ``--raw-dir`` (committed as they come in with ``--commit``): per run ``train.jsonl``
(one line per step: success, group statistics, the SDAR metrics), ``eval.jsonl`` (one line per
evaluation episode: checkpoint, decoding, sample, task, won, the key, forks passed, decisions by
kind) and ``run.json`` (settings, wall times, versions; written last: a run with one is done and
never redone). A run killed during training resumes from its last checkpoint; killed during
evaluation, its evaluation restarts. Settings are pinned in ``settings.json`` (other settings are
refused). verl's rollout dump of every step stays in the working folder (``--work``).

    python benchmarks/vault_experiment.py run --arms grpo --seeds 100,101 --lr 1e-4 --eval-split pilot \\
        --raw-dir docs/results/vault/pilot/lr1e-04 [--commit]     # the learning-rate pilot
    python benchmarks/vault_experiment.py gate --raw-dir docs/results/vault/pilot/lr1e-04   # its learning gate
    python benchmarks/vault_experiment.py run --arms sdar --seeds 100 --steps 2 --lr <lr> \\
        --raw-dir docs/results/vault/pilot/coef
    python benchmarks/vault_experiment.py coef --raw-dir docs/results/vault/pilot/coef    # the coefficient rule
    python benchmarks/vault_experiment.py run --arms grpo,sdar,grpo_opsd,sdar_noisy --seeds 0,1,2,3,4,5 \
        --lr <lr> --coef <coef> --eval-split val --ood --raw-dir docs/results/vault/sweep --commit   # the sweep
    python benchmarks/vault_experiment.py report --raw-dir docs/results/vault/sweep --planned-seeds 6  # docs/results.md
    python benchmarks/vault_experiment.py signs --raw-dir docs/results/vault/sweep  # signs followed per
        # direction and step, from the rollout dumps in --work (written to <raw-dir>/sign_following.md)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from experiment import commit, kept_metrics, run_overrides, run_recipe, versions, write_run

from verl_sdar.reports.settings import pin_settings

ARMS = {
    "grpo": ["algorithm=grpo"],
    "sdar": ["algorithm=sdar"],
    "grpo_opsd": ["algorithm=grpo_opsd"],
    "sdar_noisy": ["algorithm=sdar"],
}
INITIAL = "initial"
KEEP = ("episode/", "group/", "sdar/gate_mean", "sdar/gap_mean", "sdar/gap_std", "sdar/rows_with_privileged",
        "sdar/gate_active_ratio", "sdar/noisy/", "sdar/plain_rows_gap_abs_max", "timing_s/old_log_prob", "timing_s/ref",
        "actor/kl_loss", "actor/entropy", "actor/pg_loss", "actor/grad_norm", "actor/sdar/", "critic/score/mean",
        "critic/advantages/", "response_length/mean", "timing_s/step", "timing_s/gen", "timing_s/teacher",
        "timing_s/update_actor")
SETTING_KEYS = ("warmstart", "steps", "tasks_per_step", "group", "lr", "max_steps", "eval_split", "k_samples", "ood",
                "baseline_temperatures", "data_seed", "hidden_share", "coef")
DISTILLING = ("sdar", "grpo_opsd", "sdar_noisy")
"""The arms with a distillation term: ``--coef`` sets their ``sdar.coef`` (the plan's coefficient rule)."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="benchmarks/vault_experiment.py", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=("run", "gate", "coef", "report", "signs"))
    p.add_argument("--arms", default="grpo")
    p.add_argument("--seeds", default="100,101")
    p.add_argument("--warmstart", default=".work/vault-warmstart/model", help="the warm-start model folder")
    p.add_argument("--work", default=".work/vault-experiment")
    p.add_argument("--raw-dir", default="docs/results/vault/pilot/lr1e-04")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--tasks-per-step", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--max-steps", type=int, default=10, help="the step cap, training and evaluation alike")
    p.add_argument("--eval-split", default="pilot", choices=("pilot", "val", "ood"))
    p.add_argument("--k-samples", type=int, default=4)
    p.add_argument("--ood", action="store_true", help="also evaluate the final checkpoint on the 6-fork tasks")
    p.add_argument("--baseline-temperatures", default="0.5,0.7", help="the warm start's other temperatures")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--hidden-share", type=float, default=0.5)
    p.add_argument("--coef", type=float, default=None,
                   help="sdar.coef of the distilling arms (default: the recipes' 0.01); fixed by the `coef` rule")
    p.add_argument("--planned-seeds", type=int, default=6, help="report: seeds per arm the plan runs")
    p.add_argument("--pilot-dir", default="docs/results/vault/pilot/lr1e-04",
                   help="report: the pilot whose seed-to-seed spread gives the minimum detectable effect")
    p.add_argument("--doc", default="docs/results.md", help="report: the page to write")
    p.add_argument("--interim", action="store_true", help="report: the full page before every seed finished")
    p.add_argument("--commit", action="store_true")
    return p.parse_args(argv)


def settings_of(a: argparse.Namespace) -> dict:
    return {k: getattr(a, k) for k in SETTING_KEYS}


def build_data(a: argparse.Namespace, out: Path) -> None:
    from verl_sdar.envs.vault.dataset import build

    if not (out / "train_noisy.parquet").exists():
        print(json.dumps(build(out, seed=a.data_seed, hidden_share=a.hidden_share)), flush=True)


def eval_tasks(data: Path, split: str) -> list:
    import pandas as pd

    from verl_sdar.envs.vault.env import VaultTask

    frame = pd.read_parquet(data / f"{split}.parquet")
    return [VaultTask.from_dict(json.loads(e["vault_task"])) for e in frame["extra_info"]]


def evaluate_model(a: argparse.Namespace, model: Path, tasks: list, checkpoint: str, seed: int,
                   temperatures: tuple[float, ...] = (1.0,), split: str | None = None) -> list[dict]:
    """Greedy once and ``k`` plays at each temperature (play j seeded ``1000 * seed + j + 1``) of
    every task of ``split`` (default: the evaluation split)."""
    from verl_sdar.envs.vault.warmstart import evaluate

    plays = [("greedy", 0.0, 0, 1000 * seed)] + [
        (f"T={t:g}", t, j, 1000 * seed + j + 1) for t in temperatures for j in range(a.k_samples)]
    records, split = [], split or a.eval_split
    for decoding, temperature, j, play_seed in plays:
        for task, play in zip(tasks, evaluate(str(model), tasks, None, temperature=temperature, seed=play_seed,
                                              max_steps=a.max_steps), strict=True):
            records.append({"split": split, "checkpoint": checkpoint, "decoding": decoding, "sample": j,
                            "task": task.task_id, "forks": task.forks, "hidden": bool(task.hidden), "won": play.won,
                            "right_key": play.right_key, "forks_passed": play.forks_passed, "steps": play.steps,
                            "invalid": play.invalid, "decisions": play.decisions})
        won = [r["won"] for r in records[-len(tasks):]]
        print(f"  {split} {checkpoint} {decoding}#{j}: success {sum(won) / len(won):.3f}", flush=True)
    return records


def arm_overrides(a: argparse.Namespace, arm: str) -> list[str]:
    """The arm's own overrides, with ``sdar.coef`` when ``--coef`` is given and the arm distils."""
    return [*ARMS[arm], *([f"sdar.coef={a.coef}"] if a.coef is not None and arm in DISTILLING else [])]


def train(a: argparse.Namespace, arm: str, seed: int, data: Path, work: Path) -> list[float]:
    """main_ppo for (arm, seed), resumed from its last checkpoint; wall seconds of each start."""
    train_file = data / ("train_noisy.parquet" if arm.endswith("_noisy") else "train.parquet")
    overrides = [
        *arm_overrides(a, arm),
        *run_overrides(model=Path(a.warmstart).resolve(), train_file=train_file,
                       val_file=data / f"{a.eval_split}.parquet", batch=a.tasks_per_step, group=a.group,
                       max_steps=a.max_steps, seed=seed, lr=a.lr, steps=a.steps, save_freq=a.steps // 2),
        f"data.seed={seed}", f"trainer.rollout_data_dir={work / 'dump'}",
    ]
    return run_recipe("cpu/vault_sdar", overrides, work, f"{arm}_seed{seed}")


def run(a: argparse.Namespace) -> None:
    raw, work = Path(a.raw_dir), Path(a.work).resolve()
    data = work / "data"
    build_data(a, data)
    pin_settings(raw, settings_of(a))
    tasks = eval_tasks(data, a.eval_split)
    if not (raw / INITIAL / "run.json").exists():
        print("initial: evaluating the warm start", flush=True)
        t0 = time.perf_counter()
        temperatures = (1.0, *(float(t) for t in a.baseline_temperatures.split(",") if t))
        records = evaluate_model(a, Path(a.warmstart), tasks, INITIAL, 0, temperatures)
        if a.ood:
            records += evaluate_model(a, Path(a.warmstart), eval_tasks(data, "ood"), INITIAL, 0, split="ood")
        write_run(raw / INITIAL, [], records, {"run": INITIAL, "eval_s": round(time.perf_counter() - t0, 1),
                                                "settings": settings_of(a), **versions()})
        if a.commit:
            commit([raw / INITIAL, raw / "settings.json"], f"vault experiment: warm start evaluated (raw, {raw})")
    for seed in (int(s) for s in a.seeds.split(",") if s):
        for arm in (x for x in a.arms.split(",") if x):
            if arm not in ARMS:
                raise SystemExit(f"unknown arm {arm}; known: {sorted(ARMS)}")
            name = f"{arm}_seed{seed}"
            if (raw / name / "run.json").exists():
                print(f"{name}: done before, skipped", flush=True)
                continue
            run_work = work / raw.name / name
            pin_settings(run_work, settings_of(a), "{folder} was started under other settings: {differ}")
            print(f"{name}: training", flush=True)
            walls = train(a, arm, seed, data, run_work)
            rows = kept_metrics(run_work, KEEP)
            if [r["step"] for r in rows] != list(range(1, a.steps + 1)):
                raise SystemExit(f"{name}: metrics hold steps {[r['step'] for r in rows]}, not 1..{a.steps}")
            t0 = time.perf_counter()
            records = []
            for checkpoint, step in (("mid", a.steps // 2), ("final", a.steps)):
                model = run_work / "checkpoints" / f"global_step_{step}" / "actor" / "huggingface"
                records += evaluate_model(a, model, tasks, checkpoint, seed)
            if a.ood:  # the longer tasks: final checkpoint only
                records += evaluate_model(a, model, eval_tasks(data, "ood"), "final", seed, split="ood")
            info = {"run": name, "arm": arm, "seed": seed, "overrides": arm_overrides(a, arm),
                    "train_wall_s": round(sum(walls), 1), "train_starts": len(walls),
                    "eval_s": round(time.perf_counter() - t0, 1), "settings": settings_of(a), **versions()}
            write_run(raw / name, rows, records, info)
            print(f"{name}: done ({sum(walls):.0f} s training)", flush=True)
            if a.commit:
                commit([raw / name], f"vault experiment: {name} (raw, {raw})")


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.command == "run":
        run(a)
        return 0
    if a.command == "coef":
        from verl_sdar.reports.experiment import read_jsonl
        from verl_sdar.reports.vault import coefficient

        train = Path(a.raw_dir) / "sdar_seed100" / "train.jsonl"
        if not train.exists():
            raise SystemExit(f"{train} does not exist: run the 2-step SDAR run first (see this script's docstring)")
        result = coefficient(read_jsonl(train))
        (Path(a.raw_dir) / "coefficient.json").write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result, indent=1))
        return 0
    if a.command == "report":
        from verl_sdar.reports.vault_page import report

        print(report(Path(a.raw_dir), Path(a.doc), a.planned_seeds, interim=a.interim,
                     pilot=Path(a.pilot_dir) if a.pilot_dir else None))
        return 0
    if a.command == "signs":
        from verl_sdar.reports.vault import sign_page

        text = sign_page(Path(a.work) / Path(a.raw_dir).name)
        (Path(a.raw_dir) / "sign_following.md").write_text(text)
        print(text)
        return 0
    from verl_sdar.reports.vault import gate_page

    text = gate_page(Path(a.raw_dir))
    (Path(a.raw_dir) / "gate.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
