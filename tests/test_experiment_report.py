"""The experiment's results page (verl_sdar.reports.experiment) from synthetic raw files whose
figures are known by hand: the primary test comes first, with its hand-computed values."""

import json

import pytest

from verl_sdar.reports.experiment import describe, load_runs, by_arm, paired, report, success


def bench(name):
    """A script of ``benchmarks/`` (not a package), loaded by path."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).resolve().parents[1] / "benchmarks"
                                                  / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(raw, name, wins_unseen, wins_seen=4, n=8, train=None, info=None):
    """A run whose sampled valid_unseen episodes are ``n`` with ``wins_unseen`` won (greedy: one
    per game, the first ``n // 4`` games)."""
    folder = raw / name
    folder.mkdir(parents=True)
    episodes = []
    for split, wins in (("valid_unseen", wins_unseen), ("valid_seen", wins_seen)):
        for i in range(n):
            episodes.append({"split": split, "game": f"g{i % 2}", "task_type": "pick" if i % 2 else "look",
                             "decoding": "sampled", "sample": i // 2, "won": i < wins, "steps": 5, "invalid": 0})
        episodes.append({"split": split, "game": "g0", "task_type": "look", "decoding": "greedy", "sample": 0,
                         "won": wins > n // 2, "steps": 5, "invalid": 0})
    (folder / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in episodes))
    rows = train or [{"step": s, "episode/success_rate": 0.1 * s, "actor/kl_loss": 0.01} for s in (1, 2, 3)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "run.json").write_text(json.dumps(info or {"train_wall_s": 600, "eval_s": 1000}))


@pytest.fixture
def raw(tmp_path):
    raw = tmp_path / "experiment"
    raw.mkdir()
    (raw / "settings.json").write_text(json.dumps({"steps": 20}))
    for seed, (sdar, grpo) in enumerate([(3, 2), (4, 2), (5, 3)]):
        write_run(raw, f"sdar_seed{seed}", sdar, train=[{"step": 1, "sdar/gate_mean": 0.5, "sdar/gap_mean": 0.01,
                                                         "actor/kl_loss": 0.01, "timing_s/teacher": 2.0,
                                                         "timing_s/step": 30.0 + 6 * seed}])
        write_run(raw, f"grpo_seed{seed}", grpo)
    write_run(raw, "initial", 2)
    (raw / "grpo_seed3").mkdir()  # a run still in progress: no run.json, not counted
    return raw


def test_primary_test_by_hand(raw):
    runs = load_runs(raw)
    assert "grpo_seed3" not in runs and len(runs) == 7
    arms = by_arm(runs)
    assert success(arms["sdar"][0]["eval"], "valid_unseen", "sampled") == 3 / 8
    test = paired(arms, "sdar", "grpo", "valid_unseen", "sampled")
    assert test["seeds"] == [0, 1, 2]
    assert [r["diff"] for r in test["rows"]] == pytest.approx([1 / 8, 2 / 8, 2 / 8])
    assert test["mean_diff"] == pytest.approx(5 / 24)
    assert test["p"] == 2 / 8  # 3 positive differences: only the observed signs and their mirror
    assert test["ci"][0] < 5 / 24 < test["ci"][1]
    assert describe(test).startswith("sdar - grpo (valid_unseen, sampled): mean difference +0.208 (0.500 vs 0.292)")
    assert "p = 0.250 over 3 seeds (3 of 3 positive)" in describe(test)


def test_before_the_last_seed_the_page_withholds_every_outcome(raw, tmp_path):
    """The plan analyses once: until every planned seed has both arms, the page lists finished runs
    and their cost, and no success figure of either arm."""
    page = report(raw, tmp_path / "results.md")
    assert "**In progress: SDAR and GRPO have both finished for 3 of the plan's 6 seeds.**" in page
    assert "| sdar_seed0 | 0.5 | 10.0 | 1 | 16.7 |" in page and "| initial | - | 10.0 | - | 16.7 |" in page
    assert "valid_unseen 0.250 / 0.000" in page  # the warm start's figures: not an arm's outcome
    assert "0.375" not in page and "0.625" not in page  # sdar's seeds 0 and 2 on valid_unseen
    assert "difference" not in page and "Primary" not in page and "sign-flip" not in page


def test_the_page_puts_the_primary_test_first(raw, tmp_path):
    doc = tmp_path / "results.md"
    page = report(raw, doc, pictures=True, interim=True)
    assert doc.read_text() == page
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    # only the learning precondition (the GRPO-group statistics) comes before the primary test
    assert headings[:2] == ["## GRPO groups in training", "## Primary test (pre-registered)"]
    assert "Not logged by these runs" in page  # the fake runs log no group/* metrics
    assert "**sdar - grpo (valid_unseen, sampled): mean difference +0.208" in page
    assert "INTERIM, incomplete: 3 of the plan's 6 seeds have both arms" in page
    # training steps: timing_s/step summed per run (30, 36, 42 s), mean 36 s; the wall of all starts: 600 s
    assert "| sdar | 0 | 0.010 ± 0.000 | 0.500 | +0.0100 | 0.6 | 10.0 | 16.7 | 2.00 |" in page
    assert (tmp_path / "results" / "experiment_training.png").is_file()
    assert "Arms still running" in page and "grpo (3 of 6 seeds: [0, 1, 2])" in page


def test_a_secondary_arm_with_fewer_seeds_is_named_as_still_running(raw, tmp_path):
    write_run(raw, "grpo_opsd_seed0", 1)
    page = report(raw, tmp_path / "results.md", pictures=False, interim=True)
    assert "grpo_opsd (1 of 6 seeds: [0])" in page
    assert "- grpo_opsd - grpo (valid_unseen, sampled): mean difference -0.125 (0.125 vs 0.250)" in page
    assert "over 1 seeds" in page and "no interval (one seed)" in page


# ----------------------------------------------------------------------------- the learning-rate pilot
def write_pilot(root, lr, seen_wins):
    folder = root / f"lr{lr:.0e}"
    folder.mkdir(parents=True)
    (folder / "settings.json").write_text(json.dumps({"lr": lr, "splits": "valid_seen"}))
    for seed, wins in seen_wins.items():
        write_run(folder, f"grpo_seed{seed}", wins_unseen=0, wins_seen=wins)
    write_run(folder, "initial", wins_unseen=0, wins_seen=2)


def test_pilot_rules_by_hand(tmp_path):
    from verl_sdar.reports.pilot import choose_lr, page, pooled_sd, summarize

    write_pilot(tmp_path, 1e-4, {100: 4, 101: 2})  # 0.500, 0.250: mean 0.375, variance 0.03125
    write_pilot(tmp_path, 3e-5, {100: 3, 101: 3})  # 0.375, 0.375: mean 0.375 (a tie), variance 0
    s = summarize(tmp_path, sims=200)
    assert s["means"] == pytest.approx({1e-4: 0.375, 3e-5: 0.375})
    assert s["lr"] == 3e-5  # the tie goes to the smaller lr
    assert s["sd_1"] == pytest.approx((0.03125 / 2) ** 0.5)  # pooled over 1 + 1 degrees of freedom
    assert s["sd_D"] == pytest.approx(2**0.5 * 0.125)
    assert s["seeds"] == 8 and s["mde"][8] > 0.10  # too noisy for 0.10 even with 8 seeds: the page says so
    text = page(s)
    assert "**Chosen lr: 3e-05**" in text and "**Seeds per arm: 8**" in text and "Even 8 seeds cannot" in text
    assert "| 0.0001 | lr1e-04 | 100 | 0.500 | 0.000 |" in text
    assert "Warm start (no RL), same evaluation: sampled 0.250." in text

    assert choose_lr({1e-5: 0.30, 3e-5: 0.30 + 1 / 96 + 0.001, 1e-4: 0.2}) == 3e-5  # beyond the tie margin
    assert choose_lr({1e-5: 0.30, 3e-5: 0.30 + 1 / 96}) == 1e-5  # within it
    assert pooled_sd([[0.1], [0.2]]) is None
    with pytest.raises(ValueError, match="no pilot runs"):
        choose_lr({})


def test_pilot_refuses_a_non_grpo_run_or_a_repeated_lr(tmp_path):
    from verl_sdar.reports.pilot import pilot_runs

    write_pilot(tmp_path, 1e-4, {100: 4})
    write_run(tmp_path / "lr1e-04", "sdar_seed100", 0)
    with pytest.raises(ValueError, match="GRPO only"):
        pilot_runs(tmp_path)
    (tmp_path / "lr1e-04" / "sdar_seed100" / "run.json").unlink()
    write_pilot(tmp_path / "again", 1e-4, {101: 4})
    (tmp_path / "again" / "lr1e-04").rename(tmp_path / "lr0.0001")
    with pytest.raises(ValueError, match="two pilot folders record lr 0.0001"):
        pilot_runs(tmp_path)


def test_runner_never_resumes_a_run_under_other_settings(tmp_path):
    """benchmarks/experiment.py: runs of the same name under other raw folders (the pilot's lrs) get
    their own working folders; a working folder started under other settings is refused."""
    from pathlib import Path

    runner = bench("experiment")
    a = runner.parse_args(["run", "--lr", "1e-4"])
    first = runner.run_folder(a, tmp_path, Path("docs/results/pilot/lr1e-04"), "grpo_seed100")
    assert first == tmp_path / "lr1e-04" / "grpo_seed100"
    assert runner.run_folder(a, tmp_path, Path("docs/results/pilot/lr1e-04"), "grpo_seed100") == first  # resumable
    b = runner.parse_args(["run", "--lr", "3e-5"])
    assert runner.run_folder(b, tmp_path, Path("docs/results/pilot/lr3e-05"), "grpo_seed100") != first
    with pytest.raises(SystemExit, match=r"started under other settings .*'lr': \(0.0001, 3e-05\)"):
        runner.run_folder(b, tmp_path, Path("elsewhere/lr1e-04"), "grpo_seed100")


def _record(step, kl):
    return json.dumps({"step": step, "data": {"actor/kl_loss": kl, "timing_s/step": 30.0, "global_seqlen/min": 1.0}})


def test_a_resumed_run_keeps_the_metrics_of_every_start(tmp_path):
    """verl's file logger empties its file at start-up: the runner gives each start its own file and
    reads them in start order (a legacy metrics.jsonl first; a repeated step: the later start wins)."""
    runner = bench("experiment")
    (tmp_path / "metrics.jsonl").write_text(_record(1, 0.1) + "\n" + _record(2, 0.2) + "\n")
    (tmp_path / "metrics.start2.jsonl").write_text(_record(2, 0.25) + "\n" + _record(3, 0.3) + "\n")
    (tmp_path / "metrics.start10.jsonl").write_text("")  # a start that found the run finished
    rows = runner.kept_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert [r["actor/kl_loss"] for r in rows] == [0.1, 0.25, 0.3]
    assert "global_seqlen/min" not in rows[0] and rows[0]["timing_s/step"] == 30.0


def test_metrics_recovered_from_the_console_log_by_hand():
    recovery = bench("recover_metrics")
    log = ("\x1b[36m(TaskRunnerV1 pid=1)\x1b[0m step:1 - global_seqlen/min:5.0 - actor/kl_loss:0.5 - "
           "timing_s/step:31.5\n"
           "noise line\n"
           "(TaskRunnerV1 pid=1) step:2 - actor/kl_loss:0.25 - episode/success_rate:1.0 - timing_s/step:not-a-number\n")
    assert recovery.parse(log) == [{"step": 1, "actor/kl_loss": 0.5, "timing_s/step": 31.5},
                                   {"step": 2, "actor/kl_loss": 0.25, "episode/success_rate": 1.0}]


def test_pinned_settings_refuse_other_values_and_write_nothing(tmp_path):
    """verl_sdar.reports.settings.pin_settings: written once, equal settings pass (a tuple equals the
    list JSON reads back), a changed, added or missing key is refused with (fixed, given) and the
    file is left as it was."""
    from verl_sdar.reports.settings import pin_settings

    folder = tmp_path / "raw"
    pin_settings(folder, {"lr": 1e-5, "seeds": (0, 1)})
    stored = (folder / "settings.json").read_text()
    pin_settings(folder, {"seeds": [0, 1], "lr": 1e-5})
    with pytest.raises(SystemExit, match=r"^x: \{'lr': \(1e-05, 3e-05\)\}$"):
        pin_settings(folder, {"lr": 3e-5, "seeds": [0, 1]}, "x: {differ}")
    with pytest.raises(SystemExit, match=r"'steps': \(None, 20\)"):
        pin_settings(folder, {"lr": 1e-5, "seeds": [0, 1], "steps": 20})
    with pytest.raises(SystemExit, match=r"'seeds': \(\[0, 1\], None\)"):
        pin_settings(folder, {"lr": 1e-5})
    assert (folder / "settings.json").read_text() == stored


def test_the_notice_comes_first_and_group_statistics_are_tabled(raw, tmp_path):
    (raw / "notice.md").write_text("**Invalid: a defect found after the runs.**")
    run = raw / "sdar_seed0" / "train.jsonl"
    rows = [json.loads(line) for line in run.read_text().splitlines()]
    for i, row in enumerate(rows):
        row.update({"group/mixed_reward_share": 0.5 * i, "group/identical_share": 0.0,
                    "group/nonzero_advantage_rows": 1.0})
    run.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = report(raw, tmp_path / "results.md", pictures=False, interim=True)
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings[:3] == ["## Read this first (hand-written notice)", "## GRPO groups in training",
                            "## Primary test (pre-registered)"]
    assert "**Invalid: a defect found after the runs.**" in page
    mixed = sum(0.5 * i for i in range(len(rows))) / len(rows)
    assert f"| sdar | {mixed:.3f} | 0.000 | 1.000 |" in page and "| grpo | - | - | - |" in page
