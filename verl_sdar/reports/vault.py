"""The vault experiment's learning gate (issue #29, docs/experiment_plan.md), from its raw files.

Raw layout (``benchmarks/vault_experiment.py run --raw-dir ROOT``): ``ROOT/initial/eval.jsonl`` (the
warm start: ``greedy`` and ``T=<t>`` plays), ``ROOT/<arm>_seed<k>/{train.jsonl, eval.jsonl,
run.json}`` per finished run (checkpoints ``mid`` and ``final``).

The gate, for every GRPO seed (all four must hold in every seed for "RL learns"):

1. **gain**: final success at T = 1 (mean over the ``k`` plays of every task) minus the warm
   start's at T = 1 is at least ``MIN_GAIN`` (0.10);
2. **greedy**: final greedy success above the warm start's greedy success;
3. **beyond temperature**: final success at T = 1 above the warm start's best success over every
   decoding it was evaluated with (greedy and each temperature): the gain is not what re-tuning
   the warm start's temperature gives;
4. **mixed groups**: at least ``MIN_MIXED`` (0.30) of the groups of the first ``EARLY_STEPS`` (5)
   training steps are mixed (``group/mixed_reward_share`` averaged over those steps).

The coefficient rule (the plan's pilot, step 2), from a short SDAR run's ``train.jsonl``:
:func:`coefficient`. The number of seeds (step 3), from the pilot's spread of the primary metric
(:func:`primary`): :func:`seeds_rule`.

Pure Python (no torch, no verl).
"""

from __future__ import annotations

import math
import re
import statistics
from pathlib import Path

from verl_sdar.reports.experiment import read_jsonl
from verl_sdar.reports.stats import minimum_detectable_effect

INITIAL = "initial"
PAPER_COEF = 0.01
COEF_LADDER = (0.03, 0.1, 0.3, 1.0)
MIN_TERM_SHARE = 0.05
MIN_GAIN = 0.10
MIN_MIXED = 0.30
EARLY_STEPS = 5
SEEDS = 6
MORE_SEEDS = 8
MAX_MDE = 0.10


def _evaluation_split(records: list[dict]) -> list[dict]:
    """The records of the evaluation split (the ``ood`` ones are a secondary split)."""
    return [r for r in records if r.get("split") != "ood"]


def success(records: list[dict], checkpoint: str, decoding: str) -> float:
    """Share of won episodes among ``records`` of that checkpoint and decoding (every play) on the
    evaluation split."""
    won = [r["won"] for r in _evaluation_split(records) if r["checkpoint"] == checkpoint and r["decoding"] == decoding]
    if not won:
        raise ValueError(f"no evaluation episodes for checkpoint {checkpoint!r}, decoding {decoding!r}")
    return sum(won) / len(won)


def decision_rates(records: list[dict], checkpoint: str, decoding: str) -> dict[str, float]:
    """Right choices per decision kind (``key``, ``sign``, ``note``, ``hidden``) where it was made."""
    made: dict[str, list[bool]] = {}
    for r in _evaluation_split(records):
        if r["checkpoint"] == checkpoint and r["decoding"] == decoding:
            for kind, right in r["decisions"]:
                made.setdefault(kind, []).append(bool(right))
    return {kind: sum(v) / len(v) for kind, v in sorted(made.items())}


def primary(records: list[dict]) -> float:
    """The plan's primary metric of one run: the mean of its mid and final success at T = 1."""
    return (success(records, "mid", "T=1") + success(records, "final", "T=1")) / 2


def seeds_rule(values: list[float], sims: int = 1000) -> dict:
    """The plan's seed count from the pilot seeds' primary metric ``values``: ``sd_1`` their sample
    standard deviation, ``sd_D = sqrt(2) sd_1`` (a paired difference of two independent arms), the
    minimum detectable effect of the sign-flip test with ``SEEDS`` pairs (80% power, alpha 0.05);
    ``SEEDS`` if it is at most ``MAX_MDE``, else ``MORE_SEEDS`` (with that count's effect too)."""
    if len(values) < 2:
        raise ValueError(f"the spread needs 2 pilot seeds at least, got {len(values)}")
    sd_1 = statistics.stdev(values)
    sd_d = math.sqrt(2) * sd_1
    mde = {n: minimum_detectable_effect(sd_d, n, sims=sims) for n in (SEEDS, MORE_SEEDS)}
    seeds = SEEDS if mde[SEEDS] <= MAX_MDE else MORE_SEEDS
    return {"values": values, "sd_1": sd_1, "sd_D": sd_d, "mde": mde, "seeds": seeds}


