"""ALFWorld agent loop: prompts, action projection, and full episodes through the loop with a fake
LLM server (the env is the real TextWorld PDDL engine on the shipped small game set)."""

from __future__ import annotations

import asyncio
import importlib.util
import time
from pathlib import Path

import pytest
from agent_loop_helpers import FakeServer, make_agent_loop, run_episode
from main_ppo_runner import assert_no_identical_group, by_step, run_main_ppo

from verl_sdar.envs.alfworld.prompts import (
    build_prompt,
    first_prompt,
    format_response,
    later_prompt,
    project_action,
)


# ----------------------------------------------------------------------------- (a) prompts
def test_first_prompt_has_observation_and_admissible_actions_without_help():
    text = first_prompt("You are in a room. Your task is to: put a mug in fridge.", ["go to fridge 1", "help", "look"])
    assert "You are in a room. Your task is to: put a mug in fridge." in text
    assert "'go to fridge 1', 'look'" in text
    assert "'help'" not in text
    assert "<think>" in text and "</think>" in text and "<action>" in text and "</action>" in text
    assert "Prior to this step" not in text


def test_later_prompt_history_window_and_step_numbers():
    history = [("obs one", "go to a"), ("obs two", "open b"), ("obs three", "take c")]
    text = later_prompt("put a mug in fridge.", "obs four", ["look", "help", "close b"], history, history_length=2)
    assert "Your task is to: put a mug in fridge." in text
    assert "Prior to this step you have already taken 3 step(s)" in text
    assert "[Observation 2: 'obs two', Action 2: 'open b']" in text
    assert "[Observation 3: 'obs three', Action 3: 'take c']" in text
    assert "Observation 1" not in text  # outside the window
    assert "step 4" in text and "obs four" in text
    assert "'look', 'close b'" in text and "'help'" not in text
    assert build_prompt("t", "o", ["look"], [], 2) == first_prompt("o", ["look"])
    # history_length 0: no pairs at all
    assert "[Observation" not in later_prompt("t", "o", ["look"], history, history_length=0)


def test_projection_well_formed():
    p = project_action("<think>I should look.</think><action> Go To Fridge 1 </action>")
    assert p.valid and p.action == "go to fridge 1" and p.reason == ""
    assert project_action(format_response("x", "look")).action == "look"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<think>hmm</think> go to fridge 1", "no_action_tags"),
        ("<think>hmm</think><action>go to fridge 1", "no_action_tags"),
        ("<action>look</action>", "no_think_tags"),
        ("<think>unclosed <action>look</action>", "no_think_tags"),
        ("<think>去冰箱</think><action>look</action>", "chinese_characters"),
    ],
)
def test_projection_flags_malformed(text, reason):
    p = project_action(text)
    assert not p.valid
    assert reason in p.reason


def test_projection_without_tags_sends_last_30_characters():
    text = "I think the best move now is to GO TO THE FRIDGE NUMBER 1"
    p = project_action(text)
    assert not p.valid and p.action == text.lower()[-30:] and len(p.action) == 30


# ----------------------------------------------------------------------------- episodes
pytestmark_env = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None or importlib.util.find_spec("textworld") is None,
    reason="the alfworld extra is not installed",
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    path = build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module")
def games(alfworld_small):
    from verl_sdar.envs.alfworld.play import find_games, split_dir

    found = find_games(split_dir("train", alfworld_small))
    assert found, "small ALFWorld set missing"
    return found


def make_loop(tokenizer, server, max_steps=50, history_length=2, response_length=512, prompt_length=4096, **env):
    from verl_sdar.envs.alfworld.agent_loop import AlfworldAgentLoop

    env = {"max_steps": max_steps, "history_length": history_length, **env}
    return make_agent_loop(AlfworldAgentLoop, tokenizer, server, env, response_length, prompt_length)


def row_kwargs(game):
    from verl_sdar.envs.alfworld.dataset import make_rows

    row = make_rows([game], "train")[0]
    return {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}


