"""The vault task (verl_sdar.envs.vault): its rules played by hand, the optimal policy on every
split, the datasets (splits disjoint, the noisy condition's wrong routes), and real episodes of the
``vault`` agent loop against a scripted server."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from agent_loop_helpers import FakeServer, make_agent_loop, run_episode

from verl_sdar.envs.vault.env import (
    OPEN,
    VaultEnv,
    VaultTask,
    expert_actions,
    generate_tasks,
    go,
    note_text,
    route_text,
    take,
)

TASK = VaultTask("t0", keys=("red", "blue", "green"), key="blue", ways=("left", "right", "left"),
                 signs=(True, False, True))
# the same game with fork 2 hidden: no sign, and the note leaves it out
HIDDEN_TASK = VaultTask("t1", keys=TASK.keys, key=TASK.key, ways=TASK.ways, signs=TASK.signs, noted=(False,) * 3)


def play(task, actions, max_steps=None):
    env = VaultEnv(max_steps=max_steps)
    env.reset(task)
    result = None
    for action in actions:
        result = env.step(action)
        if result[1]:
            break
    return env, result


def test_the_optimal_policy_wins_and_the_texts_say_what_it_needs():
    env = VaultEnv()
    task_text, obs, admissible = env.reset(TASK)
    assert task_text == "Open the vault at the end of the 3 forks."
    assert admissible == [take("red"), take("blue"), take("green")]
    # the hall's note: the key; each fork's observation says what can be read there
    assert note_text(TASK) == "The note says: the vault opens only with the blue key."
    assert note_text(TASK) in obs
    obs, done, won, admissible, info = env.step(take("blue"))
    assert info["decision"] == ("key", True)
    assert obs.endswith("You are at fork 1 of 3. A sign points left.") and admissible == [go("left"), go("right")]
    obs, _, _, _, info = env.step(go("left"))
    assert obs == "You are at fork 2 of 3. There is no sign here. Your note says: at this fork go right."
    assert info["decision"] == ("sign", True)
    _, _, _, _, info = env.step(go("right"))
    assert info["decision"] == ("note", True)
    obs, done, won, admissible, info = env.step(go("left"))
    assert obs == "You stand before the vault door." and admissible == [OPEN] and not done
    obs, done, won, admissible, info = env.step(OPEN)
    assert done and won and info["right_key"] and info["forks_passed"] == 3 and env.steps == 5
    assert info["decision"] is None
    assert expert_actions(TASK) == [take("blue"), go("left"), go("right"), go("left"), OPEN]
    assert [TASK.kind(i) for i in range(3)] == ["sign", "note", "sign"] and TASK.hidden == ()
    assert route_text(TASK) == "Route: take the blue key; elsewhere follow the signs and your note."


def test_a_hidden_fork_is_said_to_be_unknown_and_only_the_route_gives_its_way():
    env = VaultEnv()
    env.reset(HIDDEN_TASK)
    env.step(take("blue"))
    obs, *_ = env.step(go("left"))
    assert obs == "You are at fork 2 of 3. There is no sign here, and your note says nothing of this fork."
    assert "right" not in obs
    _, done, _, _, info = env.step(go("left"))
    assert done and info["decision"] == ("hidden", False)
    assert HIDDEN_TASK.hidden == (1,) and HIDDEN_TASK.kind(1) == "hidden"
    assert route_text(HIDDEN_TASK) == ("Route: take the blue key; at fork 2 go right; "
                                       "elsewhere follow the signs and your note.")
    assert HIDDEN_TASK.signature != TASK.signature
    assert VaultTask.from_dict(json.loads(json.dumps(HIDDEN_TASK.to_dict()))) == HIDDEN_TASK
    with pytest.raises(ValueError, match="only forks without a sign"):
        VaultTask("x", TASK.keys, "red", ("left",), (True,), (True,))
    with pytest.raises(ValueError, match="at most one hidden fork"):
        VaultTask("x", TASK.keys, "red", ("left", "left"), (False, False), (False, False))


def test_a_wrong_key_is_only_noticed_at_the_vault_and_a_wrong_way_ends_the_episode():
    env, (obs, done, won, _, info) = play(TASK, [take("red"), go("left"), go("right"), go("left"), OPEN])
    assert done and not won and env.steps == 5 and "does not fit" in obs and info["right_key"] is False
    env, (obs, done, won, _, info) = play(TASK, [take("blue"), go("left"), go("left")])
    assert done and not won and "dead end" in obs and info["forks_passed"] == 1


def test_inadmissible_text_changes_nothing_and_costs_a_turn():
    env, (obs, done, won, admissible, info) = play(TASK, ["open the vault"])
    assert obs == "Nothing happens." and not done and not info["valid_action"] and env.held is None
    assert admissible == [take(c) for c in TASK.keys]
    env, (obs, done, *_rest) = play(TASK, ["dance", "dance"], max_steps=2)
    assert done  # the step cap ends the episode


def test_generated_tasks_are_distinct_valid_and_the_optimal_policy_wins_each():
    tasks = generate_tasks(200, 4, seed=3)
    assert len({t.signature for t in tasks}) == 200 and tasks[0].signature == (tasks[0].keys, tasks[0].key,
                                                                               tasks[0].ways, tasks[0].signs,
                                                                               tasks[0].noted)
    assert generate_tasks(200, 4, seed=3) == tasks  # deterministic
    for task in tasks:
        assert not all(task.signs)  # the note always matters
        assert task.hidden == ()  # hidden_share 0: the note covers every fork without a sign
        assert VaultTask.from_dict(json.loads(json.dumps(task.to_dict()))) == task
        env, (_, done, won, _, _) = play(task, expert_actions(task))
        assert done and won and env.steps == task.forks + 2
    hidden = generate_tasks(400, 4, seed=3, hidden_share=0.5)
    assert 0.42 < sum(bool(t.hidden) for t in hidden) / 400 < 0.58
    assert all(len(t.hidden) <= 1 and all(not t.signs[i] for i in t.hidden) for t in hidden)
    assert all(play(t, expert_actions(t))[1][2] for t in hidden)  # the route wins every task
    with pytest.raises(ValueError, match="must be one of"):
        VaultTask("x", ("red", "blue", "green"), "white", ("left",), (False,))


def test_datasets_have_disjoint_splits_and_the_noisy_half_carries_another_tasks_route(tmp_path):
    from verl_sdar.envs.vault.dataset import build

    counts = build(tmp_path, n_train=40, n_val=12, n_pilot=12, n_ood=8, forks=(3, 4), ood_forks=6, seed=0,
                   hidden_share=0.5)
    assert counts == {"train": 40, "val": 12, "pilot": 12, "ood": 8, "train_noisy_rows": 20}
    frames = {name: pd.read_parquet(tmp_path / f"{name}.parquet")
              for name in ("train", "val", "pilot", "ood", "train_noisy")}
    signatures = {}
    for name in ("train", "val", "pilot", "ood"):
        tasks = [VaultTask.from_dict(json.loads(e["vault_task"])) for e in frames[name]["extra_info"]]
        signatures[name] = {t.signature for t in tasks}
        assert set(frames[name]["agent_name"]) == {"vault"}
        forks = {t.forks for t in tasks}
        assert forks == ({6} if name == "ood" else {3, 4})
        assert 0 < sum(bool(t.hidden) for t in tasks) < len(tasks)
        for task, extra in zip(tasks, frames[name]["extra_info"], strict=True):
            assert extra["privileged"] == route_text(task) and extra["task_type"] == f"{task.forks}_forks"
    names = list(signatures)
    assert all(not signatures[a] & signatures[b] for a in names for b in names if a < b)
    clean, noisy = frames["train"]["extra_info"], frames["train_noisy"]["extra_info"]
    misled = 0
    for i, (c, n) in enumerate(zip(clean, noisy, strict=True)):
        assert n["vault_task"] == c["vault_task"]  # the same tasks in the same order
        if i % 2:
            assert n["noisy"] and n["privileged"] != c["privileged"]
            assert n["privileged"] in {e["privileged"] for e in clean}  # another training task's route
            task = VaultTask.from_dict(json.loads(c["vault_task"]))
            if task.hidden:  # wrong where the route speaks (the hidden fork's other way) if a donor has it
                h = task.hidden[0]
                other = f"at fork {h + 1} go {'left' if task.ways[h] == 'right' else 'right'};"
                donors = [e["privileged"] for j, e in enumerate(clean) if j % 2 and j != i]
                if any(other in d for d in donors):
                    assert other in n["privileged"], (task, n["privileged"])
                    misled += 1
        else:
            assert not n["noisy"] and n["privileged"] == c["privileged"]
    assert misled > 0


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def episode(tokenizer, responses, env=None):
    from verl_sdar.envs.vault.agent_loop import VaultAgentLoop
    from verl_sdar.envs.vault.dataset import make_rows

    row = make_rows([TASK], "train")[0]
    kwargs = {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}
    server = FakeServer(tokenizer, responses)
    outputs = run_episode(lambda: make_agent_loop(VaultAgentLoop, tokenizer, server, env or {}), **kwargs)
    return outputs, server


def test_the_agent_loop_plays_the_optimal_policy_one_row_per_turn_won_on_each(tokenizer):
    from verl_sdar.envs.turn_prompts import format_response
    from verl_sdar.envs.vault.reward import compute_score

    outputs, server = episode(tokenizer, [format_response("go", a) for a in expert_actions(TASK)])
    assert len(outputs) == 5 and all(o.extra_fields["won"] for o in outputs)
    assert all(o.extra_fields["right_key"] and o.extra_fields["forks_passed"] == 3 for o in outputs)
    assert compute_score(extra_info=outputs[-1].extra_fields)["score"] == 10.0
    # the default history window (0): a turn's prompt holds its own observation only
    last_prompt = tokenizer.decode(server.prompts[3])
    assert "What you observe now: You are at fork 3 of 3. A sign points left." in last_prompt
    assert note_text(TASK) not in last_prompt and "fork 2 of 3" not in last_prompt


def test_the_agent_loop_flags_an_inadmissible_action_and_loses_on_the_wrong_key(tokenizer):
    from verl_sdar.envs.turn_prompts import format_response

    actions = ["dance", take("red"), go("left"), go("right"), go("left"), OPEN]
    outputs, _ = episode(tokenizer, [format_response("go", a) for a in actions])
    assert len(outputs) == 6 and not any(o.extra_fields["won"] for o in outputs)
    assert outputs[0].extra_fields["inadmissible"] and not outputs[1].extra_fields["inadmissible"]
    assert outputs[-1].extra_fields["right_key"] is False


def test_the_imperfect_demonstrator_errs_at_its_stated_rates():
    import random

    from verl_sdar.envs.vault.warmstart import demonstration, demonstration_turns

    tasks = generate_tasks(400, 4, seed=5)
    rng = random.Random(0)
    assert all(demonstration(t, rng, 0.0, 0.0) == expert_actions(t) for t in tasks)
    assert all(demonstration(t, rng, 1.0, 0.0)[0] != take(t.key) for t in tasks)
    wins = wrong_key = 0
    for t in tasks:
        env, (_, done, won, _, info) = play(t, demonstration(t, rng, 0.4, 0.3))
        wins += won
        wrong_key += info["right_key"] is False
    assert abs(wrong_key / 400 - 0.4) < 0.07
    assert 0.2 < wins / 400 < 0.5  # 0.6 x 0.7^(forks without a sign, about 2 of 4)
    turns = demonstration_turns(tasks[:3], 0.0, 0.0)
    assert [t.turn for t in turns] == [0, 1, 2, 3, 4, 5] * 3
    assert turns[1].response.endswith(f"<action>{go(tasks[0].ways[0])}</action>")


def test_warm_start_set_follows_the_route_where_it_shows_it_and_adds_key_turns():
    """Routed tasks are demonstrated along their route (the key, the hidden fork) and carry it; the
    others make the demonstrator's errors and carry none; key tasks add their first turn only, fork
    tasks their fork turns only."""
    from verl_sdar.envs.vault.warmstart import routed_tasks, sft_set

    tasks, key_tasks = generate_tasks(40, 3, seed=3, hidden_share=0.5), generate_tasks(60, 3, seed=4, prefix="k")
    fork_tasks = generate_tasks(30, 3, seed=5, prefix="f")
    rows = sft_set(tasks, key_tasks, key_error=1.0, fork_error=0.0, fraction=0.5, seed=0, fork_tasks=fork_tasks)
    routed = routed_tasks(tasks, 0.5, 0) | routed_tasks(key_tasks, 0.5, 1) | routed_tasks(fork_tasks, 0.5, 2)
    assert 0 < len(routed & {t.task_id for t in tasks}) < 40
    by_id = {t.task_id: t for t in [*tasks, *key_tasks, *fork_tasks]}
    hidden_rows = {True: 0, False: 0}
    for row in rows:
        task, action = by_id[row["game"]], row["messages"][-1]["content"]
        assert row["with_privileged"] == (row["game"] in routed)
        if row["with_privileged"]:
            assert row["messages"][0]["content"].endswith(route_text(task))
        if row["turn"] == 0:  # the key: right iff routed (key_error 1.0 otherwise), and the thought says why
            assert (take(task.key) in action) == row["with_privileged"], (row["game"], action)
            assert (f"the note says the vault opens only with the {task.key} key" in action.lower()) == \
                row["with_privileged"], action
        elif 1 <= row["turn"] <= task.forks and task.signs[row["turn"] - 1]:
            assert f"A sign points {task.ways[row['turn'] - 1]}." in action, action
        elif 1 <= row["turn"] <= task.forks and task.kind(row["turn"] - 1) == "hidden":
            way = task.ways[row["turn"] - 1]
            hidden_rows[row["with_privileged"]] += 1
            if row["with_privileged"]:  # the route's way, read from the route
                assert f"The route says go {way}.</think><action>{go(way)}</action>" in action, action
            else:  # a guess: nothing observed tells
                assert "I guess" in action, action
    assert hidden_rows[True] and hidden_rows[False]
    key_rows = [r for r in rows if r["game"].startswith("k")]
    assert len(key_rows) == 60 and all(r["turn"] == 0 for r in key_rows)
    fork_rows = [r for r in rows if r["game"].startswith("f")]  # fork_error 0: every fork of every task
    assert len(fork_rows) == 30 * 3 and {r["turn"] for r in fork_rows} == {1, 2, 3}
    assert {r["game"] for r in rows} == set(by_id)


def test_warm_start_evaluation_plays_student_and_teacher_prompts(tmp_path):
    """A model SFT'd for one epoch on a few demonstrations plays tasks in lockstep, with and without
    the teacher's block; every play ends within the step cap."""
    from verl_sdar.envs.alfworld.expert_sft import sft_rows, sft_train
    from verl_sdar.envs.vault.warmstart import demonstration_turns, evaluate, summary, wrong_routes
    from verl_sdar.tiny_model import build_tiny_model

    tasks = generate_tasks(8, 3, seed=2)
    turns = demonstration_turns(tasks, 0.0, 0.0)
    routes = {t.task_id: route_text(t) for t in tasks}
    rows = sft_rows(turns, routes.__getitem__, 0.5, seed=0)
    assert {r["with_privileged"] for r in rows} == {True, False}
    base = build_tiny_model(tmp_path / "base", seed=0, max_position_embeddings=4096,
                            extra_corpus=[m["content"] for r in rows for m in r["messages"]])
    sft_train(str(base), rows, str(tmp_path / "model"), epochs=1, batch_size=8, max_length=4096)
    for privileged in (None, route_text, wrong_routes(tasks)):
        plays = evaluate(str(tmp_path / "model"), tasks[:3], privileged, temperature=1.0, seed=0, max_steps=4)
        assert len(plays) == 3 and all(1 <= p.steps <= 4 for p in plays)
        assert 0.0 <= summary(plays)["success"] <= 1.0
    assert wrong_routes(tasks)(tasks[0]) != route_text(tasks[0])


