"""The vault experiment's learning gate (verl_sdar.reports.vault) on raw files written by hand."""

from __future__ import annotations

import json

import pytest

from verl_sdar.reports.vault import coefficient, decision_rates, gate, gate_page, primary, seeds_rule, success


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
    page = gate_page(tmp_path, sims=50)
    assert "| grpo_seed0 | 0.250 | 0.375 (T=0.5) | 0.500 | 0.625 | +0.375 | 0.375 -> 0.500 | 0.40 |" in page
    assert "**Gate not passed**" in page
    # the primary metric: (mid + final) / 2 = (4/8 + 5/8) / 2 and (2/8 + 3/8) / 2; their sd = 0.25 / sqrt(2)
    assert s0["primary"] == pytest.approx(0.5625) and s1["primary"] == pytest.approx(0.3125)
    assert "sd_1 0.177, sd_D 0.250" in page


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


def test_the_terms_size_is_a_ratio_of_means_over_the_steps_that_had_a_policy_gradient():
    from verl_sdar.reports.vault_page import term_to_pg, with_term_ratio

    def step(term, pg, nonzero):
        return {"actor/sdar/term_logprob_grad_norm": term, "actor/sdar/pg_logprob_grad_norm": pg,
                "group/nonzero_advantage_rows": nonzero}

    # the third step's groups were all uniform: its pg norm is a residual (1e-5) and its ratio (150)
    # would dominate a mean of per-step ratios; it is left out of both figures
    runs = [{"train": [step(0.1, 1.0, 0.5), step(0.2, 3.0, 0.75)]}, {"train": [step(0.0015, 1e-5, 0.0)]}]
    assert term_to_pg(runs) == pytest.approx(0.3 / 4.0)
    assert [r.get("actor/sdar/term_to_pg") for r in with_term_ratio(runs[0]["train"] + runs[1]["train"])] == \
        [pytest.approx(0.1), pytest.approx(0.2 / 3.0), None]
    assert term_to_pg([{"train": [{"step": 1}]}]) is None


def test_the_seed_rule_takes_six_seeds_when_their_detectable_effect_is_small_enough():
    records = _episodes("mid", "T=1", 2) + _episodes("final", "T=1", 4)
    assert primary(records) == pytest.approx(0.375)
    close = seeds_rule([0.70, 0.72], sims=300)  # sd_1 0.0141, sd_D 0.02: an effect of about 0.03 is seen
    assert close["sd_D"] == pytest.approx(0.02) and close["seeds"] == 6 and close["mde"][6] <= 0.10
    spread = seeds_rule([0.60, 0.70], sims=300)  # sd_D 0.1: 6 seeds see only effects above 0.10
    assert spread["mde"][6] > 0.10 and spread["seeds"] == 8 and spread["mde"][8] < spread["mde"][6]
    with pytest.raises(ValueError, match="2 pilot seeds"):
        seeds_rule([0.5])


def _run(folder, mid: int, final: int, greedy: int, mixed: float = 0.5, train_extra: dict | None = None,
         info: dict | None = None):
    train = [{"step": s, "group/mixed_reward_share": mixed, "group/identical_share": 0.0,
              "group/nonzero_advantage_rows": 0.5, **(train_extra or {})} for s in range(1, 7)]
    records = [{**r, "split": "val"} for r in _episodes("mid", "T=1", mid) + _episodes("final", "T=1", final)
               + _episodes("final", "greedy", greedy)]
    _write(folder, records, train)
    (folder / "run.json").write_text(json.dumps(info or {"train_wall_s": 600, "eval_s": 60, "train_starts": 1}))


