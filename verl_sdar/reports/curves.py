"""The learning-curve report of ``benchmarks/curves.py``: statistics over the raw run files, the
table, the computed statements, the plots and ``docs/sweep_4step/results.md`` (the earlier 4-step
sweep, superseded by the pre-registered experiment of ``verl_sdar.reports.experiment``); and the sweep's command line,
whose settings (``settings.json`` next to the raw files) the report quotes.

The sweep itself (one ``main_ppo`` run per method and seed) stays in ``benchmarks/curves.py``; this
module is pure Python over JSON-lines files (matplotlib only for the plots) and imports no verl.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from .settings import pin_settings

METHODS = {  # name -> algorithm group (and overrides)
    "grpo": ["algorithm=grpo"],
    "grpo_opsd": ["algorithm=grpo_opsd"],      # beta 0: constant gate 0.5
    "sdar": ["algorithm=sdar"],                # beta 5
    "rlsd": ["algorithm=rlsd"],
    "opsd": ["algorithm=opsd"],
}
INITIAL = "initial"  # raw file of the warm start's own validation (step 0 of every run)


# ----------------------------------------------------------------------------------- analysis
SOURCES = ("alfworld_seen", "alfworld_unseen")
DROP = 0.25        # a success drop: an evaluation this much (absolute) below the previous one
KL_FACTOR = 3.0    # a KL spike: a step whose KL to the reference exceeds 3x the run's median KL ...
KL_FLOOR = 1e-3    # ... and this floor
TRAIN_PANELS = (("sdar/gate_mean", "gate mean"), ("sdar/gate_active_ratio", "gate active ratio (g > 0.5)"),
                ("sdar/gap_mean", "teacher - student log-prob gap"), ("actor/kl_loss", "KL to reference (low_var_kl)"),
                ("actor/entropy", "entropy"), ("episode/success_rate", "training episode success"))


def load_runs(raw_dir: Path) -> dict[str, dict[int, list[dict]]]:
    """``{method: {seed: records}}`` from ``<method>_seed<k>.jsonl`` files, each preceded by the warm
    start's validation (``initial.jsonl``, step 0) when a run has no step-0 record of its own."""
    initial_file = raw_dir / f"{INITIAL}.jsonl"
    initial = [json.loads(line) for line in initial_file.read_text().splitlines()] if initial_file.exists() else []
    runs: dict[str, dict[int, list[dict]]] = {}
    for path in sorted(raw_dir.glob("*_seed*.jsonl")):
        method, seed = path.stem.rsplit("_seed", 1)
        records = [json.loads(line) for line in path.read_text().splitlines()]
        if not any(r["step"] == 0 for r in records):
            records = [{**r, "step": 0} for r in initial] + records
        runs.setdefault(method, {})[int(seed)] = records
    return runs


def series(records: list[dict], key: str) -> dict[int, float]:
    """``{step: value}`` of one metric (steps where it was logged)."""
    return {r["step"]: float(r[key]) for r in records if key in r}


def success_series(records: list[dict], source: str) -> dict[int, float]:
    """Validation success (share of episodes won) per evaluated step for one data source."""
    return series(records, f"val-core/{source}/episode_success")


def band(runs: list[dict[int, float]]) -> tuple[list[int], list[float], list[float], list[float]]:
    """Steps present in every run, with the mean, min and max over runs at each."""
    if not runs:
        return [], [], [], []
    steps = sorted(set.intersection(*(set(r) for r in runs)))
    return (steps, [sum(r[s] for r in runs) / len(runs) for s in steps],
            [min(r[s] for r in runs) for s in steps], [max(r[s] for r in runs) for s in steps])


def success_drops(curve: dict[int, float], threshold: float = DROP) -> int:
    """Evaluations that fell at least ``threshold`` below the previous evaluation."""
    values = [curve[s] for s in sorted(curve)]
    return sum(1 for a, b in zip(values, values[1:], strict=False) if a - b >= threshold - 1e-12)