def play(make, game, **kwargs):
    return run_episode(make, **(kwargs or row_kwargs(game)))


@pytestmark_env
def test_expert_policy_wins_through_the_agent_loop(tokenizer, games):
    from verl_sdar.envs.alfworld.play import run_expert
    from verl_sdar.envs.alfworld.reward import compute_score

    game = games[0]
    expert = run_expert(game)
    assert expert.won, expert.error
    server = FakeServer(tokenizer, [format_response("follow the plan", a) for a in expert.actions])
    outputs = play(lambda: make_loop(tokenizer, server), game)
    assert len(outputs) == expert.steps == len(server.prompts)
    kwargs = row_kwargs(game)
    for turn, out in enumerate(outputs):
        f = out.extra_fields
        assert f["turn"] == turn and f["valid"] and f["won"] and f["invalid_action_penalty"] == 0.0
        assert f["task_type"] == kwargs["extra_info"]["task_type"] and f["reward_extra_info"] == {}
        assert f["action"] == expert.actions[turn]
        assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
        assert out.prompt_ids == server.prompts[turn]
        # the reward verl's reward loop computes on the last turn and copies to every row
        assert compute_score("alfworld", "", "", {**kwargs["extra_info"], **f})["score"] == 10.0
    # the prompt is rebuilt each turn: later turns carry the task and the step count
    second = tokenizer.decode(outputs[1].prompt_ids)
    assert "Your task is to:" in second and "already taken 1 step(s)" in second
    assert second.startswith("<|im_start|>user\n") and second.endswith("<|im_start|>assistant\n")


@pytestmark_env
def test_verl_worker_stores_one_row_per_turn_with_reward_10_on_each(tokenizer, games, monkeypatch):
    """verl's own V1 post-processing (AgentLoopWorkerTQ._agent_loop_postprocess, not a copy): the
    reward is scored once on the last turn (here by a stand-in reward worker that calls our
    compute_score like verl's naive reward manager does) and copied to every turn row; each turn
    becomes its own stored row carrying the dataset row's extra_info (task_type, privileged)."""
    from verl.trainer.ppo.v1 import agent_loop_tq as tqmod

    from verl_sdar.envs.alfworld.play import run_expert
    from verl_sdar.envs.alfworld.reward import compute_score

    game = games[0]
    expert = run_expert(game)
    server = FakeServer(tokenizer, [format_response("plan", a) for a in expert.actions])
    kwargs = row_kwargs(game)
    outputs = play(lambda: make_loop(tokenizer, server), game)

    class Remote:
        def __init__(self, fn):
            self.fn = fn

        def remote(self, data):
            future = asyncio.get_running_loop().create_future()
            future.set_result(self.fn(data))
            return future

    def score(data):  # what verl's naive reward manager does with the last sequence
        info = dict(data.non_tensor_batch["extra_info"][-1])
        info.update(data.non_tensor_batch["tool_extra_fields"][-1].items())
        result = compute_score(data.non_tensor_batch["data_source"][-1], "", "", extra_info=info)
        return {"reward_score": result["score"], "reward_extra_info": {k: v for k, v in result.items() if k != "score"}}

    worker = object.__new__(tqmod.AgentLoopWorkerTQ.__ray_actor_class__)
    worker.processor, worker.distillation_enabled, worker.mm_processor_kwargs = None, False, {}
    worker.reward_loop_worker_handles = [type("Handle", (), {"compute_score": Remote(score)})()]
    stored = {}

    async def kv_batch_put(keys, fields, tags, partition_id):
        stored.update(keys=keys, fields=fields, tags=tags, partition_id=partition_id)

    raw = []
    real_to_td = tqmod.list_of_dict_to_tensordict
    monkeypatch.setattr(tqmod, "tq", type("TQ", (), {"async_kv_batch_put": staticmethod(kv_batch_put)}))
    monkeypatch.setattr(tqmod, "list_of_dict_to_tensordict", lambda fs: (raw.extend(fs), real_to_td(fs))[1])

    extra_info = {**kwargs["extra_info"], "privileged": "a skill"}
    asyncio.run(worker._agent_loop_postprocess(
        outputs, False, **{**kwargs, "extra_info": extra_info}, uid="u0", session_id=0, global_steps=1))
    assert stored["keys"] == [f"u0_0_{i}" for i in range(expert.steps)]
    assert len(raw) == expert.steps
    for turn, row in enumerate(raw):
        assert row["rm_scores"][-1].item() == 10.0 and row["rm_scores"][:-1].abs().sum() == 0
        assert row["extra_info"]["task_type"] == kwargs["extra_info"]["task_type"]
        assert row["extra_info"]["privileged"] == "a skill"
        assert row["extra_fields"]["turn"] == turn and row["extra_fields"]["reward_extra_info"]["success"] == 1.0