def _sweep(root, grpo_mixed: float = 0.5):
    """Two seeds of the four arms: GRPO (mid, final) = (4, 5)/8 in both seeds; SDAR (6, 6) and
    (5, 5); GRPO+OPSD as GRPO; SDAR on the noisy teacher (4, 4) and (3, 3)."""
    _write(root / "initial", [{**r, "split": "val"} for r in _episodes("initial", "T=1", 2)
                              + _episodes("initial", "greedy", 3)])
    (root / "initial" / "run.json").write_text("{}")
    sdar = {"sdar/noisy/false/gate_mean": 0.6, "sdar/noisy/false/gap_mean": 0.2, "timing_s/teacher": 3.0,
            "actor/sdar/term_logprob_grad_norm": 0.1, "actor/sdar/pg_logprob_grad_norm": 1.0}
    noisy = {**sdar, "sdar/noisy/true/gate_mean": 0.2, "sdar/noisy/true/gap_mean": -0.5}
    for seed in (0, 1):
        _run(root / f"grpo_seed{seed}", 4, 5, 4, mixed=grpo_mixed if seed == 1 else 0.5)
        _run(root / f"sdar_seed{seed}", 6 - seed, 6 - seed, 6, train_extra=sdar)
        _run(root / f"grpo_opsd_seed{seed}", 4, 5, 4, train_extra=sdar)
        _run(root / f"sdar_noisy_seed{seed}", 4 - seed, 4 - seed, 4, train_extra=noisy)


def test_the_results_page_puts_the_precondition_first_then_the_primary_test(tmp_path):
    from verl_sdar.reports.vault_page import report

    _sweep(tmp_path / "raw")
    page = report(tmp_path / "raw", tmp_path / "results.md", planned=2, pictures=False)
    assert page == (tmp_path / "results.md").read_text()
    # precondition: gain 5/8 - 2/8, greedy 3/8 -> 4/8, early mixed 0.5 in both GRPO seeds
    assert "| 0 | 0.250 | 0.375 (greedy) | 0.625 | +0.375 | 0.375 -> 0.500 | 0.50 |" in page
    assert "**Held in every GRPO seed.**" in page and "uninterpretable" not in page
    # primary: per seed (mid + final) / 2: SDAR 0.75, 0.625; GRPO 0.5625 twice: D = 0.1875, 0.0625;
    # both positive of 2 seeds: p = 2/4; t interval 0.125 +- 12.706 * 0.0625
    assert page.index("## 1. Does the baseline learn?") < page.index("## 2. The primary test")
    assert ("sdar - grpo (val, T=1, mid+final): mean difference +0.125 (0.688 vs 0.562), 95% CI [-0.669, +0.919], "
            "exact sign-flip p = 0.500 over 2 seeds (2 of 2 positive)") in page
    assert "| 0 | 0.750 | 0.562 | +0.188 |" in page
    # secondary: the noisy teacher's arm against SDAR: (0.5 - 0.75, 0.375 - 0.625) = -0.25 twice
    assert "sdar_noisy - sdar (val, T=1, mid+final): mean difference -0.250" in page
    assert "grpo_opsd - grpo (val, greedy, final): mean difference +0.000" in page
    # mechanism (T=1): SDAR seed 0 key 6/8, seed 1 5/8 at mid and final -> 0.6875; hidden right in even
    # tasks: 0.5; GRPO's key 4/8 at mid, 5/8 at the end
    assert "| sdar | 0.69 | 0.69 | - | - | 0.50 |" in page
    assert "| grpo | 0.50 | 0.62 | - | - | 0.50 |" in page
    # the teacher: gates on true / wrong-route rows, the term's share 0.1, 3 s a step of teacher pass
    assert "| sdar_noisy | 0.600 | 0.200 | 0.200 | -0.500 | 0.100 | 10.0 | 3.000 | 1.0 |" in page
    assert "| grpo | - | - | - | - | - | 10.0 | - | 1.0 |" in page


def test_the_results_page_waits_for_every_seed_and_flags_a_baseline_that_did_not_learn(tmp_path):
    from verl_sdar.reports.vault_page import report

    _sweep(tmp_path / "raw", grpo_mixed=0.0)  # GRPO seed 1: no mixed early group
    waiting = report(tmp_path / "raw", tmp_path / "results.md", planned=3, pictures=False)
    assert "**In progress.**" in waiting and "grpo 2, sdar 2, grpo_opsd 2, sdar_noisy 2" in waiting
    assert "mean difference" not in waiting and "0.625" not in waiting  # no outcome before the end
    assert "| sdar_seed0 | - | 10.0 | 1 | 1.0 |" in waiting
    page = report(tmp_path / "raw", tmp_path / "results.md", planned=3, pictures=False, interim=True)
    assert "*INTERIM, incomplete" in page
    assert "mixed_groups NO" in page and "**NOT held**: the comparisons below are uninterpretable" in page
    assert "## 2. The primary test (pre-registered) (uninterpretable: the precondition did not hold)" in page
    # the failed seed's decisions, mid -> final: key 4/8 -> 5/8, hidden right in even tasks
    assert "- seed 1: mid T=1 0.500 -> final 0.625; key 0.50 -> 0.62, hidden 0.50 -> 0.50\n" in page