def kl_spikes(kl: dict[int, float], factor: float = KL_FACTOR, floor: float = KL_FLOOR) -> int:
    """Steps whose KL exceeds ``factor`` x the run's median KL and ``floor``."""
    import statistics

    if not kl:
        return 0
    median = statistics.median(kl.values())
    return sum(1 for v in kl.values() if v > max(factor * median, floor))


def steps_to_reach(steps: list[int], mean: list[float], target: float) -> int | None:
    """First evaluated step whose (seed-mean) success is at least ``target``; ``None`` if never."""
    return next((s for s, m in zip(steps, mean, strict=True) if m >= target - 1e-12), None)


def sample_std(values: list[float]) -> float:
    """Sample standard deviation over seeds (0 for a single seed)."""
    import statistics

    return statistics.stdev(values) if len(values) > 1 else 0.0


def mean_std(values: list[float]) -> str:
    import statistics

    return f"{statistics.mean(values):.3f} ± {sample_std(values):.3f}" if values else "-"


def summarise(runs: dict[str, dict[int, list[dict]]]) -> list[dict]:
    """One row per (method, split): initial / final / best success over seeds, steps to GRPO's final
    success (seed-mean curves), success drops and KL spikes summed over seeds."""
    rows = []
    grpo_final = {}
    for source in SOURCES:
        curves = [success_series(r, source) for r in runs.get("grpo", {}).values()]
        steps, mean, _, _ = band([c for c in curves if c])
        grpo_final[source] = mean[-1] if mean else None
    for method in [m for m in METHODS if m in runs] + sorted(set(runs) - set(METHODS)):
        for source in SOURCES:
            curves = [c for c in (success_series(r, source) for r in runs[method].values()) if c]
            steps, mean, _, _ = band(curves)
            target = grpo_final[source]
            rows.append({
                "method": method, "split": source.split("_", 1)[1], "seeds": len(curves),
                "initial": [c[min(c)] for c in curves], "final": [c[max(c)] for c in curves],
                "best": [max(c.values()) for c in curves],
                "steps_to_grpo_final": steps_to_reach(steps, mean, target) if target is not None else None,
                "success_drops": sum(success_drops(c) for c in curves),
                "kl_spikes": sum(kl_spikes(series(r, "actor/kl_loss")) for r in runs[method].values()),
            })
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| method | split | seeds | initial | final | best | steps to GRPO's final | success drops | KL spikes |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        reach = "-" if r["steps_to_grpo_final"] is None else str(r["steps_to_grpo_final"])
        lines.append(f"| {r['method']} | {r['split']} | {r['seeds']} | {mean_std(r['initial'])} | "
                     f"{mean_std(r['final'])} | {mean_std(r['best'])} | {reach} | {r['success_drops']} | "
                     f"{r['kl_spikes']} |")
    return "\n".join(lines) + "\n"


def verdict(rows: list[dict]) -> list[str]:
    """Plain statements computed from the table: SDAR vs GRPO, GRPO+OPSD's stability."""
    import statistics

    by = {(r["method"], r["split"]): r for r in rows}
    out = []
    for split in ("seen", "unseen"):
        sdar, grpo = by.get(("sdar", split)), by.get(("grpo", split))
        if not (sdar and grpo and sdar["final"] and grpo["final"]):
            continue
        diff = statistics.mean(sdar["final"]) - statistics.mean(grpo["final"])
        spread = max(sample_std(sdar["final"]), sample_std(grpo["final"]))
        means = f"({statistics.mean(sdar['final']):.3f} vs {statistics.mean(grpo['final']):.3f})"
        if abs(diff) < 1e-9:
            out.append(f"- eval-{split}: SDAR's final success equals GRPO's {means}.")
        else:
            word = "higher" if diff > 0 else "lower"
            size = "larger than" if abs(diff) > spread else "within"
            out.append(f"- eval-{split}: SDAR's final success is {word} than GRPO's by {abs(diff):.3f} {means}; the "
                       f"difference is {size} the larger seed standard deviation ({spread:.3f}).")
    for split in ("seen", "unseen"):
        moved = [(r["method"], statistics.mean(r["final"]) - statistics.mean(r["initial"]))
                 for r in rows if r["split"] == split and r["final"]]
        if moved:
            out.append(f"- eval-{split}, final minus warm start (seed means): "
                       + ", ".join(f"{m} {d:+.3f}" for m, d in moved) + ".")
    naive = [r for r in rows if r["method"] == "grpo_opsd"]
    base = [r for r in rows if r["method"] == "grpo"]
    if naive and base:
        out.append(f"- GRPO+OPSD (beta 0): {sum(r['success_drops'] for r in naive)} success drops "
                   f"(>= {DROP} between evaluations) and {naive[0]['kl_spikes']} KL spikes over its seeds, "
                   f"against GRPO's {sum(r['success_drops'] for r in base)} and {base[0]['kl_spikes']}.")
    return out