@pytestmark_env
def test_expert_wins_every_shipped_game_and_throughput(tokenizer, games, capsys):
    from verl_sdar.envs.alfworld.play import run_expert

    plans = {g: run_expert(g) for g in games}
    t0 = time.perf_counter()
    steps = 0
    results = []

    async def run_all():
        loops = []
        for g in games:
            server = FakeServer(tokenizer, [format_response("plan", a) for a in plans[g].actions])
            loops.append(make_loop(tokenizer, server).run({"temperature": 1.0}, **row_kwargs(g)))
        return await asyncio.gather(*loops)  # concurrent episodes in one event loop

    results = asyncio.run(run_all())
    secs = time.perf_counter() - t0
    for g, outs in zip(games, results, strict=True):
        assert len(outs) == plans[g].steps
        assert all(o.extra_fields["won"] for o in outs), g
        steps += len(outs)
    with capsys.disabled():
        print(f"\n[alfworld agent loop] {len(games)} episodes, {steps} turns in {secs:.2f}s: "
              f"{steps / secs:.1f} turns/s, {len(games) / secs:.2f} episodes/s "
              "(resets, prompts, tokenisation included)")


@pytestmark_env
def test_malformed_outputs_are_flagged_and_penalised(tokenizer, games):
    responses = [
        "<think>ok</think><action>look</action>",
        "look",  # no tags: last 30 characters sent
        "<action>inventory</action>",  # no think
        "<think>看看</think><action>look</action>",
    ]
    server = FakeServer(tokenizer, responses)
    outputs = play(lambda: make_loop(tokenizer, server, max_steps=4), games[0])
    assert len(outputs) == 4  # max_steps ends the episode
    assert [o.extra_fields["valid"] for o in outputs] == [True, False, False, False]
    assert [o.extra_fields["invalid_action_penalty"] for o in outputs] == [0.0, 0.1, 0.1, 0.1]
    assert outputs[1].extra_fields["action"] == "look"
    assert "no_think_tags" in outputs[2].extra_fields["invalid_reason"]
    assert "chinese_characters" in outputs[3].extra_fields["invalid_reason"]
    assert not any(o.extra_fields["won"] for o in outputs)
    from verl_sdar.envs.alfworld.reward import compute_score

    assert compute_score("alfworld", "", "", outputs[-1].extra_fields)["score"] == 0.0


@pytestmark_env
def test_response_length_is_respected(tokenizer, games):
    long = "<think>" + "very long thought " * 200 + "</think><action>look</action>"
    server = FakeServer(tokenizer, [long])
    outputs = play(lambda: make_loop(tokenizer, server, max_steps=1, response_length=16), games[0])
    assert len(outputs[0].response_ids) == 16 and not outputs[0].extra_fields["valid"]


