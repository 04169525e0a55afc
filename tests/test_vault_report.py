"""The vault experiment's learning gate (verl_sdar.reports.vault) on raw files written by hand."""

from __future__ import annotations

import json

import pytest

from verl_sdar.reports.vault import coefficient, decision_rates, gate, gate_page, success


def _episodes(checkpoint: str, decoding: str, wins: int, n: int = 8) -> list[dict]:
    return [{"checkpoint": checkpoint, "decoding": decoding, "sample": 0, "task": f"t{i}", "won": i < wins,
             "decisions": [["key", i < wins], ["hidden", i % 2 == 0]]} for i in range(n)]


def _write(folder, eval_rows, train_rows=None):
    folder.mkdir(parents=True)
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in eval_rows))
    if train_rows is not None:
        (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in train_rows))
        (folder / "run.json").write_text("{}\n")


def test_the_gate_holds_each_criterion_to_its_figure(tmp_path):
    # warm start: T=1 2/8, greedy 3/8, T=0.5 3/8 (its best decoding: 0.375)
    _write(tmp_path / "initial", _episodes("initial", "T=1", 2) + _episodes("initial", "greedy", 3)
           + _episodes("initial", "T=0.5", 3))
    # mixed shares of steps 1-5: .5 .25 .5 .25 .5 -> 0.4 (step 6 is not early)
    train = [{"step": s, "group/mixed_reward_share": m, "group/identical_share": 0.0}
             for s, m in enumerate([0.5, 0.25, 0.5, 0.25, 0.5, 0.0], start=1)]
    # seed 0: final T=1 5/8 (+0.375), greedy 4/8 > 3/8: every criterion
    _write(tmp_path / "grpo_seed0", _episodes("mid", "T=1", 4) + _episodes("final", "T=1", 5)
           + _episodes("final", "greedy", 4), train)
    # seed 1: final T=1 3/8: gain +0.125 >= 0.10, but not above the warm start's best decoding (0.375);
    # greedy 3/8 is not above 3/8; early groups all uniform
    _write(tmp_path / "grpo_seed1", _episodes("mid", "T=1", 2) + _episodes("final", "T=1", 3)
           + _episodes("final", "greedy", 3), [{**r, "group/mixed_reward_share": 0.0} for r in train])
    g = gate(tmp_path)
    s0, s1 = g["seeds"]["grpo_seed0"], g["seeds"]["grpo_seed1"]
    assert s0["gain"] == pytest.approx(0.375) and s0["early_mixed_share"] == pytest.approx(0.4)
    assert all(s0["passed"].values())
    assert s1["gain"] == pytest.approx(0.125)
    assert s1["passed"] == {"gain": True, "greedy": False, "beyond_temperature": False, "mixed_groups": False}
    assert not g["passed"]
    page = gate_page(tmp_path)
    assert "| grpo_seed0 | 0.250 | 0.375 (T=0.5) | 0.500 | 0.625 | +0.375 | 0.375 -> 0.500 | 0.40 |" in page
    assert "**Gate not passed**" in page


def test_one_seed_is_not_enough_and_the_rates_count_only_their_checkpoint(tmp_path):
    _write(tmp_path / "initial", _episodes("initial", "T=1", 0) + _episodes("initial", "greedy", 0))
    rows = [{"step": s, "group/mixed_reward_share": 1.0} for s in range(1, 6)]
    _write(tmp_path / "grpo_seed0", _episodes("mid", "T=1", 8) + _episodes("final", "T=1", 8)
           + _episodes("final", "greedy", 8), rows)
    (tmp_path / "grpo_seed1").mkdir()  # started, not finished: not counted
    g = gate(tmp_path)
    assert list(g["seeds"]) == ["grpo_seed0"] and all(g["seeds"]["grpo_seed0"]["passed"].values())
    assert not g["passed"]  # two seeds at least
    records = _episodes("final", "T=1", 6) + _episodes("mid", "T=1", 0)
    assert success(records, "final", "T=1") == 0.75
    assert decision_rates(records, "final", "T=1") == {"hidden": 0.5, "key": 0.75}
    with pytest.raises(ValueError, match="no evaluation episodes"):
        success(records, "final", "greedy")


def test_the_coefficient_rule_keeps_001_when_the_term_is_big_enough_else_climbs_the_ladder():
    def rows(*pairs):
        return [{"step": i, "actor/sdar/term_logprob_grad_norm": t, "actor/sdar/pg_logprob_grad_norm": p}
                for i, (t, p) in enumerate(pairs, start=1)]

    assert coefficient(rows((0.06, 1.0), (0.1, 2.0)))["coef"] == 0.01  # r = (0.06 + 0.05) / 2 = 0.055
    low = coefficient(rows((0.01, 1.0), (0.02, 1.0)))  # r = 0.015: 0.03 gives 0.045, 0.1 gives 0.15
    assert low["coef"] == 0.1 and low["share_at_chosen"] == pytest.approx(0.15)
    assert coefficient(rows((1e-4, 1.0)))["coef"] == 1.0  # even 1.0 gives 0.01: the ladder's top
    # a run made at another coefficient: its ratio scaled back to 0.01's
    assert coefficient(rows((0.5, 1.0)), coef=0.1)["share_at_0.01"] == pytest.approx(0.05)
    with pytest.raises(ValueError, match="non-zero pg norm"):
        coefficient([{"step": 1, "actor/sdar/term_logprob_grad_norm": 0.1, "actor/sdar/pg_logprob_grad_norm": 0.0}])