def seed_gate(initial: list[dict], records: list[dict], train: list[dict]) -> dict:
    """The four criteria (module docstring) for one GRPO run, with the figures behind each."""
    decodings = sorted({r["decoding"] for r in initial})
    start = {d: success(initial, INITIAL, d) for d in decodings}
    final_t1, final_greedy = success(records, "final", "T=1"), success(records, "final", "greedy")
    early = [row["group/mixed_reward_share"] for row in train if row["step"] <= EARLY_STEPS]
    mixed = sum(early) / len(early) if early else 0.0
    best_start = max(start.values())
    return {
        "initial": start, "mid_T=1": success(records, "mid", "T=1"), "final_T=1": final_t1,
        "primary": primary(records),
        "final_greedy": final_greedy, "early_mixed_share": mixed,
        "early_identical_share": (sum(row.get("group/identical_share", 0.0) for row in train
                                      if row["step"] <= EARLY_STEPS) / len(early)) if early else None,
        "gain": final_t1 - start["T=1"],
        "passed": {"gain": final_t1 - start["T=1"] >= MIN_GAIN - 1e-12,
                   "greedy": final_greedy > start["greedy"],
                   "beyond_temperature": final_t1 > best_start,
                   "mixed_groups": mixed >= MIN_MIXED},
    }


def gate(root: Path, arm: str = "grpo") -> dict:
    """Every finished ``arm`` run under ``root``: its :func:`seed_gate`; ``passed`` iff every
    criterion holds in every seed (and at least two seeds finished)."""
    root = Path(root)
    initial = read_jsonl(root / INITIAL / "eval.jsonl")
    seeds = {}
    for folder in sorted(root.glob(f"{arm}_seed*")):
        if (folder / "run.json").exists():
            seeds[folder.name] = seed_gate(initial, read_jsonl(folder / "eval.jsonl"),
                                           read_jsonl(folder / "train.jsonl"))
    passed = len(seeds) >= 2 and all(all(s["passed"].values()) for s in seeds.values())
    return {"root": str(root), "arm": arm, "seeds": seeds, "passed": passed}


def gate_page(root: Path, sims: int = 1000) -> str:
    """The gate as a markdown table (one row per seed), then the seed rule (:func:`seeds_rule`, its
    power simulated ``sims`` times per effect) when two seeds or more finished."""
    g = gate(root)
    lines = [f"# Learning gate: {g['root']} ({g['arm']})", "",
             "| run | warm start T=1 | best warm-start decoding | mid T=1 | final T=1 | gain | greedy: start -> final "
             "| early mixed share | early identical share | criteria passed |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for name, s in g["seeds"].items():
        best = max(s["initial"], key=s["initial"].get)
        ok = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in s["passed"].items())
        lines.append(f"| {name} | {s['initial']['T=1']:.3f} | {s['initial'][best]:.3f} ({best}) "
                     f"| {s['mid_T=1']:.3f} | {s['final_T=1']:.3f} | {s['gain']:+.3f} "
                     f"| {s['initial']['greedy']:.3f} -> {s['final_greedy']:.3f} | {s['early_mixed_share']:.2f} "
                     f"| {s['early_identical_share']:.2f} | {ok} |")
    lines += ["", f"**Gate {'passed' if g['passed'] else 'not passed'}** (every criterion in every seed, 2 seeds "
              "at least)."]
    if len(g["seeds"]) >= 2:
        rule = seeds_rule([s["primary"] for s in g["seeds"].values()], sims=sims)
        lines += ["", "Spread (the plan's seed rule): primary metric (mean of mid and final T=1) "
                  + ", ".join(f"{v:.3f}" for v in rule["values"])
                  + f"; sd_1 {rule['sd_1']:.3f}, sd_D {rule['sd_D']:.3f}; minimum detectable effect (80% power, "
                  f"alpha 0.05) with {SEEDS} seeds {rule['mde'][SEEDS]:.3f}, with {MORE_SEEDS} "
                  f"{rule['mde'][MORE_SEEDS]:.3f}: **{rule['seeds']} seeds per arm**."]
    return "\n".join(lines) + "\n"