def test_a_routed_demonstration_errs_where_the_route_says_nothing():
    """With the route, the key and the hidden fork are right; the noted forks keep their error rate
    (here 1: the demonstrator always turns wrong at the first noted fork), so a route in the prompt
    teaches the route's content, not care in general."""
    from verl_sdar.envs.vault.warmstart import demonstration_turns

    tasks = generate_tasks(60, 4, seed=6, hidden_share=1.0)
    turns = demonstration_turns(tasks, key_error=1.0, fork_error=1.0, routed=True)
    by_task = {}
    for turn in turns:
        by_task.setdefault(turn.game, []).append(turn)
    for task in tasks:
        actions = [t.response.split("<action>")[1].split("</action>")[0] for t in by_task[task.task_id]]
        assert actions[0] == take(task.key)
        first_noted = next((i for i in range(task.forks) if task.kind(i) == "note"), None)
        for i, action in enumerate(actions[1:]):  # fork i until the episode ended
            if i == first_noted:
                assert action != go(task.ways[i]) and i == len(actions) - 2  # wrong, and the end
            elif i < task.forks:
                assert action == go(task.ways[i]), (task, i, action)


def test_a_key_bias_is_a_systematic_error_on_its_colours_only_and_not_with_the_route():
    import random

    from verl_sdar.envs.vault.warmstart import KeyBias, demonstration, demonstration_turns

    tasks = generate_tasks(300, 3, seed=8)
    bias = KeyBias(frozenset({"red", "blue"}), 1.0)
    rng = random.Random(0)
    for task in tasks:
        key = demonstration(task, rng, 0.0, 0.0, bias=bias)[0]
        wrong_first = take(next(k for k in task.keys if k != task.key))
        assert key == (wrong_first if task.key in {"red", "blue"} else take(task.key)), task
    routed = demonstration_turns(tasks, 0.0, 0.0, routed=True, bias=bias)
    assert all(f"<action>{take(t.key)}</action>" in turn.response
               for t in tasks for turn in routed if turn.game == t.task_id and turn.turn == 0)
    with pytest.raises(ValueError, match="not vault colours"):
        KeyBias(frozenset({"purple"}), 0.5)
