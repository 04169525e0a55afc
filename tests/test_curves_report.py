"""The learning-curve report's statistics (verl_sdar.reports.curves, the report of
benchmarks/curves.py), on hand-made runs."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def curves():
    from verl_sdar.reports import curves

    return curves


def test_drops_spikes_band_and_steps_to_reach(curves):
    assert curves.success_drops({0: 0.5, 3: 0.25, 6: 0.0}) == 2      # two drops of exactly 0.25
    assert curves.success_drops({0: 0.5, 3: 0.3, 6: 0.6}) == 0
    assert curves.success_drops({6: 0.0, 0: 0.5}) == 1                # ordered by step, not by insertion
    # median 0.002 -> threshold max(0.006, 0.001): only 0.01 is a spike
    assert curves.kl_spikes({1: 0.001, 2: 0.002, 3: 0.01}) == 1
    assert curves.kl_spikes({1: 0.0001, 2: 0.0002, 3: 0.0009}) == 0   # below the floor
    assert curves.kl_spikes({}) == 0
    steps, mean, lo, hi = curves.band([{0: 0.0, 3: 0.5, 6: 1.0}, {0: 0.5, 3: 0.5}])
    assert (steps, mean, lo, hi) == ([0, 3], [0.25, 0.5], [0.0, 0.5], [0.5, 0.5])
    assert curves.steps_to_reach([0, 3, 6], [0.1, 0.4, 0.5], 0.4) == 3
    assert curves.steps_to_reach([0, 3], [0.1, 0.2], 0.4) is None
    assert curves.mean_std([0.25, 0.75]) == "0.500 ± 0.354"


def _records(values: dict[int, float], kl: dict[int, float]) -> list[dict]:
    steps = sorted(set(values) | set(kl))
    return [{"step": s, **({"val-core/alfworld_seen/episode_success": values[s],
                            "val-core/alfworld_unseen/episode_success": values[s] / 2} if s in values else {}),
             **({"actor/kl_loss": kl[s]} if s in kl else {})} for s in steps]


def test_summary_and_verdict_from_raw_files(tmp_path, curves):
    raw = tmp_path / "results" / "raw"
    raw.mkdir(parents=True)
    kl = {1: 0.001, 2: 0.001, 3: 0.001}
    runs = {("grpo", 0): {0: 0.2, 3: 0.4}, ("grpo", 1): {0: 0.2, 3: 0.2},
            ("sdar", 0): {0: 0.2, 3: 0.6}, ("sdar", 1): {0: 0.2, 3: 0.4},
            ("grpo_opsd", 0): {0: 0.6, 3: 0.2}}
    for (method, seed), values in runs.items():
        spikes = {**kl, 2: 0.05} if method == "grpo_opsd" else kl
        (raw / f"{method}_seed{seed}.jsonl").write_text("\n".join(json.dumps(r) for r in _records(values, spikes)))
    rows = {(r["method"], r["split"]): r for r in curves.summarise(curves.load_runs(raw))}
    seen = rows[("sdar", "seen")]
    assert seen["seeds"] == 2 and seen["initial"] == [0.2, 0.2] and seen["final"] == [0.6, 0.4]
    assert seen["steps_to_grpo_final"] == 3        # GRPO's final seed mean is 0.3; SDAR's mean at step 3 is 0.5
    assert rows[("grpo_opsd", "seen")]["success_drops"] == 1 and rows[("grpo_opsd", "seen")]["kl_spikes"] == 1
    assert rows[("grpo", "unseen")]["final"] == [0.2, 0.1]
    text = "\n".join(curves.verdict(list(rows.values())))
    assert "eval-seen: SDAR's final success is higher than GRPO's by 0.200 (0.500 vs 0.300)" in text
    assert "eval-seen, final minus warm start (seed means): grpo +0.100, grpo_opsd -0.400, sdar +0.300." in text
    assert "GRPO+OPSD (beta 0): 1 success drops" in text   # seen 0.6 -> 0.2; unseen 0.3 -> 0.1 is below 0.25
    assert "against GRPO's 0 and 0" in text


def test_the_warm_starts_validation_is_step_0_of_every_curve(tmp_path, curves):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "initial.jsonl").write_text(json.dumps({"step": 0, "val-core/alfworld_seen/episode_success": 0.125}))
    (raw / "grpo_seed0.jsonl").write_text(json.dumps({"step": 3, "val-core/alfworld_seen/episode_success": 0.25}))
    (raw / "sdar_seed1.jsonl").write_text("\n".join(json.dumps({"step": s, "val-core/alfworld_seen/episode_success": v})
                                                    for s, v in ((0, 0.5), (3, 0.75))))
    runs = curves.load_runs(raw)
    assert set(runs) == {"grpo", "sdar"}                      # initial.jsonl is not a method
    assert curves.success_series(runs["grpo"][0], "alfworld_seen") == {0: 0.125, 3: 0.25}
    assert curves.success_series(runs["sdar"][1], "alfworld_seen") == {0: 0.5, 3: 0.75}  # its own step 0 kept


def test_report_writes_the_page_plots_table_and_summary(tmp_path, curves):
    pytest.importorskip("matplotlib")
    raw = tmp_path / "results" / "raw"
    raw.mkdir(parents=True)
    for method, seed in (("grpo", 0), ("sdar", 0), ("sdar", 1)):
        records = _records({0: 0.25, 3: 0.5}, {1: 0.001, 2: 0.002, 3: 0.002})
        for r in records:
            r.update({"sdar/gate_mean": 0.5, "actor/entropy": 1.0} if r["step"] else {})
        (raw / f"{method}_seed{seed}.jsonl").write_text("\n".join(json.dumps(r) for r in records))
    (raw / "settings.json").write_text(json.dumps({"steps": 3, "lr": 2e-5}))
    doc = tmp_path / "results.md"
    text = curves.report(raw, doc)
    assert doc.read_text() == text
    assert "`python benchmarks/curves.py --steps 3 --lr 2e-05`" in text
    assert "![success.png](results/success.png)" in text and "![training.png](results/training.png)" in text
    for name in ("success.png", "training.png"):
        assert (tmp_path / "results" / name).read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "results" / "table.md").read_text() in text
    assert len(json.loads((tmp_path / "results" / "summary.json").read_text())) == 4  # 2 methods x 2 splits
    with pytest.raises(SystemExit, match="no raw run files"):
        curves.report(tmp_path / "empty", doc)


def test_runs_in_parts_must_share_their_settings(tmp_path, curves):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "settings.json").write_text(json.dumps({"steps": 99}))
    with pytest.raises(SystemExit, match="holds other settings"):
        curves.start_sweep(curves.parse_args(["--raw-dir", str(raw), "--work", str(tmp_path / "work")]))
    with pytest.raises(SystemExit, match="unknown method"):
        curves.start_sweep(curves.parse_args(["--raw-dir", str(tmp_path / "raw2"), "--methods", "grpo,nope"]))
    assert not (tmp_path / "raw2").exists()
