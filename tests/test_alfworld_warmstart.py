"""Warm-start pieces for ALFWorld: expert samples in the agent loop's format, SFT, evaluation."""

from __future__ import annotations

import json
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


def test_fraction_puts_the_teachers_block_on_whole_games(turns):
    from verl_sdar.envs.alfworld.expert_sft import DEFAULT_HEADER, sft_rows
    from verl_sdar.envs.alfworld.privileged import privileged_text, route_hint

    skills = privileged_text("skills", str(SKILLS))
    all_rows = sft_rows(turns, skills, 1.0)
    assert all(r["with_privileged"] and r["messages"][0]["role"] == "system" for r in all_rows)
    assert all(r["messages"][0]["content"].startswith(DEFAULT_HEADER) for r in all_rows)
    none = sft_rows(turns, skills, 0.0)
    assert not any(r["with_privileged"] for r in none) and all(len(r["messages"]) == 2 for r in none)
    assert sft_rows(turns, None, 1.0) == none
    half = sft_rows(turns, route_hint, 0.5, seed=3)
    for game in {r["game"] for r in half}:  # one decision per game
        assert len({r["with_privileged"] for r in half if r["game"] == game}) == 1
    routed = sft_rows(turns, route_hint, 1.0)
    assert routed[0]["messages"][0]["content"] == DEFAULT_HEADER + route_hint(turns[0].game)
    with pytest.raises(ValueError, match="fraction"):
        sft_rows(turns, skills, 1.5)


def test_route_hint_lists_the_places_the_expert_goes_to(tmp_path, two_games):
    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import run_expert
    from verl_sdar.envs.alfworld.privileged import ROUTE_PREFIX, privileged_text, route_hint

    for game in two_games:
        goes = [a[len("go to "):] for a in run_expert(game).actions if a.startswith("go to ")]
        hint = route_hint(game)
        assert hint.startswith(ROUTE_PREFIX) and hint.endswith(".")
        assert hint[len(ROUTE_PREFIX):-1].split(", ") == [p for i, p in enumerate(goes) if i == 0 or goes[i - 1] != p]
    # hand case: consecutive repeats merged, non-go actions ignored
    game = tmp_path / "game.tw-pddl"
    game.write_text(json.dumps({"walkthrough": ["go to fridge 1", "open fridge 1", "go to fridge 1",
                                                "take apple 1 from fridge 1", "go to countertop 2"]}))
    assert route_hint(str(game)) == "Places to visit, in order: fridge 1, countertop 2."
    game.write_text(json.dumps({"walkthrough": None}))
    with pytest.raises(ValueError, match="no expert walkthrough"):
        route_hint(str(game))
    assert privileged_text("none") is None and privileged_text("route") is route_hint
    with pytest.raises(ValueError, match="unknown privileged kind"):
        privileged_text("oracle")
    with pytest.raises(ValueError, match="skill library"):
        privileged_text("skills")
    rows = make_rows(two_games, "train", privileged=route_hint)
    assert [r["extra_info"]["privileged"] for r in rows] == [route_hint(g) for g in two_games]
    assert all(r["extra_info"]["privileged"] == "" for r in make_rows(two_games, "train"))


def test_sft_loss_mask_covers_the_response_only_and_training_lowers_the_loss(tmp_path, turns):
    from transformers import AutoTokenizer

    from verl_sdar.envs.alfworld.expert_sft import sft_rows, sft_train, tokenize_rows
    from verl_sdar.tiny_model import build_tiny_model

    from verl_sdar.envs.alfworld.privileged import route_hint

    rows = sft_rows(turns, route_hint, 0.5)
    base = build_tiny_model(tmp_path / "base", seed=0, extra_corpus=[m["content"] for r in rows for m in r["messages"]])
    tokenizer = AutoTokenizer.from_pretrained(base)
    ids, mask = tokenize_rows(tokenizer, rows[:1], 4096)[0]
    trained_on = tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m])
    assert trained_on == rows[0]["messages"][-1]["content"] + "<|im_end|>"
    with pytest.raises(ValueError, match="max_length"):
        tokenize_rows(tokenizer, rows[:1], 10)
    log = sft_train(str(base), rows, str(tmp_path / "sft"), epochs=6, lr=3e-3, batch_size=4, log_every=1)
    assert log[-1]["loss"] < 0.8 * log[0]["loss"], log
    assert (tmp_path / "sft" / "config.json").exists()


def test_evaluate_plays_games_with_and_without_privileged_text(tmp_path, two_games):
    from verl_sdar.envs.alfworld.evaluate import evaluate, summary
    from verl_sdar.envs.alfworld.privileged import privileged_text
    from verl_sdar.tiny_model import build_tiny_model

    model = build_tiny_model(tmp_path / "m", seed=0)
    for privileged in (None, privileged_text("skills", str(SKILLS)), privileged_text("route")):
        results = evaluate(str(model), two_games, max_steps=2, privileged=privileged, max_new_tokens=8)
        s = summary(results)
        assert s["games"] == 2 and all(r.steps == 2 for r in results) and 0.0 <= s["success"] <= 1.0
        assert s["invalid_turn_share"] == 1.0  # a random tiny model never writes the tags


def test_evaluate_plays_reuses_envs_and_seeds_each_play_on_its_own(tmp_path, two_games):
    """k plays in one call (envs loaded once) give what k separate calls give, play by play."""
    from verl_sdar.envs.alfworld.evaluate import evaluate, evaluate_plays
    from verl_sdar.tiny_model import build_tiny_model

    model = str(build_tiny_model(tmp_path / "m", seed=0))
    plays = evaluate_plays(model, two_games, [(1.0, 3), (0.0, 0), (1.0, 5)], max_steps=2, max_new_tokens=8)
    for (temperature, seed), got in zip([(1.0, 3), (0.0, 0), (1.0, 5)], plays, strict=True):
        alone = evaluate(model, two_games, max_steps=2, temperature=temperature, seed=seed, max_new_tokens=8)
        def facts(results):
            return [(r.game, r.actions, r.steps, r.won) for r in results]

        assert facts(got) == facts(alone)
    assert [r.actions for r in plays[0]] != [r.actions for r in plays[2]]  # other seed, other samples


def test_expert_logprob_is_the_teacher_forced_response_logprob(tmp_path, turns):
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from verl_sdar.envs.alfworld.evaluate import expert_logprob
    from verl_sdar.envs.alfworld.expert_sft import sft_rows, tokenize_rows
    from verl_sdar.envs.alfworld.privileged import route_hint
    from verl_sdar.tiny_model import build_tiny_model

    model_dir = build_tiny_model(tmp_path / "m", seed=0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    for privileged in (None, route_hint):
        # by hand, one sample at a time (no padding): sum of log pi over the response tokens
        expected = []
        for ids, mask in tokenize_rows(tokenizer, sft_rows(turns[:3], privileged, 1.0), 8192):
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1], -1)
            expected.append(sum(float(logp[i - 1, ids[i]]) for i in range(1, len(ids)) if mask[i]))
        got = expert_logprob(str(model_dir), turns[:3], privileged, batch_size=2)  # padded batches
        assert got["turns"] == 3
        assert got["mean_logprob"] == pytest.approx(sum(expected) / 3, abs=1e-3)
        assert got["mean_prob"] == pytest.approx(sum(math.exp(e) for e in expected) / 3, rel=1e-3)
