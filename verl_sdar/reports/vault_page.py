"""The vault experiment's results page (issue #29, docs/experiment_plan.md), from its raw files.

Raw layout: :mod:`verl_sdar.reports.vault` (``ROOT/initial/`` and one ``<arm>_seed<k>/`` per
finished run). The page, in the plan's order:

1. **the learning precondition**: the learning gate's four criteria for every GRPO seed of the sweep
   (:func:`verl_sdar.reports.vault.seed_gate`); if one fails anywhere, every comparison below is
   marked uninterpretable, not a null;
2. **the primary test**: ``D_s = p(sdar, s) - p(grpo, s)`` with ``p`` the mean of mid and final
   success at T = 1 (:func:`verl_sdar.reports.vault.primary`), exact sign-flip test over seeds and
   the 95% t interval;
3. the secondary comparisons (the same test on other pairs, the final checkpoint alone, greedy,
   the ood split), success per arm, the mechanism (right choices per decision kind), GRPO-group
   statistics, gate and gap on clean vs noisy rows, the SDAR term's size, wall time per arm, the
   training curves with seed bands, the settings, and the hand-written ``discussion.md``.

Until every arm has the planned seeds the page only lists what finished (the plan analyses once);
``interim=True`` writes the full page marked incomplete, for checking the page itself.

Pure Python (matplotlib for the figure only); no torch, no verl.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

from verl_sdar.reports.curves import mean_std, series
from verl_sdar.reports.experiment import (
    INITIAL,
    by_arm,
    describe,
    finish_page,
    group_statistics,
    load_runs,
    notice,
    paired_by,
    plot,
    step_seconds,
)
from verl_sdar.reports.stats import minimum_detectable_effect
from verl_sdar.reports.vault import decision_rates, gate, primary, seed_gate, success

REPO = Path(__file__).resolve().parents[2]
"""The checkout the page's links point into (the plan, the task's README)."""

ARMS = ("grpo", "sdar", "grpo_opsd", "sdar_noisy")
PRIMARY = ("sdar", "grpo")
SECONDARY = (("sdar_noisy", "sdar"), ("sdar_noisy", "grpo"), ("grpo_opsd", "grpo"))
KINDS = ("key", "sign", "note", "hidden")
PANELS = (("episode/success_rate", "training episode success"),
          ("group/mixed_reward_share", "mixed-reward groups"),
          ("group/identical_share", "identical groups"),
          ("sdar/noisy/false/gate_mean", "gate mean, true-route rows"),
          ("sdar/noisy/true/gate_mean", "gate mean, wrong-route rows"),
          ("actor/sdar/term_to_pg", "SDAR term / policy gradient (log-prob grads)"))
TITLE = "# Does SDAR help, and does its gate protect against a wrong teacher? The vault experiment (tiny model, CPU)"


def ood_success(records: list[dict]) -> float | None:
    """Share won of the final checkpoint's T = 1 plays on the ``ood`` split (None if not evaluated)."""
    won = [r["won"] for r in records if r.get("split") == "ood" and r["checkpoint"] == "final"
           and r["decoding"] == "T=1"]
    return sum(won) / len(won) if won else None


# (label, value of one run) of every compared metric; the first is the plan's primary metric
METRICS = (
    ("T=1, mid+final", lambda run: primary(run["eval"])),
    ("T=1, final", lambda run: success(run["eval"], "final", "T=1")),
    ("greedy, final", lambda run: success(run["eval"], "final", "greedy")),
    ("ood T=1, final", lambda run: ood_success(run["eval"])),
)


def has_policy_gradient(row: dict) -> bool:
    """Whether a step's outcome reward gave a policy gradient: some row's advantage is non-zero. A step
    whose every group is uniform has none (its pg norm is a residual near 0), so no term/pg ratio."""
    return row.get("group/nonzero_advantage_rows", 1.0) > 0.0


def with_term_ratio(train: list[dict]) -> list[dict]:
    """``train`` rows with ``actor/sdar/term_to_pg`` = term over policy-gradient log-prob gradient
    norm added where both are logged and the step has a policy gradient (:func:`has_policy_gradient`)."""
    out = []
    for row in train:
        pg, term = row.get("actor/sdar/pg_logprob_grad_norm"), row.get("actor/sdar/term_logprob_grad_norm")
        usable = pg and term is not None and has_policy_gradient(row)
        out.append({**row, "actor/sdar/term_to_pg": term / pg} if usable else row)
    return out