def plot(runs: dict[str, dict[int, list[dict]]], out_dir: Path) -> list[str]:
    """success.png (per split) and training.png (gate, gap, KL, entropy, training success); seed bands = min..max."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    methods = [m for m in METHODS if m in runs]
    colours = dict(zip(METHODS, ("tab:gray", "tab:orange", "tab:blue", "tab:green", "tab:red"), strict=False))
    written = []

    def draw(ax, curves, method):
        steps, mean, lo, hi = band([c for c in curves if c])
        if steps:
            ax.plot(steps, mean, marker="o", ms=3, color=colours.get(method), label=f"{method} ({len(curves)} seeds)")
            ax.fill_between(steps, lo, hi, color=colours.get(method), alpha=0.15)

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, source in zip(axes, SOURCES, strict=True):
        for method in methods:
            draw(ax, [success_series(r, source) for r in runs[method].values()], method)
        ax.set_title(f"eval-{source.split('_', 1)[1]} success (greedy)")
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("share of games won")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "success.png", dpi=110)
    written.append("success.png")
    plt.close(fig)

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    for ax, (key, title) in zip(axes.flat, TRAIN_PANELS, strict=True):
        for method in methods:
            draw(ax, [series(r, key) for r in runs[method].values()], method)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes.flat[3].legend(fontsize=8)  # the KL panel has every method
    fig.tight_layout()
    fig.savefig(out_dir / "training.png", dpi=110)
    written.append("training.png")
    plt.close(fig)
    return written


def report(raw_dir: Path, doc: Path) -> str:
    """docs/results.md with the table, the plots (next to the raw files) and computed statements."""
    runs = load_runs(raw_dir)
    if not runs:
        raise SystemExit(f"no raw run files under {raw_dir}; run the sweep first")
    settings_file = raw_dir / "settings.json"
    settings = json.loads(settings_file.read_text()) if settings_file.exists() else {}
    rows = summarise(runs)
    text_table = table(rows)
    (raw_dir.parent / "table.md").write_text(text_table)
    (raw_dir.parent / "summary.json").write_text(json.dumps(rows, indent=1))
    pictures = plot(runs, raw_dir.parent)
    walls_file = raw_dir / "wall_seconds.json"
    walls = sorted(json.loads(walls_file.read_text()).values()) if walls_file.exists() else []
    rel = os.path.relpath(raw_dir.parent, doc.parent)
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in settings.items() if k not in ("report",))
    lines = [
        "# The earlier 4-step sweep: learning curves on offline ALFWorld (tiny model, CPU)\n",
        "*Superseded by the pre-registered experiment (`docs/experiment_plan_alfworld.md`, "
        "its page `docs/results.md`); "
        "kept as it was run. By issue #14's estimate its design could not detect less than about 27 points.*\n",
        "Generated by `python benchmarks/curves.py --report` from the raw per-run files in "
        f"`{os.path.relpath(raw_dir, doc.parent)}/` (one JSON line per step; re-plot from them).\n",
        "## What ran\n",
        f"- runs: `python benchmarks/curves.py {flags}` -- one `python -m verl.trainer.main_ppo` per (method, seed) "
        "on CPU, recipe `recipes/alfworld/tiny_cpu_sdar.yaml` + the script's overrides; warm start from "
        "`benchmarks/warmstart.py` (docs/warmstart.md)."
        + (f" {len(walls)} main_ppo runs (one per method and seed, plus the shared step-0 validation), "
           f"{sum(walls) / 60:.0f} min of wall time in all (median {walls[len(walls) // 2]:.0f} s per run; "
           "2 CPU cores, one run at a time)." if walls else ""),
        "- methods: " + ", ".join(f"{m} (`{' '.join(METHODS[m])}`)" for m in METHODS if m in runs) + "; the teacher's "
        "privileged context is the game's expert route (`extra_info.privileged`).",
        "- success = share of validation games won, greedy decoding, on eval-seen and eval-unseen (task types "
        + (f"round-robin, {settings['n_val']} games per split, so one game = {1 / settings['n_val']:.3f}); seeds"
           if settings.get("n_val") else "round-robin); seeds")
        + " change the training data order, rollouts and the environment seed; validation at "
        "step 0 is the warm start itself, measured once (`initial.jsonl`, a `trainer.val_only=true` run) and "
        "shared by every curve.",
        f"- table: mean ± sample std over seeds; success drop = an evaluation >= {DROP} below the previous one; "
        f"KL spike = a step whose `actor/kl_loss` > {KL_FACTOR} x the run's median and > {KL_FLOOR}; "
        "steps to GRPO's final = first evaluated step whose seed-mean success reaches GRPO's seed-mean final "
        "success (0 = the warm start already does; '-' = never).\n",
        "## Result\n",
        *verdict(rows),
        "",
        text_table,
        *[f"![{p}]({rel}/{p})\n" for p in pictures],
        "Bands: min..max over seeds; lines: seed mean.\n",
        "## Caveats\n",
        CAVEATS,
    ]
    discussion = raw_dir.parent / "discussion.md"  # hand-written reading of the figures, kept across regenerations
    if discussion.exists():
        lines += ["", f"## Discussion (hand-written: `{os.path.relpath(discussion, doc.parent)}`)\n",
                  discussion.read_text().strip()]
    text = "\n".join(lines) + "\n"
    doc.write_text(text)
    return text


CAVEATS = """\
This is the mechanism at toy scale, not a replication of the paper's numbers: a 1.5M-parameter
Qwen2-shaped model trained from scratch on 360 generated games, a handful of RL steps with small groups, and a
few validation games per split, so one game is a large step in success and seed spread is wide.
The privileged context is the game's expert route, not the paper's retrieved skills (our generic
skill text did not change what the warm start does; see docs/warmstart.md). Method settings are
the paper's (SDAR coefficient 0.01, beta 5; KL 0.01 low_var_kl; clip 0.2), not tuned here."""


