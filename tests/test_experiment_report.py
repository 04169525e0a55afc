"""The experiment's results page (verl_sdar.reports.experiment) from synthetic raw files whose
figures are known by hand: the primary test comes first, with its hand-computed values."""

import json

import pytest

from verl_sdar.reports.experiment import describe, load_runs, by_arm, paired, report, success


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
                                                         "actor/kl_loss": 0.01, "timing_s/teacher": 2.0}])
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


def test_the_page_puts_the_primary_test_first(raw, tmp_path):
    doc = tmp_path / "results.md"
    page = report(raw, doc, pictures=True)
    assert doc.read_text() == page
    headings = [line for line in page.splitlines() if line.startswith("## ")]
    assert headings[0] == "## Primary test (pre-registered)"
    assert "**sdar - grpo (valid_unseen, sampled): mean difference +0.208" in page
    assert "Incomplete: 3 of the plan's 6 seeds have both arms" in page
    assert "| sdar | 0 | 0.010 ± 0.000 | 0.500 | +0.0100 | 10.0 | 16.7 | 2.00 |" in page
    assert (tmp_path / "results" / "experiment_training.png").is_file()