def term_to_pg(runs: list[dict]) -> float | None:
    """The term's size relative to the policy gradient over whole runs: mean term norm / mean pg norm
    over every step of ``runs`` with a policy gradient (a ratio of means: one step with a tiny pg norm
    cannot dominate it, as it would a mean of per-step ratios)."""
    rows = [row for run in runs for row in run["train"] if has_policy_gradient(row)
            and row.get("actor/sdar/pg_logprob_grad_norm") is not None
            and row.get("actor/sdar/term_logprob_grad_norm") is not None]
    pg = sum(row["actor/sdar/pg_logprob_grad_norm"] for row in rows)
    return sum(row["actor/sdar/term_logprob_grad_norm"] for row in rows) / pg if rows and pg else None


def precondition(arms: dict[str, dict[int, dict]], initial: list[dict]) -> tuple[list[str], bool]:
    """The learning gate over every GRPO seed, as page lines, and whether it held in all of them."""
    seeds = {s: seed_gate(initial, run["eval"], run["train"]) for s, run in sorted(arms.get("grpo", {}).items())}
    held = bool(seeds) and all(all(g["passed"].values()) for g in seeds.values())
    lines = ["## 1. Does the baseline learn? (the precondition)", "",
             "The pilot's learning gate over every GRPO seed of the sweep: (a) final success at T = 1 at least "
             "0.10 above the warm start's; (b) final greedy above the warm start's greedy; (c) final T = 1 above "
             "the warm start's best decoding (greedy, T = 0.5, 0.7, 1); (d) at least 30% of the groups of steps "
             "1-5 mixed.", "",
             "| seed | warm start T=1 | best warm-start decoding | final T=1 | gain | greedy: start -> final "
             "| early mixed share | criteria |", "|---|---:|---:|---:|---:|---|---:|---|"]
    for s, g in seeds.items():
        best = max(g["initial"], key=g["initial"].get)
        ok = ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in g["passed"].items())
        lines.append(f"| {s} | {g['initial']['T=1']:.3f} | {g['initial'][best]:.3f} ({best}) | {g['final_T=1']:.3f} "
                     f"| {g['gain']:+.3f} | {g['initial']['greedy']:.3f} -> {g['final_greedy']:.3f} "
                     f"| {g['early_mixed_share']:.2f} | {ok} |")
    lines += ["", "**Held in every GRPO seed.**" if held else
              "**NOT held**: the comparisons below are uninterpretable (not nulls): the baseline did not measurably "
              "learn in every seed.", ""]
    failed = [s for s, g in seeds.items() if not all(g["passed"].values())]
    if failed:
        lines += ["Right choices per decision kind at T = 1 in the seeds that failed (mid -> final checkpoint):", ""]
        for s in failed:
            records = arms["grpo"][s]["eval"]
            mid, final = decision_rates(records, "mid", "T=1"), decision_rates(records, "final", "T=1")
            lines.append(f"- seed {s}: mid T=1 {seeds[s]['mid_T=1']:.3f} -> final {seeds[s]['final_T=1']:.3f}; "
                         + ", ".join(f"{k} " + " -> ".join(f"{r[k]:.2f}" if k in r else "-" for r in (mid, final))
                                     for k in KINDS if k in mid or k in final))
        lines.append("")
    return lines, held


def detectable(pilot: Path | None, seeds: int) -> str:
    """The plan's power statement: the minimum detectable effect of the sign-flip test over ``seeds``
    pairs (80% power, alpha 0.05) at the paired spread ``sd_D`` of the pilot's GRPO seeds."""
    if pilot is None or not (pilot / INITIAL).exists() or seeds < 2:
        return ""
    pilot_seeds = gate(pilot)["seeds"]
    if len(pilot_seeds) < 2:
        return ""
    sd_d = math.sqrt(2) * statistics.stdev(g["primary"] for g in pilot_seeds.values())
    return (f"Power (the plan's rule): at the pilot's paired spread sd_D = {sd_d:.3f} "
            f"(`{pilot}`), the test over {seeds} seeds detects a mean difference of about "
            f"{minimum_detectable_effect(sd_d, seeds):.2f} with 80% power; smaller effects can go unseen.")


def arm_table(arms: dict[str, dict[int, dict]], initial: list[dict]) -> list[str]:
    """Mean ± sd over seeds of each compared metric per arm, the warm start's beside them."""
    lines = ["| arm | seeds | " + " | ".join(label for label, _ in METRICS) + " |",
             "|---|---:|" + "---:|" * len(METRICS)]
    for arm in (a for a in ARMS if a in arms):
        cells = []
        for _, value in METRICS:
            values = [v for run in arms[arm].values() if (v := value(run)) is not None]
            cells.append(mean_std(values) if values else "-")
        lines.append(f"| {arm} | {len(arms[arm])} | " + " | ".join(cells) + " |")
    if initial:
        start = success(initial, INITIAL, "T=1")
        ood = [r["won"] for r in initial if r.get("split") == "ood" and r["decoding"] == "T=1"]
        lines.append(f"| warm start | - | {start:.3f} | {start:.3f} | {success(initial, INITIAL, 'greedy'):.3f} | "
                     + (f"{sum(ood) / len(ood):.3f}" if ood else "-") + " |")
    return lines + [""]