@pytestmark_env
def test_env_failure_ends_the_episode_without_raising(tokenizer, games, monkeypatch):
    from verl_sdar.envs.alfworld import agent_loop as al

    server = FakeServer(tokenizer, [format_response("x", "look")] * 5)
    kwargs = row_kwargs(games[0])
    kwargs["extra_info"] = {**kwargs["extra_info"], "game_path": "/nonexistent/game.tw-pddl"}
    outputs = play(lambda: make_loop(tokenizer, server), None, **kwargs)
    assert len(outputs) == 1 and outputs[0].response_mask == [0]
    assert "reset failed" in outputs[0].extra_fields["env_error"] and not outputs[0].extra_fields["won"]

    class Crashing:
        def __init__(self, *a, **k):
            from verl_sdar.envs.alfworld.play import AlfworldEnv

            self.env = AlfworldEnv(max_steps=50)

        def reset(self, g):
            return self.env.reset(g)

        def step(self, a):
            raise RuntimeError("engine crashed")

        def close(self):
            self.env.close()

    monkeypatch.setattr(al, "make_env", lambda max_steps: Crashing())
    outputs = play(lambda: make_loop(tokenizer, server), games[0])
    assert len(outputs) == 1 and "engine crashed" in outputs[0].extra_fields["env_error"]
    assert outputs[0].extra_fields["episode_error"] and not outputs[0].extra_fields["won"]

    class Hanging(Crashing):
        def step(self, a):
            time.sleep(3)

    monkeypatch.setattr(al, "make_env", lambda max_steps: Hanging())
    t0 = time.perf_counter()
    outputs = play(lambda: make_loop(tokenizer, server, step_timeout_s=0.5), games[0])
    assert time.perf_counter() - t0 < 2.5
    assert len(outputs) == 1 and "TimeoutError" in outputs[0].extra_fields["env_error"]
    # the next episode gets a fresh env thread and plays normally
    monkeypatch.setattr(al, "make_env", lambda max_steps: Crashing())
    assert "engine crashed" in play(lambda: make_loop(tokenizer, server), games[0])[0].extra_fields["env_error"]


@pytestmark_env
def test_dataset_rows(tmp_path, alfworld_small):
    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import build

    counts = build(alfworld_small, tmp_path, limit_val=3)
    assert counts["val"] == 3 and counts["train"] >= 6
    df = pd.read_parquet(tmp_path / "train.parquet")
    assert set(df["agent_name"]) == {"alfworld"}
    info = df["extra_info"][0]
    assert Path(info["game_path"]).is_file() and info["privileged"] == "" and info["task_type"]


