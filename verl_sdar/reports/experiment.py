"""The results page of the pre-registered experiment (docs/experiment_plan_alfworld.md), from its raw files.

Raw layout (written by ``benchmarks/experiment.py``), one folder per run under the raw folder:
``<arm>_seed<k>/{train.jsonl, eval.jsonl, run.json}`` and ``initial/`` (the warm start's
evaluation). A run counts once its ``run.json`` exists. Everything here is computed from those
files; pure Python (matplotlib only for the plots), no verl.

A hand-written ``notice.md`` next to the raw folders (e.g. a defect found after the runs) comes
right after the title, then the GRPO-group statistics of training (mixed-reward share,
identical-group share, rows with a non-zero advantage: whether the reward could give a gradient at
all). Then the primary test (SDAR minus GRPO, pooled sampled success on valid_unseen,
exact sign-flip test over seeds, with the 95% interval), whatever it says; then the secondary
comparisons, per-task-type success, training curves with bands, gate/gap/KL statistics and wall
times; then the hand-written discussion (``discussion.md`` next to the raw folder), if any.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from verl_sdar.reports.curves import kl_spikes, mean_std, series
from verl_sdar.reports.stats import sign_flip_test, t_interval

INITIAL = "initial"
PRIMARY = ("sdar", "grpo")
SPLITS = ("valid_unseen", "valid_seen")
DECODINGS = ("sampled", "greedy")
TRAIN_PANELS = (("episode/success_rate", "training episode success"), ("actor/kl_loss", "KL to reference"),
                ("sdar/gate_mean", "gate mean"), ("sdar/gap_mean", "teacher - student gap"),
                ("actor/entropy", "entropy"), ("sdar/gate_active_ratio", "gate active ratio"))
GROUP_METRICS = (("group/mixed_reward_share", "mixed-reward groups"), ("group/identical_share", "identical groups"),
                 ("group/nonzero_advantage_rows", "rows with a non-zero advantage"))
PLANNED_SEEDS = 6  # docs/experiment_plan_alfworld.md (8 if its power rule is triggered: an amendment says so)


def read_jsonl(path: Path) -> list[dict]:
    """The JSON lines of ``path`` (``[]`` when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def load_runs(raw: Path) -> dict[str, dict]:
    """``{run name: {"info", "train", "eval"}}`` for every finished run (``run.json`` present)."""
    runs = {}
    for folder in sorted(p for p in raw.iterdir() if p.is_dir()):
        info_file = folder / "run.json"
        if not info_file.exists():
            continue
        runs[folder.name] = {"info": json.loads(info_file.read_text()), "train": read_jsonl(folder / "train.jsonl"),
                             "eval": read_jsonl(folder / "eval.jsonl")}
    return runs


def arm_and_seed(name: str) -> tuple[str, int] | None:
    if "_seed" not in name:
        return None
    arm, seed = name.rsplit("_seed", 1)
    return arm, int(seed)


def by_arm(runs: dict[str, dict]) -> dict[str, dict[int, dict]]:
    out: dict[str, dict[int, dict]] = {}
    for name, run in runs.items():
        parsed = arm_and_seed(name)
        if parsed:
            out.setdefault(parsed[0], {})[parsed[1]] = run
    return out


def success(episodes: list[dict], split: str, decoding: str, task_type: str | None = None) -> float | None:
    """Share of the episodes of one split and decoding (and task type) that were won."""
    won = [e["won"] for e in episodes if e["split"] == split and e["decoding"] == decoding
           and (task_type is None or e["task_type"] == task_type)]
    return sum(won) / len(won) if won else None


def paired(arms: dict[str, dict[int, dict]], a: str, b: str, split: str, decoding: str) -> dict:
    """``D_s = success(a, s) - success(b, s)`` over the seeds both arms finished, with the exact
    sign-flip p value and the 95% t interval of the mean (the plan's primary test for
    ``a, b = sdar, grpo`` on valid_unseen, sampled)."""
    return paired_by(arms, a, b, lambda run: success(run["eval"], split, decoding), split=split, decoding=decoding)


def paired_by(arms: dict[str, dict[int, dict]], a: str, b: str, value: Callable[[dict], float | None],
              **labels: str) -> dict:
    """``D_s = value(run of a, seed s) - value(run of b, seed s)`` over the seeds both arms finished
    (a run whose value is None is left out), with the mean of each arm, the exact sign-flip p value,
    the 95% t interval of the mean difference and the count of positive differences; ``labels``
    (e.g. ``split``, ``decoding``: :func:`describe` names the test by them) are copied in."""
    seeds = sorted(set(arms.get(a, {})) & set(arms.get(b, {})))
    rows = []
    for s in seeds:
        pa, pb = value(arms[a][s]), value(arms[b][s])
        if pa is not None and pb is not None:
            rows.append({"seed": s, a: pa, b: pb, "diff": pa - pb})
    diffs = [r["diff"] for r in rows]
    out = {"a": a, "b": b, **labels, "seeds": [r["seed"] for r in rows], "rows": rows,
           "mean_a": statistics.fmean([r[a] for r in rows]) if rows else None,
           "mean_b": statistics.fmean([r[b] for r in rows]) if rows else None}
    if diffs:
        out["mean_diff"] = statistics.fmean(diffs)
        out["p"] = sign_flip_test(diffs)
        out["ci"] = t_interval(diffs)[1:] if len(diffs) > 1 else (None, None)
        out["positive"] = sum(d > 0 for d in diffs)
    return out


def describe(test: dict) -> str:
    """One line: the mean difference, its interval, the p value and the sign count."""
    if "mean_diff" not in test:
        return f"{test['a']} - {test['b']} ({test['split']}, {test['decoding']}): no paired seeds yet"
    low, high = test["ci"]
    interval = f"95% CI [{low:+.3f}, {high:+.3f}]" if low is not None else "no interval (one seed)"
    n = len(test["seeds"])
    return (f"{test['a']} - {test['b']} ({test['split']}, {test['decoding']}): mean difference "
            f"{test['mean_diff']:+.3f} ({test['mean_a']:.3f} vs {test['mean_b']:.3f}), {interval}, exact sign-flip "
            f"p = {test['p']:.3f} over {n} seeds ({test['positive']} of {n} positive)")


def task_types(episodes: list[dict]) -> list[str]:
    return sorted({e["task_type"] for e in episodes})


def plot(arms: dict[str, dict[int, dict]], out_dir: Path, panels: tuple[tuple[str, str], ...] = TRAIN_PANELS,
         name: str = "experiment_training.png") -> str:
    """``out_dir/name``: one panel per ``(metric, title)`` of ``panels`` (six, in two rows of three),
    the seed mean with a min..max band per arm; returns ``name``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(13, 6.5))
    colour = {arm: f"C{i}" for i, arm in enumerate(sorted(arms))}  # one colour per arm in every panel
    for ax, (key, title) in zip(axes.flat, panels, strict=True):
        for arm in sorted(arms):
            curves = [series(r["train"], key) for r in arms[arm].values()]
            curves = [c for c in curves if c]
            if not curves:
                continue
            steps = sorted(set.intersection(*(set(c) for c in curves)))
            mean = [statistics.fmean(c[s] for c in curves) for s in steps]
            ax.plot(steps, mean, color=colour[arm], label=f"{arm} ({len(curves)} seeds)")
            ax.fill_between(steps, [min(c[s] for c in curves) for s in steps],
                            [max(c[s] for c in curves) for s in steps], color=colour[arm], alpha=0.2)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / name, dpi=110)
    plt.close(fig)
    return name


def step_seconds(run: dict) -> float | None:
    """The run's training steps, summed ``timing_s/step`` (a step repeated after a resume counts
    once; the start-up and the steps a killed start lost are not in it); None if none logged."""
    steps = series(run["train"], "timing_s/step")
    return sum(steps.values()) if steps else None


def notice(raw: Path) -> list[str]:
    """The hand-written ``notice.md`` beside the raw folders, as page lines (none without one)."""
    path = raw / "notice.md"
    return ["## Read this first (hand-written notice)", "", path.read_text().strip(), ""] if path.exists() else []


def group_statistics(arms: dict[str, dict[int, dict]]) -> list[str]:
    """Per arm, the mean over seeds and steps of each GRPO-group metric (docs/method.md)."""
    lines = ["## GRPO groups in training", "",
             "Share of groups whose sessions' outcomes differ (the only groups whose outcome reward gives a "
             "gradient), of groups whose sessions are token-identical, and of rows with a non-zero advantage; "
             "mean over seeds and steps.", ""]
    logged = {arm: [[v for r in runs.values() for v in series(r["train"], key).values()] for key, _ in GROUP_METRICS]
              for arm, runs in sorted(arms.items())}
    if not any(values for columns in logged.values() for values in columns):
        return lines + ["Not logged by these runs (the `group/*` metrics are newer than they are).", ""]
    lines += ["| arm | " + " | ".join(name for _, name in GROUP_METRICS) + " |",
              "|---" * (len(GROUP_METRICS) + 1) + "|"]
    for arm, columns in logged.items():
        lines.append(f"| {arm} | " + " | ".join(f"{statistics.fmean(v):.3f}" if v else "-" for v in columns) + " |")
    return lines + [""]


def status_page(raw: Path, runs: dict[str, dict], pairs: int) -> list[str]:
    """While the sweep runs: what has finished and what it cost, no outcome of either arm."""
    lines = ["# Does SDAR help? The pre-registered comparison on offline ALFWorld (tiny model, CPU)", "",
             f"**In progress: SDAR and GRPO have both finished for {pairs} of the plan's {PLANNED_SEEDS} seeds.** "
             "The plan "
             "([`experiment_plan_alfworld.md`](experiment_plan_alfworld.md)) runs its analysis once, "
             "when all of them are done; until "
             "then this page lists what has finished, not what it scored. Generated by `python "
             f"benchmarks/experiment.py report` from `{raw}`.", "", *notice(raw),
             "| run | training steps (min) | training wall, all starts (min) | starts | evaluation (min) |",
             "|---|---|---|---|---|"]
    for name, run in sorted(runs.items()):
        info = run["info"]
        steps = step_seconds(run)
        steps_min = f"{steps / 60:.1f}" if steps is not None else "-"
        train = f"{info['train_wall_s'] / 60:.1f}" if "train_wall_s" in info else "-"
        lines.append(f"| {name} | {steps_min} | {train} | {info.get('train_starts', '-' if name == INITIAL else 1)} | "
                     f"{info.get('eval_s', 0) / 60:.1f} |")
    initial = runs.get(INITIAL, {}).get("eval", [])
    if initial:
        lines += ["", "The warm start (no RL; the common starting point, not an outcome of either arm), sampled / "
                  "greedy success: " + "; ".join(f"{split} {success(initial, split, 'sampled'):.3f} / "
                                          f"{success(initial, split, 'greedy'):.3f}" for split in SPLITS
                                          if success(initial, split, "sampled") is not None) + "."]
    return lines


def report(raw: Path, doc: Path, pictures: bool = True, interim: bool = False) -> str:
    """Write ``doc`` from the raw folder; returns the page.

    Until every planned seed has both primary arms, the page only says what has finished (the plan
    analyses once); ``interim=True`` writes the full page anyway, marked incomplete (for checking the
    page, not for publishing).
    """
    runs = load_runs(raw)
    arms = by_arm(runs)
    settings = json.loads((raw / "settings.json").read_text()) if (raw / "settings.json").exists() else {}
    primary = paired(arms, *PRIMARY, "valid_unseen", "sampled")
    if len(primary.get("seeds", [])) < PLANNED_SEEDS and not interim:
        text = "\n".join(status_page(raw, runs, len(primary.get("seeds", [])))) + "\n"
        doc.write_text(text)
        return text
    lines = ["# Does SDAR help? The pre-registered comparison on offline ALFWorld (tiny model, CPU)", "",
             f"Generated by `python benchmarks/experiment.py report` from `{raw}` (one folder per run; the "
             "plan: [`experiment_plan_alfworld.md`](experiment_plan_alfworld.md)). "
             "The teacher's privileged text is each game's "
             "route from the expert walkthrough: an oracle hint, not the paper's retrieved skills.", "",
             *notice(raw), *group_statistics(arms),
             "## Primary test (pre-registered)", "",
             "SDAR minus GRPO, pooled success of the 4 sampled plays (T = 0.4) of the 96 valid_unseen games, "
             "per seed; exact two-sided sign-flip test over seeds; 95% Student-t interval of the mean.", "",
             f"**{describe(primary)}.**", ""]
    done = {arm: sorted(seeds) for arm, seeds in arms.items()}
    if len(primary.get("seeds", [])) < PLANNED_SEEDS:
        lines += [f"*INTERIM, incomplete: {len(primary.get('seeds', []))} of the plan's {PLANNED_SEEDS} seeds have "
                  f"both arms (finished runs: {done}). The plan's analysis waits for all of them.*", ""]
    if primary.get("rows"):
        lines += ["| seed | SDAR | GRPO | difference |", "|---|---|---|---|"]
        lines += [f"| {r['seed']} | {r['sdar']:.3f} | {r['grpo']:.3f} | {r['diff']:+.3f} |" for r in primary["rows"]]
        lines.append("")
    lines += ["## Secondary comparisons (exploratory)", ""]
    partial = [f"{arm} ({len(seeds)} of {PLANNED_SEEDS} seeds: {seeds})" for arm, seeds in sorted(done.items())
               if len(seeds) < PLANNED_SEEDS]
    if partial:
        lines += ["Arms still running (their comparisons use the seeds they finished): " + ", ".join(partial) + ".", ""]
    for a, b in (("sdar", "grpo"), ("grpo_opsd", "grpo"), ("sdar", "grpo_opsd")):
        for split in SPLITS:
            for decoding in DECODINGS:
                if (a, b, split, decoding) == (*PRIMARY, "valid_unseen", "sampled"):
                    continue
                if a in arms and b in arms:
                    lines.append(f"- {describe(paired(arms, a, b, split, decoding))}")
    lines += ["", "## Final success per arm", "",
              "| arm | seeds | split | sampled (mean ± sd over seeds) | greedy | final - warm start (sampled) |",
              "|---|---|---|---|---|---|"]
    initial = runs.get(INITIAL, {}).get("eval", [])
    for arm in sorted(arms):
        for split in SPLITS:
            sampled = [v for r in arms[arm].values() if (v := success(r["eval"], split, "sampled")) is not None]
            greedy = [v for r in arms[arm].values() if (v := success(r["eval"], split, "greedy")) is not None]
            start = success(initial, split, "sampled")
            moved = f"{statistics.fmean(sampled) - start:+.3f}" if sampled and start is not None else "-"
            lines.append(f"| {arm} | {len(sampled)} | {split} | {mean_std(sampled)} | {mean_std(greedy)} | {moved} |")
    if initial:
        lines.append(f"| warm start | - | valid_unseen | {success(initial, 'valid_unseen', 'sampled'):.3f} | "
                     f"{success(initial, 'valid_unseen', 'greedy'):.3f} | - |")
    lines += ["", "## Per task type (valid_unseen, sampled; mean over seeds)", ""]
    types = task_types([e for arm in arms.values() for r in arm.values() for e in r["eval"]])
    if types:
        lines += ["| arm | " + " | ".join(types) + " |", "|---" * (len(types) + 1) + "|"]
        for arm in sorted(arms):
            cells = []
            for t in types:
                values = [v for r in arms[arm].values() if (v := success(r["eval"], "valid_unseen", "sampled", t))
                          is not None]
                cells.append(f"{statistics.fmean(values):.3f}" if values else "-")
            lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    lines += ["", "## Training: stability, gate and gap, cost", "",
              "| arm | KL spikes (> 3x run median) | final KL | gate mean | gap mean | training steps (min) | "
              "training wall, all starts (min) | evaluation wall (min) | teacher pass (s/step) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for arm in sorted(arms):
        rs = list(arms[arm].values())

        def pooled(key: str, runs=rs) -> list[float]:
            return [v for r in runs for v in series(r["train"], key).values()]

        gate, gap, teacher = pooled("sdar/gate_mean"), pooled("sdar/gap_mean"), pooled("timing_s/teacher")
        finals = [r["train"][-1]["actor/kl_loss"] for r in rs if r["train"] and "actor/kl_loss" in r["train"][-1]]
        cells = [
            str(sum(kl_spikes(series(r["train"], "actor/kl_loss")) for r in rs)), mean_std(finals),
            f"{statistics.fmean(gate):.3f}" if gate else "-", f"{statistics.fmean(gap):+.4f}" if gap else "-",
            f"{statistics.fmean(step_seconds(r) or 0 for r in rs) / 60:.1f}",
            f"{statistics.fmean(r['info'].get('train_wall_s', 0) for r in rs) / 60:.1f}",
            f"{statistics.fmean(r['info'].get('eval_s', 0) for r in rs) / 60:.1f}",
            f"{statistics.fmean(teacher):.2f}" if teacher else "-",
        ]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    if pictures and arms:
        name = plot(arms, doc.parent / "results")
        lines += ["", f"![training curves](results/{name})", "", "Bands: min..max over seeds; lines: seed mean."]
    return finish_page(raw, doc, [*lines, ""], settings)


def finish_page(raw: Path, doc: Path, lines: list[str], settings: dict) -> str:
    """``lines`` followed by the settings and the hand-written ``discussion.md`` beside the raw
    folders (if any), written to ``doc``; returns the page."""
    lines = [*lines, "## Settings", "", "```", json.dumps(settings, indent=1), "```"]
    discussion = raw / "discussion.md"
    if discussion.exists():
        lines += ["", "## Discussion (hand-written)", "", discussion.read_text().strip()]
    text = "\n".join(lines) + "\n"
    doc.write_text(text)
    return text
