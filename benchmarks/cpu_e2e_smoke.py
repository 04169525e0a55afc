"""CPU end-to-end smoke run of verl's ``main_ppo`` with the ``hf`` rollout backend (not a test).

Builds the tiny model and two tiny GSM8K-style parquet files, then runs GRPO through verl's real
pipeline (Ray, TransferQueue, FSDP2 on gloo, agent-loop rollouts):

1. ``train``: 2 steps, validation before training and after each step, a checkpoint after each step;
2. ``resume``: the same run with ``total_training_steps=3``; it must resume from step 2 and run
   only step 3.

Checks: exit status, which steps trained, validation metrics, checkpoints, and that the rollout
server follows the actor's weights: the learning rate is large and the reward varies between
samples, so a server that missed a weight sync samples with log-probs far from the actor's
(``rollout_corr/log_ppl_abs_diff`` ~0.14 with syncing disabled, ~0.01 with it).

Each run takes 1.5-3 minutes on 2 cores; they run one after the other. Exit status 0 when every
check passed. Two ways to pass the CPU settings:

    python benchmarks/cpu_e2e_smoke.py                 # trainer.device=cpu + the Hydra callback
                                                       # verl_sdar.cpu.defaults.CPUDefaultsCallback
    python benchmarks/cpu_e2e_smoke.py --explicit      # the CPU settings spelled out instead
    python benchmarks/cpu_e2e_smoke.py --workers 2     # two training workers = two rollout replicas
    python benchmarks/cpu_e2e_smoke.py KEY=VALUE ...   # extra Hydra overrides (last one wins)

Both run ``python -m verl.trainer.main_ppo``; the exact command lines are printed.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATA_SOURCE = "openai/gsm8k"


def distinct_char_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    """Reward = share of distinct characters in the response: differs between almost any two samples,
    so every GRPO group has non-zero advantages and the weights (and the rollout's copy) really
    change at every step. (verl's own gsm8k reward works offline too, but scores 0 for a random model.)"""
    return len(set(solution_str)) / max(len(solution_str), 1)


CPU_DEFAULTS_CALLBACK = "verl_sdar.cpu.defaults.CPUDefaultsCallback"
EXPLICIT_CPU_FLAGS = [
    "trainer.device=cpu",
    "ray_kwargs.ray_init.num_cpus=32",
    "+ray_kwargs.ray_init.num_gpus={workers}",
    "actor_rollout_ref.actor.strategy=fsdp2",
    "actor_rollout_ref.ref.strategy=fsdp2",
    "+actor_rollout_ref.model.override_config.attn_implementation=sdpa",
    "actor_rollout_ref.rollout.name=hf",
    "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
    "actor_rollout_ref.rollout.agent.num_workers=1",
    "reward.num_workers=1",
    "data.dataloader_num_workers=0",
]


def make_dataset(out: Path, n: int, seed: int, split: str) -> Path:
    import random

    import pandas as pd

    rng = random.Random(f"{seed}-{split}")
    rows = []
    for index in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        rows.append(
            {
                "data_source": DATA_SOURCE,
                "prompt": [{"role": "user", "content": f"What is {a} + {b}? Put the answer after ####."}],
                "ability": "math",
                "reward_model": {"style": "rule", "ground_truth": str(a + b)},
                "extra_info": {"index": index, "split": split},
            }
        )
    path = out / f"{split}.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def overrides(work: Path, workers: int, steps: int, explicit: bool) -> list[str]:
    common = [
        "algorithm.adv_estimator=grpo",
        f"data.train_files={work / 'train.parquet'}",
        f"data.val_files={work / 'val.parquet'}",
        "data.train_batch_size=4",
        "data.val_batch_size=8",
        "data.max_prompt_length=64",
        "data.max_response_length=16",
        f"actor_rollout_ref.model.path={work / 'tiny-model'}",
        "actor_rollout_ref.actor.optim.lr=5e-2",  # big steps: a stale rollout model would show
        "actor_rollout_ref.actor.ppo_mini_batch_size=4",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.actor.use_kl_loss=True",
        "actor_rollout_ref.rollout.n=2",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4",
        f"trainer.n_gpus_per_node={workers}",
        "trainer.logger=[console]",
        "trainer.project_name=cpu_smoke",
        f"trainer.experiment_name=workers{workers}",
        f"trainer.default_local_dir={work / f'ckpt-workers{workers}'}",
        f"trainer.total_training_steps={steps}",
        "trainer.val_before_train=True",
        "trainer.test_freq=1",
        "trainer.save_freq=1",
        f"reward.custom_reward_function.path={Path(__file__).resolve()}",
        "reward.custom_reward_function.name=distinct_char_score",
    ]
    if explicit:
        return [*common, *(flag.format(workers=workers) for flag in EXPLICIT_CPU_FLAGS)]
    return [*common, "trainer.device=cpu", f"+hydra.callbacks.cpu_defaults._target_={CPU_DEFAULTS_CALLBACK}"]


def run(cmd: list[str], log: Path, timeout_s: int) -> tuple[int, str, float]:
    print("$ " + shlex.join(cmd), flush=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    start = time.time()
    with log.open("w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout_s, cwd=REPO)
    elapsed = time.time() - start
    text = log.read_text(errors="replace")
    print(f"  rc={proc.returncode} wall={elapsed:.0f}s log={log}", flush=True)
    return proc.returncode, text, elapsed


def step_metrics(text: str) -> dict[int, dict[str, str]]:
    """Console-logger lines ``step:N - key:value - ...`` as {N: {key: value}}."""
    steps: dict[int, dict[str, str]] = {}
    for match in re.finditer(r"step:(\d+) - (.*)", text):
        fields = dict(kv.split(":", 1) for kv in match.group(2).split(" - ") if ":" in kv)
        steps.setdefault(int(match.group(1)), {}).update(fields)
    return steps


def trained_steps(steps: dict[int, dict[str, str]]) -> list[int]:
    """Steps that ran an actor update (validation-only lines have no actor metrics)."""
    return sorted(step for step, metrics in steps.items() if any(k.startswith("actor/") for k in metrics))


def check(name: str, ok: bool, detail: str = "") -> bool:
    print(f"  [{'ok' if ok else 'FAIL'}] {name}{': ' + detail if detail else ''}", flush=True)
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=REPO / ".work" / "cpu_smoke")
    parser.add_argument("--workers", type=int, default=1, help="training workers = hf rollout replicas")
    parser.add_argument("--explicit", action="store_true", help="spell out the CPU flags on the command line")
    parser.add_argument("--no-resume", action="store_true", help="skip the resume run")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for both runs (KEY=VALUE)")
    args = parser.parse_args()

    from verl_sdar.tiny_model import build_tiny_model

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    build_tiny_model(work / "tiny-model")
    make_dataset(work, 16, 0, "train")
    make_dataset(work, 8, 0, "val")
    ckpt = work / f"ckpt-workers{args.workers}"
    subprocess.run(["rm", "-rf", str(ckpt)], check=True)

    def command(steps: int) -> list[str]:
        hydra_args = overrides(work, args.workers, steps, args.explicit) + args.overrides
        return [sys.executable, "-m", "verl.trainer.main_ppo", *hydra_args]

    ok = True
    rc, text, _ = run(command(2), work / f"train-workers{args.workers}.log", args.timeout)
    steps = step_metrics(text)
    ok &= check("train run exit status 0", rc == 0, f"rc={rc}")
    ok &= check("trained steps 1 and 2", trained_steps(steps) == [1, 2], f"trained={trained_steps(steps)}")
    val_steps = [s for s, m in steps.items() if any(k.startswith("val-") for k in m)]
    ok &= check("validation metrics logged", bool(val_steps), f"at steps {sorted(val_steps)}")
    grad_norms = [float(steps[s].get("actor/grad_norm", 0)) for s in trained_steps(steps)]
    ok &= check("actor weights changed", any(g > 0 for g in grad_norms), f"grad_norm={grad_norms}")
    for step in trained_steps(steps):
        # |log-ppl(rollout log-probs) - log-ppl(actor's recomputed log-probs)|: bf16 noise when the
        # rollout server holds the actor's current weights, large after an update it did not receive
        diff = float(steps[step].get("rollout_corr/log_ppl_abs_diff", "nan"))
        ok &= check(f"rollout and actor agree at step {step}", diff < 0.05, f"log_ppl_abs_diff={diff:.4f}")
    ok &= check("checkpoint global_step_2 saved", (ckpt / "global_step_2").is_dir())

    if not args.no_resume:
        rc, text, _ = run(command(3), work / f"resume-workers{args.workers}.log", args.timeout)
        steps = step_metrics(text)
        ok &= check("resume run exit status 0", rc == 0, f"rc={rc}")
        ok &= check("resume trained only step 3", trained_steps(steps) == [3], f"trained={trained_steps(steps)}")
        ok &= check("checkpoint global_step_3 saved", (ckpt / "global_step_3").is_dir())
    print("ALL OK" if ok else "SOME CHECKS FAILED", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