# ----------------------------------------------------------------------------------- command line
# Options that are not settings of the experiment (where things go, what to run now).
NOT_SETTINGS = ("methods", "seeds", "work", "raw_dir", "doc", "report")


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The options of ``python benchmarks/curves.py`` (defaults: the settings of the published run)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--warmstart", default=".work/warmstart4")
    p.add_argument("--work", default=".work/curves")
    p.add_argument("--raw-dir", default="docs/sweep_4step/raw")
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--test-freq", type=int, default=2)
    p.add_argument("--games-per-step", type=int, default=2)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--max-env-steps", type=int, default=8)
    p.add_argument("--n-val", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--doc", default="docs/sweep_4step/results.md")
    p.add_argument("--report", action="store_true", help="only write --doc, its plots and table from the raw files")
    return p.parse_args(argv)


def start_sweep(a: argparse.Namespace) -> tuple[list[str], list[int]]:
    """Check ``--methods``, create ``--raw-dir`` and record the settings there; ``(methods, seeds)``.

    Runs made in parts must share their settings, or the curves would mix different experiments:
    a ``settings.json`` already there with other values is an error (nothing is written then).
    """
    methods = a.methods.split(",")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    seeds = [int(s) for s in a.seeds.split(",")]
    settings = {k: v for k, v in vars(a).items() if k not in NOT_SETTINGS}
    pin_settings(Path(a.raw_dir), settings, "{path} holds other settings (fixed, given): {differ}; use another "
                 "--raw-dir or the same options")
    return methods, seeds