def mechanism(arms: dict[str, dict[int, dict]], initial: list[dict]) -> list[str]:
    """Right choices per decision kind at T = 1 (mean over seeds): the early decision (the key) at the
    mid checkpoint too, where faster learning would show, and every kind at the final checkpoint."""
    lines = ["Right choices per decision kind at T = 1, mean over seeds: the key (the early decision that pays "
             "off only at the vault) at the mid checkpoint, then every kind at the final one (the route speaks "
             "to the key and the hidden fork only; a student that reads its observations gets signs and noted "
             "forks right and guesses hidden forks):", "",
             "| arm | key, mid | " + " | ".join(f"{k}, final" for k in KINDS) + " |",
             "|---|" + "---:|" * (len(KINDS) + 1)]
    rows = [(arm, [decision_rates(run["eval"], "mid", "T=1") for run in arms[arm].values()],
             [decision_rates(run["eval"], "final", "T=1") for run in arms[arm].values()])
            for arm in ARMS if arm in arms]
    if initial:
        rows.append(("warm start", *[[decision_rates(initial, INITIAL, "T=1")]] * 2))
    for arm, mid, final in rows:
        cells = [statistics.fmean(vs) if (vs := [r[k] for r in rates if k in r]) else None
                 for rates, k in [(mid, "key"), *((final, k) for k in KINDS)]]
        lines.append(f"| {arm} | " + " | ".join(f"{c:.2f}" if c is not None else "-" for c in cells) + " |")
    return lines + [""]


def teacher_table(arms: dict[str, dict[int, dict]]) -> list[str]:
    """Gate and gap on true-route vs wrong-route rows, the term's size, and the cost, per arm."""
    lines = ["| arm | gate, true route | gate, wrong route | gap, true route | gap, wrong route | term / pg "
             "| training (min) | teacher pass (s/step) | evaluation (min) |", "|---|" + "---:|" * 8]
    for arm in (a for a in ARMS if a in arms):
        runs = list(arms[arm].values())

        def pooled(key: str, runs: list[dict] = runs) -> str:
            values = [v for r in runs for v in series(with_term_ratio(r["train"]), key).values()]
            return f"{statistics.fmean(values):.3f}" if values else "-"

        cells = [pooled("sdar/noisy/false/gate_mean"), pooled("sdar/noisy/true/gate_mean"),
                 pooled("sdar/noisy/false/gap_mean"), pooled("sdar/noisy/true/gap_mean"),
                 f"{ratio:.3f}" if (ratio := term_to_pg(runs)) is not None else "-",
                 f"{statistics.fmean(r['info'].get('train_wall_s', 0) for r in runs) / 60:.1f}",
                 pooled("timing_s/teacher"),
                 f"{statistics.fmean(r['info'].get('eval_s', 0) for r in runs) / 60:.1f}"]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return lines + ["", "Training minutes: wall time of every start (start-up included); gate and gap: mean over "
                    "steps and seeds of the per-step means over the rows of each condition (the noisy arm's "
                    "training tasks are half true-route, half wrong-route; the clean arms' all true-route); "
                    "term / pg: the SDAR term's log-prob gradient norm over the policy gradient's, the ratio of "
                    "their means over the steps (and seeds) that had a policy gradient.", ""]


