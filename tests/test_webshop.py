"""WebShop-style shop: catalogue, WebShop's reward on hand-computed cases, the env's pages, the
agent loop (oracle, invalid and inadmissible actions) and one SDAR step through verl's main_ppo."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from agent_loop_helpers import FakeServer, make_agent_loop, run_episode
from main_ppo_runner import assert_no_identical_group, by_step, run_main_ppo

from verl_sdar.envs.turn_prompts import format_response
from verl_sdar.envs.webshop.catalogue import build, type_nouns
from verl_sdar.envs.webshop.env import Shop, WebShopEnv
from verl_sdar.envs.webshop.reward import (
    compute_graded_score,
    compute_score,
    option_matches,
    type_reward,
    webshop_reward,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    out = tmp_path_factory.mktemp("webshop")
    build(out, n_products=3000, n_train=500, n_test=100, seed=0)
    return out


@pytest.fixture(scope="module")
def shop(catalogue):
    return Shop.from_dir(catalogue)


@pytest.fixture(scope="module")
def goals(catalogue):
    return [json.loads(line) for line in (catalogue / "goals_test.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


# ----------------------------------------------------------------------------- catalogue
def test_catalogue_is_deterministic_and_goals_are_consistent(catalogue, shop, goals, tmp_path):
    build(tmp_path, n_products=3000, n_train=500, n_test=100, seed=0)
    for name in ("products.jsonl", "goals_train.jsonl", "goals_test.jsonl"):
        assert (tmp_path / name).read_bytes() == (catalogue / name).read_bytes(), name
    assert len(shop.products) == 3000 and len({p["asin"] for p in shop.products}) == 3000
    train = [json.loads(line) for line in (catalogue / "goals_train.jsonl").read_text().splitlines()]
    assert not {g["asin"] for g in train} & {g["asin"] for g in goals}  # test goals come from unseen products
    for g in goals:
        p = shop.by_asin[g["asin"].lower()]
        assert set(g["attributes"]) <= set(p["Attributes"]) and p["price"] <= g["price_upper"]
        assert all(v in p["options"][k] for k, v in g["goal_options"].items())
        assert f"price lower than {g['price_upper']:.2f} dollars" in g["instruction_text"]


# ----------------------------------------------------------------------------- reward (hand-computed)
PRODUCT = {
    "asin": "B0X", "name": "Acme Classic T-Shirt, Cotton", "query": "t-shirt",
    "product_category": "Fashion › Clothing › T-Shirt", "Attributes": ["cotton", "slim fit"],
    "options": {"size": ["small", "medium"], "color": ["black", "navy"]}, "price": 20.0,
    "BulletPoints": ["Cotton: soft."], "Description": "A machine washable shirt.",
}
GOAL = {
    "query": "t-shirt", "name": "Vireo Basic T-Shirt, Relaxed Fit", "product_category": "Fashion › Clothing › T-Shirt",
    "attributes": ["cotton", "machine washable", "long sleeve"], "goal_options": {"size": "medium", "color": "navy"},
    "price_upper": 25.0,
}
NOUNS = type_nouns()


def test_webshop_reward_hand_computed():
    # attributes: cotton (attribute), machine washable (description) -> 2 of 3; options: both; price ok
    r = webshop_reward(PRODUCT, GOAL, {"size": "medium", "color": "navy"}, NOUNS)
    assert r["r_type"] == 1.0 and r["reward"] == pytest.approx((2 + 2 + 1) / (3 + 2 + 1))
    # one option wrong and over budget: (2 + 1 + 0) / 6
    expensive = {**PRODUCT, "price": 30.0}
    assert webshop_reward(expensive, GOAL, {"size": "small", "color": "navy"}, NOUNS)["reward"] == pytest.approx(3 / 6)
    # nothing selected: (2 + 0 + 1) / 6
    assert webshop_reward(PRODUCT, GOAL, {}, NOUNS)["reward"] == pytest.approx(0.5)


def test_type_reward_cases():
    # goal nouns {vireo, t, shirt}; product nouns {acme, t, shirt}: title_score 2/3, query match -> 1
    assert type_reward(PRODUCT, GOAL, NOUNS) == {"r_type": 1.0, "query_match": True, "category_match": True,
                                                 "title_score": pytest.approx(2 / 3)}
    # another type, same top/sub category, no shared nouns: title_score 0 -> r_type 0
    hoodie = {**PRODUCT, "name": "Acme Hoodie", "query": "hoodie", "product_category": "Fashion › Clothing › Hoodie"}
    goal = {**GOAL, "name": "Vireo Jeans"}
    assert type_reward(hoodie, goal, NOUNS)["r_type"] == 0.0
    # shares one noun of ten-ish? title_score 1/2 but query and category differ -> still > 0.2 -> 1
    other = {**PRODUCT, "name": "Vireo Rug", "query": "rug", "product_category": "Home › Decor › Rug"}
    assert type_reward(other, {**GOAL, "name": "Vireo Jeans"}, NOUNS) == {
        "r_type": 1.0, "query_match": False, "category_match": False, "title_score": 0.5}
    # title_score 1/3 = 0.33 > 0.2: 1; with 1/5 (<= 0.2, >= 0.1) and no query/category match: 0.5
    five = {**GOAL, "name": "Acme Vireo Kestrel Lumen Rug", "query": "rug", "product_category": "Home › Decor › Rug"}
    assert type_reward({**PRODUCT, "name": "Acme Tent"}, five, NOUNS)["r_type"] == 0.5
    # no nouns in the goal title: title_score 0.2 (not > 0.2); query match keeps r_type 1
    assert type_reward(PRODUCT, {**GOAL, "name": "classic"}, NOUNS)["title_score"] == 0.2


def test_option_matching_normalises_colours():
    assert option_matches(["navy blue", "medium"], ["navy", "medium"]) == 2
    assert option_matches(["dark gray"], ["gray"]) == 1
    assert option_matches(["small"], ["x-small"]) == 1  # token-set containment, like ratio 100
    assert option_matches(["red"], ["blue"]) == 0


def test_compute_score_is_the_references_binary_reward_and_logs_the_graded_one():
    # a near-perfect purchase (one of two options wrong: 3 of 4 parts matched) earns nothing to train on
    near = compute_score("webshop", "", "", {"webshop_reward": 0.75, "task_type": "fashion", "bought": True})
    assert near["score"] == 0.0 and near["webshop_score"] == 75.0 and near["success"] == 0.0
    assert near["task_type"] == "fashion" and near["bought"] == 1.0
    perfect = compute_score("webshop", "", "", {"webshop_reward": 1.0, "bought": True})
    assert perfect["score"] == 10.0 and perfect["webshop_score"] == 100.0 and perfect["success"] == 1.0
    assert compute_score("webshop", "", "", {})["score"] == 0.0  # no purchase


def test_compute_graded_score_keeps_partial_credit():
    s = compute_graded_score("webshop", "", "", {"webshop_reward": 0.5, "task_type": "fashion", "bought": True})
    assert s["score"] == 5.0 and s["webshop_score"] == 50.0 and s["success"] == 0.0 and s["task_type"] == "fashion"
    assert compute_graded_score("webshop", "", "", {"webshop_reward": 1.0})["score"] == 10.0


# ----------------------------------------------------------------------------- env
def oracle_actions(goal: dict) -> list[str]:
    return [f"search[{goal['name']}]", f"click[{goal['asin'].lower()}]",
            *[f"click[{v}]" for v in goal["goal_options"].values()], "click[buy now]"]


def test_oracle_buys_the_goal_product_with_reward_1_on_every_goal(shop, goals, capsys):
    env = WebShopEnv(shop, max_steps=15)
    t0, steps, wins = time.perf_counter(), 0, 0
    for g in goals:
        env.reset(g)
        for action in oracle_actions(g):
            obs, reward, done, info = env.step(action)
            steps += 1
            assert info["valid_action"], (action, obs)
        assert done and info["won"] and reward == 1.0
        wins += 1
    rate = steps / (time.perf_counter() - t0)
    with capsys.disabled():
        print(f"\n[webshop] oracle {wins}/{len(goals)} reward 1; env {rate:.0f} steps/s (search included)")


def test_pages_back_navigation_and_inadmissible_actions(shop, goals):
    g = goals[0]
    env = WebShopEnv(shop, max_steps=15)
    obs, info = env.reset(g)
    assert info["admissible_commands"] == ["search[<your query>]"] and g["instruction_text"] in obs
    _, _, _, info = env.step("click[buy now]")          # not on the search page
    assert not info["valid_action"]
    obs, _, _, info = env.step(f"search[{g['query']}]")
    assert "Page 1 (Total results: 50)" in obs and "click[next >]" in info["admissible_commands"]
    obs, _, _, info = env.step("click[next >]")
    assert "Page 2" in obs and "click[< prev]" in info["admissible_commands"]
    asin = info["admissible_commands"][-1][len("click["):-1]
    obs, _, _, info = env.step(f"click[{asin}]")
    assert "Buy Now" in obs and "click[buy now]" in info["admissible_commands"]
    _, _, _, info = env.step("click[not an option]")
    assert not info["valid_action"]
    obs, _, _, _ = env.step("click[features]")
    assert "< Prev" in obs
    env.step("click[< prev]")
    obs, _, _, info = env.step("click[back to search]")
    assert info["admissible_commands"] == ["search[<your query>]"]
    obs, _, _, info = env.step("search[zzzzqqq]")
    assert "No results." in obs and info["admissible_commands"] == ["click[back to search]"]


def test_step_limit_ends_without_reward(shop, goals):
    env = WebShopEnv(shop, max_steps=2)
    env.reset(goals[0])
    env.step(f"search[{goals[0]['query']}]")
    _, reward, done, info = env.step("click[back to search]")
    assert done and reward == 0.0 and not info["won"] and not info["bought"]


# ----------------------------------------------------------------------------- agent loop
def make_webshop_loop(tokenizer, server, catalogue, max_steps=15, **env):
    from verl_sdar.envs.webshop.agent_loop import WebShopAgentLoop

    env = {"max_steps": max_steps, "history_length": 2, "catalogue_dir": str(catalogue), **env}
    return make_agent_loop(WebShopAgentLoop, tokenizer, server, env)


def kwargs_of(goal: dict) -> dict:
    from verl_sdar.envs.webshop.dataset import make_rows

    row = make_rows([goal], "test")[0]
    return {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}


def test_oracle_through_the_agent_loop_scores_10_on_every_turn_row(tokenizer, catalogue, goals):
    g = goals[1]
    actions = oracle_actions(g)
    server = FakeServer(tokenizer, [format_response("shop", a) for a in actions])
    outputs = run_episode(lambda: make_webshop_loop(tokenizer, server, catalogue), **kwargs_of(g))
    assert len(outputs) == len(actions)
    for turn, out in enumerate(outputs):
        f = out.extra_fields
        assert f["turn"] == turn and f["valid"] and f["won"] and f["webshop_reward"] == 1.0 and f["bought"]
        assert f["task_type"] == g["category"] and f["invalid_action_penalty"] == 0.0
        assert compute_score("webshop", "", "", {**kwargs_of(g)["extra_info"], **f})["score"] == 10.0
    second = tokenizer.decode(outputs[1].prompt_ids)
    assert g["instruction_text"] in second and "already taken 1 step(s)" in second


@pytest.mark.parametrize("penalise_inadmissible", [False, True], ids=["reference", "ours"])
def test_malformed_actions_are_penalised_and_inadmissible_ones_flagged(tokenizer, catalogue, goals,
                                                                        penalise_inadmissible):
    """The reference penalises format errors only (default); ``env.penalise_inadmissible=true`` also
    penalises a well-formatted action the page does not offer. Both flag it."""
    g = goals[2]
    responses = [
        "search for it please",                               # no tags
        format_response("x", "click[buy now]"),               # well formatted, not admissible on the search page
        format_response("x", f"search[{g['query']}]"),        # fine
    ]
    server = FakeServer(tokenizer, responses)
    outputs = run_episode(lambda: make_webshop_loop(tokenizer, server, catalogue, max_steps=3,
                                                    penalise_inadmissible=penalise_inadmissible), **kwargs_of(g))
    f = [o.extra_fields for o in outputs]
    assert [x["inadmissible"] for x in f] == [False, True, False]
    assert [x["valid"] for x in f] == [False, not penalise_inadmissible, True]
    assert "no_action_tags" in f[0]["invalid_reason"]
    assert f[1]["invalid_reason"] == ("inadmissible_action" if penalise_inadmissible else "")
    assert [x["invalid_action_penalty"] for x in f] == [0.1, 0.1 if penalise_inadmissible else 0.0, 0.0]
    assert not f[-1]["won"] and f[-1]["webshop_reward"] == 0.0 and not f[-1]["bought"]


def test_missing_catalogue_setting_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="env.catalogue_dir"):
        from verl_sdar.envs.webshop.agent_loop import WebShopAgentLoop

        make_agent_loop(WebShopAgentLoop, tokenizer, FakeServer(tokenizer, []), {"max_steps": 3})


def test_skill_library_covers_every_category():
    from verl_sdar.envs.webshop.catalogue import CATEGORIES
    from verl_sdar.skills import SkillLibrary

    library = SkillLibrary.load(REPO / "envs" / "webshop" / "skills")
    assert set(library.task_skills) == set(CATEGORIES)


# ----------------------------------------------------------------------------- main_ppo on CPU
def test_one_sdar_step_through_main_ppo(tmp_path, catalogue):
    """One SDAR step (validation before it) of verl's real main_ppo on CPU, tiny model, skills by
    product category as the teacher's privileged context, turn-row GRPO."""

    from verl_sdar.envs.webshop.dataset import build as build_rows
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    (tmp_path / "webshop-catalogue").symlink_to(catalogue)
    build_rows(catalogue, tmp_path / "webshop", limit_train=4, limit_val=4)
    records = run_main_ppo(
        tmp_path, "webshop/tiny_cpu_sdar",
        "trainer.total_training_steps=1", "trainer.val_before_train=true", "data.shuffle=false",
        "env.max_steps=2", "sdar.privileged.source=skills",
        f"sdar.skills.library={REPO / 'envs' / 'webshop' / 'skills'}",
        "actor_rollout_ref.rollout.full_determinism=true", f"trainer.rollout_data_dir={tmp_path / 'dump'}",
        timeout=420,
    )
    merged = by_step(records)
    val, step = merged[0], merged[1]
    assert_no_identical_group(tmp_path / "dump", 1, sessions=int(step["group/sessions_mean"]))
    assert step["group/identical_share"] == 0.0
    assert any(k.startswith("val-core/webshop/success/") for k in val), sorted(val)
    assert "val-aux/webshop/webshop_score/mean@1" in val
    assert any(k.startswith("val-aux/webshop/webshop_score/") and not k.endswith("@1") for k in val), sorted(val)
    assert step["episode/episodes"] == 4 and step["sdar/rows_with_privileged"] == 1.0
    assert step["sdar/skills/unknown_task_type_rows"] == 0.0 and 0.0 <= step["sdar/invalid_action_rows"] <= 1.0