# ----------------------------------------------------------------------------- (d) main_ppo on CPU
@pytestmark_env
def test_one_sdar_step_through_main_ppo(tmp_path, alfworld_small):
    """One SDAR step (plus validation before it) of verl's real main_ppo on CPU with the tiny model
    on the shipped small ALFWorld set, 3 env steps per episode, under ``full_determinism``. Half of
    the games carry privileged text, so the teacher pass sees different prompts for their turn rows.
    Turn-row GRPO runs with KL in the reward and token-level rollout importance weights on: verl's
    own steps run around ours (their metrics appear)."""

    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import build
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    build(alfworld_small, tmp_path / "alfworld", limit_val=4)
    train = pd.read_parquet(tmp_path / "alfworld" / "train.parquet")
    train["extra_info"] = [
        {**info, "privileged": "Skill: look inside closed receptacles first." if i % 2 == 0 else ""}
        for i, info in enumerate(train["extra_info"])
    ]
    train.to_parquet(tmp_path / "alfworld" / "train.parquet")
    records = run_main_ppo(
        tmp_path, "alfworld/tiny_cpu_sdar",
        "trainer.total_training_steps=1", "trainer.val_before_train=true", "data.shuffle=false",
        "env.max_steps=3", "env.rollout.n=2",
        "actor_rollout_ref.rollout.full_determinism=true", f"trainer.rollout_data_dir={tmp_path / 'dump'}",
        "algorithm.use_kl_in_reward=true", "algorithm.rollout_correction.rollout_is=token",
        timeout=420,
    )
    merged = by_step(records)
    val, step = merged[0], merged[1]
    # full_determinism: the 2 sessions of each game are independent draws (once, every group was
    # one episode copied n times); the dump shows it and the group statistics count it
    assert_no_identical_group(tmp_path / "dump", 1, sessions=2)
    assert step["group/groups"] == 2 and step["group/sessions_mean"] == 2 and step["group/identical_share"] == 0.0
    # validation: success rate (reward 10 x won, and the reward function's `success`)
    assert any(k.startswith("val-") and "success" in k for k in val), sorted(val)
    # ... and per task type, one value per episode (4 validation games, 1 episode each)
    val_types = {k.rsplit("/", 1)[1] for k in val if k.startswith("val-core/alfworld/success/")}
    assert val_types == set(pd.read_parquet(tmp_path / "alfworld" / "val.parquet")["extra_info"].map(
        lambda info: info["task_type"])), sorted(val)
    assert sum(val[f"val-aux/alfworld/episodes/{t}"] for t in val_types) == 4
    # training success: each episode counted once (not once per turn row), overall and per type
    assert step["episode/success_rate"] == 0.0 and step["episode/episodes"] == 4
    train_types = {k.split("/")[1] for k in step
                   if k.startswith("episode/") and k.endswith("/success_rate")} - {"success_rate"}
    assert sum(step[f"episode/{t}/episodes"] for t in train_types) == 4
    # training: 2 games x 2 episodes x 3 turns (a random tiny model never wins in 3 steps)
    assert step["critic/score/mean"] == 0.0
    rows = step["perf/total_num_tokens"] / (step["prompt_length/mean"] + step["response_length/mean"])
    assert round(rows) == 12, rows
    assert step["sdar/gate_mean"] == step["sdar/gate_mean"]
    assert step["sdar/rows_with_privileged"] == pytest.approx(0.5)  # game 0 privileged, game 1 not
    assert step["sdar/plain_rows_gap_abs_max"] < 1e-3 < step["sdar/gap_std"]
    # the recipe's turn-row GRPO ran (all turn rows per group, per-row invalid-action penalty)
    assert 0.0 <= step["sdar/invalid_action_rows"] <= 1.0
    types = {k.split("/")[2] for k in step if k.startswith("sdar/task_type/") and k.endswith("/gate_mean")}
    assert types, sorted(step)
    # verl's KL-in-reward and rollout-correction steps ran with turn-row GRPO (once a separate test,
    # test_advantages.py::test_turn_row_grpo_keeps_verls_kl_in_reward_and_rollout_correction)
    assert "actor/reward_kl_penalty" in step and "actor/reward_kl_penalty_coeff" in step, sorted(step)
    assert any(k.startswith("rollout_corr/") for k in step), sorted(step)
    assert "sdar/invalid_action_rows" in step and step["sdar/gate_mean"] == step["sdar/gate_mean"]
    print("success (val):", {k: v for k, v in val.items() if "success" in k}, "gate by type:", types)


@pytestmark_env
def test_eval_only_reports_success_per_task_type(tmp_path, alfworld_small):
    """`trainer.val_only=true`: validation on eval-unseen games, no training step, success per type."""

    from verl_sdar.envs.alfworld.dataset import build
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    build(alfworld_small, tmp_path / "alfworld", val_split="valid_unseen", limit_val=6)
    records = run_main_ppo(
        tmp_path, "alfworld/tiny_cpu_sdar",
        "trainer.val_only=true", "trainer.val_before_train=true", "env.max_steps=2",
        timeout=420,
    )
    assert [r["step"] for r in records] == [0]  # validation only
    val = records[0]["data"]
    per_type = {k.rsplit("/", 1)[1]: v for k, v in val.items() if k.startswith("val-core/alfworld/success/")}
    assert len(per_type) == 3, sorted(val)  # data_small lists 2 games per type; the first 6 cover 3 types
    assert all(0.0 <= v <= 1.0 for v in per_type.values())
    assert sum(val[f"val-aux/alfworld/episodes/{t}"] for t in per_type) == 6
    overall = sum(per_type[t] * val[f"val-aux/alfworld/episodes/{t}"] for t in per_type) / 6
    assert val["val-core/alfworld/episode_success"] == pytest.approx(overall)
    assert not any(k.startswith("actor/") for k in val)