def status_page(raw: Path, runs: dict[str, dict], arms: dict[str, dict[int, dict]], planned: int) -> list[str]:
    """While the sweep runs: which runs finished and what they cost, no outcome."""
    lines = [TITLE, "", f"**In progress.** The plan ([`experiment_plan.md`](experiment_plan.md)) analyses once, when "
             f"every arm has its {planned} seeds; finished so far: "
             + ", ".join(f"{arm} {len(arms.get(arm, {}))}" for arm in ARMS)
             + f". Generated by `python benchmarks/vault_experiment.py report` from `{raw}`.", "", *notice(raw),
             "| run | training steps (min) | training wall, all starts (min) | starts | evaluation (min) |",
             "|---|---:|---:|---:|---:|"]
    for name, run in sorted(runs.items()):
        info, steps = run["info"], step_seconds(run)
        cells = [f"{steps / 60:.1f}" if steps is not None else "-",
                 f"{info['train_wall_s'] / 60:.1f}" if "train_wall_s" in info else "-",
                 str(info.get("train_starts", "-")), f"{info.get('eval_s', 0) / 60:.1f}"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def report(raw: Path, doc: Path, planned: int, pictures: bool = True, interim: bool = False,
           pilot: Path | None = None) -> str:
    """Write ``doc`` from ``raw`` (``planned`` seeds per arm; the power statement from the ``pilot``'s
    raw files when given); returns the page."""
    runs = load_runs(raw)
    arms = by_arm(runs)
    complete = all(len(arms.get(arm, {})) >= planned for arm in ARMS)
    if not complete and not interim:
        text = "\n".join(status_page(raw, runs, arms, planned)) + "\n"
        doc.write_text(text)
        return text
    initial = runs.get(INITIAL, {}).get("eval", [])
    if not initial:
        raise ValueError(f"{raw / INITIAL} holds no finished evaluation of the warm start: the gate needs it")
    settings = json.loads((raw / "settings.json").read_text()) if (raw / "settings.json").exists() else {}
    gate_lines, held = precondition(arms, initial)
    label, value = METRICS[0]
    first = paired_by(arms, *PRIMARY, value, split="val", decoding=label)
    def link(path: Path) -> str:
        """``path`` relative to the page's folder (the page may be written anywhere: ``--doc``)."""
        return os.path.relpath(path.resolve(), doc.parent.resolve())

    lines = [TITLE, "",
             f"Generated by `python benchmarks/vault_experiment.py report` from `{raw}` (the plan: "
             f"[`experiment_plan.md`]({link(REPO / 'docs' / 'experiment_plan.md')}); the task: "
             f"[`envs/vault/README.md`]({link(REPO / 'envs' / 'vault' / 'README.md')})). The teacher's "
             "privileged text is the task's route (the key, and the way at the hidden fork): an oracle plan, not "
             "the paper's retrieved skills.", "", *notice(raw)]
    if not complete:
        lines += [f"*INTERIM, incomplete: not every arm has its {planned} seeds "
                  f"({', '.join(f'{a} {len(arms.get(a, {}))}' for a in ARMS)}); the plan analyses once.*", ""]
    caveat = "" if held else " (uninterpretable: the precondition did not hold)"
    lines += [*gate_lines, f"## 2. The primary test (pre-registered){caveat}", "",
              "SDAR minus GRPO; per seed, success at T = 1 on the 64 val tasks (4 plays each), the mean of the mid "
              "and the final checkpoint; exact two-sided sign-flip test over seeds, 95% Student-t interval of the "
              "mean difference.", "", f"**{describe(first)}.**", ""]
    if power := detectable(pilot, len(first.get("seeds", []))):
        lines += [power, ""]
    if first.get("rows"):
        lines += ["| seed | SDAR | GRPO | difference |", "|---|---:|---:|---:|"]
        lines += [f"| {r['seed']} | {r['sdar']:.3f} | {r['grpo']:.3f} | {r['diff']:+.3f} |" for r in first["rows"]]
        lines.append("")
    lines += [f"## 3. Secondary comparisons (exploratory, no multiplicity correction){caveat}", ""]
    for a, b in (PRIMARY, *SECONDARY):
        for label, value in METRICS:
            if (a, b, label) != (*PRIMARY, METRICS[0][0]) and a in arms and b in arms:
                split = "ood" if label.startswith("ood") else "val"
                lines.append(f"- {describe(paired_by(arms, a, b, value, split=split, decoding=label))}")
    lines += ["", "## Success per arm (mean ± sd over seeds)", "", *arm_table(arms, initial),
              "## Mechanism", "", *mechanism(arms, initial),
              *group_statistics(arms),
              "## The teacher: gate and gap on true vs wrong routes, the term's size, the cost", "",
              *teacher_table(arms)]
    if (raw / "sign_following.md").exists():
        lines += ["Signs followed per direction and training step, from verl's rollout dumps (post hoc, the runs "
                  "whose dump was kept): [`sign_following.md`]("
                  + link(raw / "sign_following.md") + ").", ""]
    if pictures and arms:
        curves = {arm: {s: {**run, "train": with_term_ratio(run["train"])} for s, run in seeds.items()}
                  for arm, seeds in arms.items()}
        name = plot(curves, doc.parent / "results", PANELS, "vault_training.png")
        lines += [f"![training curves](results/{name})", "", "Bands: min..max over seeds; lines: seed mean.", ""]
    return finish_page(raw, doc, lines, settings)