def coefficient(train: list[dict], coef: float = PAPER_COEF) -> dict:
    """The plan's rule: ``r`` = the mean over steps of ``term / pg`` (``actor/sdar/term_logprob_grad_norm``
    over ``actor/sdar/pg_logprob_grad_norm``, the run made at ``coef``); the coefficient is 0.01 if
    ``r`` at 0.01 is at least ``MIN_TERM_SHARE``, else the smallest of ``COEF_LADDER`` whose
    projected share ``r x c / coef`` (the term is linear in its coefficient) is, 1.0 if none."""
    ratios = [row["actor/sdar/term_logprob_grad_norm"] / row["actor/sdar/pg_logprob_grad_norm"] for row in train
              if row.get("actor/sdar/pg_logprob_grad_norm")]
    if not ratios:
        raise ValueError("no step logs both actor/sdar/term_logprob_grad_norm and a non-zero pg norm")
    share = sum(ratios) / len(ratios) * PAPER_COEF / coef  # the share the paper's 0.01 gives
    chosen = PAPER_COEF if share >= MIN_TERM_SHARE else next(
        (c for c in COEF_LADDER if share * c / PAPER_COEF >= MIN_TERM_SHARE), COEF_LADDER[-1])
    return {"share_at_0.01": share, "steps": len(ratios), "coef": chosen,
            "share_at_chosen": share * chosen / PAPER_COEF}


SIGN = re.compile(r"A sign points (left|right)\.")
WAY = re.compile(r"<action>\s*go (left|right)\s*</action>")
OBSERVATION = "What you observe now"


def sign_following(rows: list[dict]) -> dict[str, float | None]:
    """From one step of verl's rollout dump (rows with the turn's prompt ``input`` and the model's
    ``output``): per direction a sign points, the share of the turns at a signed fork whose action
    goes that way (``None`` where the step met no such sign). The turn's fork is the last
    observation in the prompt; an output with no valid ``go`` action counts as not following."""
    counts = {"left": [0, 0], "right": [0, 0]}
    for row in rows:
        prompt = row["input"]
        sign = SIGN.search(prompt, max(prompt.rfind(OBSERVATION), 0))
        if sign is None:
            continue
        way = WAY.search(row["output"])
        counts[sign.group(1)][0] += bool(way and way.group(1) == sign.group(1))
        counts[sign.group(1)][1] += 1
    return {d: (right / n if n else None) for d, (right, n) in counts.items()}


def sign_page(work: Path, threshold: float = 0.9) -> str:
    """Per run under ``work`` (``<run>/dump/<step>.jsonl``, verl's ``trainer.rollout_data_dir``): the
    lowest per-step share of signs followed for each direction and the steps where a direction fell
    below ``threshold``; the per-step shares of those runs."""
    lines = ["# Signs followed in training, by direction (from verl's rollout dumps)", "",
             f"Generated by `python benchmarks/vault_experiment.py signs` from the dumps under `{work}`. Per training "
             "step, the share "
             "of turns at a signed fork whose action goes the way the sign points, separately for signs pointing "
             "left and right (a student that reads its observation follows them all). Only runs whose dump is "
             "still in the working folder.", "",
             "| run | left signs: lowest step share (step) | right signs: lowest step share (step) "
             f"| steps with a direction below {threshold} |", "|---|---:|---:|---|"]
    low_runs = {}
    for folder in sorted(Path(work).glob("*/dump")):
        steps = sorted(int(p.stem) for p in folder.glob("*.jsonl") if p.stem.isdigit())
        shares = {s: sign_following(read_jsonl(folder / f"{s}.jsonl")) for s in steps}
        cells = []
        for d in ("left", "right"):
            seen = {s: v[d] for s, v in shares.items() if v[d] is not None}
            low = min(seen, key=seen.get) if seen else None
            cells.append(f"{seen[low]:.2f} ({low})" if low is not None else "-")
        below = [s for s, v in shares.items() if any(x is not None and x < threshold for x in v.values())]
        if below:
            low_runs[folder.parent.name] = shares
        lines.append(f"| {folder.parent.name} | {cells[0]} | {cells[1]} | {', '.join(map(str, below)) or '-'} |")
    for name, shares in low_runs.items():
        lines += ["", f"{name}, per step (left / right): " + "; ".join(
            f"{s}: " + " / ".join("-" if v[d] is None else f"{v[d]:.2f}" for d in ("left", "right"))
            for s, v in shares.items())]
    return "\n".join(lines) + "\n"