def test_the_page_states_the_effect_the_sweep_could_detect_from_the_pilots_spread(tmp_path):
    from verl_sdar.reports.stats import minimum_detectable_effect
    from verl_sdar.reports.vault_page import report

    _sweep(tmp_path / "raw")
    pilot = tmp_path / "pilot"
    _write(pilot / "initial", _episodes("initial", "T=1", 2) + _episodes("initial", "greedy", 3))
    rows = [{"step": 1, "group/mixed_reward_share": 1.0}]
    # pilot primaries (4/8 + 6/8) / 2 = 0.625 and (2/8 + 4/8) / 2 = 0.375: sd_1 0.1768, sd_D 0.25
    _write(pilot / "grpo_seed100", _episodes("mid", "T=1", 4) + _episodes("final", "T=1", 6)
           + _episodes("final", "greedy", 6), rows)
    _write(pilot / "grpo_seed101", _episodes("mid", "T=1", 2) + _episodes("final", "T=1", 4)
           + _episodes("final", "greedy", 4), rows)
    page = report(tmp_path / "raw", tmp_path / "results.md", planned=2, pictures=False, pilot=pilot)
    mde = minimum_detectable_effect(0.25, 2)
    assert f"paired spread sd_D = 0.250 (`{pilot}`), the test over 2 seeds detects a mean difference of about " \
           f"{mde:.2f} with 80% power" in page
    assert "Power" not in report(tmp_path / "raw", tmp_path / "results.md", planned=2, pictures=False)


def _turn(observation: str, output: str) -> dict:
    return {"input": f"user\nWhat you observe now: You are in the hall.\nWhat you observe now: {observation}\n"
                     "Admissible actions at this step: ['go left', 'go right'].", "output": output}


def test_signs_followed_are_counted_per_direction_from_the_rollout_dump(tmp_path):
    from verl_sdar.reports.vault import sign_following, sign_page

    left = "<think>A sign points left.</think><action>go left</action>"
    step = [_turn("You are at fork 1 of 3. A sign points left.", left),
            _turn("You are at fork 2 of 3. A sign points right.", left),
            _turn("You are at fork 2 of 3. A sign points right.", "<action>go right</action>"),
            _turn("You are at fork 3 of 3. A sign points right.", "<action>open the vault</action>"),  # invalid
            _turn("You are at fork 1 of 3. There is no sign here.", "<action>go right</action>")]  # not a sign
    assert sign_following(step) == {"left": 1.0, "right": pytest.approx(1 / 3)}
    assert sign_following(step[-1:]) == {"left": None, "right": None}
    # a sign only in an earlier observation of the prompt is not this turn's
    assert sign_following([{"input": "What you observe now: A sign points left.\nWhat you observe now: a note",
                            "output": "<action>go right</action>"}]) == {"left": None, "right": None}
    for run, steps in {"grpo_seed0": [step[:1], step[:3]], "sdar_seed0": [step[:1], step[:1] + step[2:3]]}.items():
        (tmp_path / run / "dump").mkdir(parents=True)
        for i, rows in enumerate(steps, start=1):
            (tmp_path / run / "dump" / f"{i}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = sign_page(tmp_path)
    assert "| grpo_seed0 | 1.00 (1) | 0.50 (2) | 2 |" in page and "| sdar_seed0 | 1.00 (1) | 1.00 (2) | - |" in page
    assert "grpo_seed0, per step (left / right): 1: 1.00 / -; 2: 1.00 / 0.50" in page
    assert "sdar_seed0, per step" not in page
