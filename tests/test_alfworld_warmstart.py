"""Warm-start pieces for ALFWorld: expert samples in the agent loop's format, SFT, evaluation."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SKILLS = REPO / "envs" / "alfworld" / "skills"


@pytest.fixture(scope="module")
def two_games(alfworld_small):
    from verl_sdar.envs.alfworld.play import find_games, split_dir

    return find_games(split_dir("train", alfworld_small))[:2]


@pytest.fixture(scope="module")
def turns(two_games):
    from verl_sdar.envs.alfworld.expert_sft import expert_turns

    return expert_turns(two_games)


def test_expert_turns_are_the_agent_loops_prompts_with_expert_actions(two_games, turns):
    from verl_sdar.envs.alfworld.play import run_expert
    from verl_sdar.envs.alfworld.prompts import project_action

    plans = [run_expert(g) for g in two_games]
    assert len(turns) == sum(p.steps for p in plans)
    first = [t for t in turns if t.game == two_games[0]]
    assert [project_action(t.response).action for t in first] == plans[0].actions
    assert all(project_action(t.response).valid for t in turns)
    assert "Admissible actions at this step" in first[0].prompt and "Prior to this step" not in first[0].prompt
    assert "already taken 1 step(s)" in first[1].prompt  # history, as the agent loop renders it


def test_skill_fraction_puts_the_teachers_block_on_whole_games(turns):
    from verl_sdar.envs.alfworld.expert_sft import DEFAULT_HEADER, sft_rows

    all_rows = sft_rows(turns, str(SKILLS), 1.0)
    assert all(r["with_skills"] and r["messages"][0]["role"] == "system" for r in all_rows)
    assert all(r["messages"][0]["content"].startswith(DEFAULT_HEADER) for r in all_rows)
    none = sft_rows(turns, str(SKILLS), 0.0)
    assert not any(r["with_skills"] for r in none) and all(len(r["messages"]) == 2 for r in none)
    half = sft_rows(turns, str(SKILLS), 0.5, seed=3)
    for game in {r["game"] for r in half}:  # one decision per game
        assert len({r["with_skills"] for r in half if r["game"] == game}) == 1
    with pytest.raises(ValueError, match="skill_fraction"):
        sft_rows(turns, str(SKILLS), 1.5)


def test_sft_loss_mask_covers_the_response_only_and_training_lowers_the_loss(tmp_path, turns):
    from transformers import AutoTokenizer

    from verl_sdar.envs.alfworld.expert_sft import sft_rows, sft_train, tokenize_rows
    from verl_sdar.tiny_model import build_tiny_model

    rows = sft_rows(turns, str(SKILLS), 0.5)
    base = build_tiny_model(tmp_path / "base", seed=0, extra_corpus=[m["content"] for r in rows for m in r["messages"]])
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids, mask = tokenize_rows(tokenizer, rows[:1], 4096)[0]
    trained_on = tokenizer.decode([t for t, m in zip(ids, mask) if m])
    assert trained_on == rows[0]["messages"][-1]["content"] + "<|im_end|>"
    with pytest.raises(ValueError, match="max_length"):
        tokenize_rows(tokenizer, rows[:1], 10)
    log = sft_train(str(base), rows, str(tmp_path / "sft"), epochs=6, lr=3e-3, batch_size=4, log_every=1)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], log
    assert (tmp_path / "sft" / "config.json").exists()


def test_evaluate_plays_games_with_and_without_skills(tmp_path, two_games):
    from verl_sdar.envs.alfworld.evaluate import evaluate, summary
    from verl_sdar.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "m", seed=0)
    for skills in (None, str(SKILLS)):
        results = evaluate(str(model), two_games, max_steps=2, skills=skills, max_new_tokens=8)
        s = summary(results)
        assert s["games"] == 2 and all(r.steps == 2 for r in results) and 0.0 <= s["success"] <= 1.0
        assert s["invalid_turn_share"] == 1.0  # a random tiny model never writes the tags
