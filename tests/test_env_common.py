"""Shared env plumbing: the packaged agent-loop config and the recipes' Hydra callback."""

import importlib
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from verl_sdar.envs.common import env_settings, plain
from verl_sdar.envs.hydra_callback import AGENT_LOOPS, AGENT_LOOPS_YAML, AgentLoopCallback, apply_agent_loop_defaults


def test_packaged_agent_loop_file_lists_every_loop_and_each_target_imports():
    loops = OmegaConf.to_container(OmegaConf.load(AGENT_LOOPS_YAML))
    assert loops == AGENT_LOOPS
    for loop in loops:
        module, _, cls = loop["_target_"].rpartition(".")
        if loop["name"] == "alfworld":
            pytest.importorskip("alfworld")
        assert hasattr(importlib.import_module(module), cls), loop


@pytest.mark.parametrize("name", ["alfworld", "search", "webshop"])
def test_callback_points_verl_at_the_packaged_file_and_keeps_a_users_own(name):
    config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"agent": {"agent_loop_config_path": "pkg"}}}})
    AgentLoopCallback(default_agent_loop=name).on_run_start(config)
    agent = config.actor_rollout_ref.rollout.agent
    assert agent.default_agent_loop == name and Path(agent.agent_loop_config_path).is_absolute()
    agent.agent_loop_config_path = "/my/own.yaml"
    apply_agent_loop_defaults(config, name)
    assert agent.agent_loop_config_path == "/my/own.yaml"


def test_unknown_agent_loop_name_is_an_error():
    with pytest.raises(ValueError, match="default_agent_loop must be one of"):
        AgentLoopCallback(default_agent_loop="alfwrld")


def test_env_settings_layering():
    defaults = {"max_steps": 4, "retriever": {"url": None, "topk": 3}}
    trainer = OmegaConf.create({"env": {"max_steps": 6, "retriever": {"topk": 5}, "unrelated": 1}})
    assert env_settings(defaults, trainer, {"max_steps": 2}) == {"max_steps": 2, "retriever": {"url": None, "topk": 5}}
    assert env_settings(defaults, OmegaConf.create({}), {}) == defaults
    assert plain(OmegaConf.create({"a": [1]})) == {"a": [1]}


# ----------------------------------------------------------------------------- dataset rows
# The rows each env's dataset module wrote before they shared one builder (verl_sdar.envs.contract),
# key order included (it is the parquet column order): the builder must reproduce them exactly.
def _alfworld_rows_before(game: str) -> list[dict]:
    return [
        {
            "data_source": "alfworld",
            "agent_name": "alfworld",
            "prompt": [{"role": "user",
                        "content": "Play the ALFWorld game given in extra_info; the agent loop builds the prompts."}],
            "ability": "agent",
            "reward_model": {"style": "rule", "ground_truth": ""},
            "extra_info": {"index": index, "split": "train", "game_path": game, "task_type": "pick_and_place_simple",
                           "privileged": "route -pddl"},
        }
        for index in range(2)
    ]


SEARCH_ROW_BEFORE = {
    "data_source": "hotpotqa",
    "agent_name": "search",
    "prompt": [{"role": "user", "content": "Question: Who?"}],
    "ability": "fact-reasoning",
    "reward_model": {"style": "rule", "ground_truth": {"target": ["A", "b"]}},
    "extra_info": {"index": 7, "split": "test", "question": "Who?", "task_type": "multi_hop", "privileged": ""},
}
WEBSHOP_ROWS_BEFORE = [
    {
        "data_source": "webshop",
        "agent_name": "webshop",
        "prompt": [{"role": "user", "content": "buy x"}],
        "ability": "agent",
        "reward_model": {"style": "rule", "ground_truth": ""},
        "extra_info": {"index": 0, "split": "val",
                       "goal": '{"instruction_text": "buy x", "category": "shoes", "k": [1, 2]}',
                       "task_type": "shoes", "privileged": ""},
    }
]
CODEWORD_ROWS_BEFORE = [
    {
        "data_source": "verl_sdar/codeword",
        "prompt": [{"role": "user", "content": "Reply with the secret code word, one animal out of: "
                                        "cat, dog, bird, fish, horse, mouse."}],
        "ability": "recall",
        "reward_model": {"style": "rule", "ground_truth": "bird"},
        "extra_info": {"index": 0, "split": "train", "task_type": "animal",
                       "privileged": "The secret code word is bird."},
    },
    {
        "data_source": "verl_sdar/codeword",
        "prompt": [{"role": "user", "content": "Reply with the secret code word, one color out of: "
                                        "red, green, blue, yellow, black, white."}],
        "ability": "recall",
        "reward_model": {"style": "rule", "ground_truth": "black"},
        "extra_info": {"index": 1, "split": "train", "task_type": "color",
                       "privileged": "The secret code word is black."},
    },
]


def _same(got, expected) -> bool:
    """Equal, key order included."""
    return json.dumps(got) == json.dumps(expected)


def test_dataset_rows_are_unchanged_key_order_included(tmp_path):
    from verl_sdar.envs.alfworld.dataset import make_rows as alfworld_rows
    from verl_sdar.envs.search.dataset import make_row as search_row
    from verl_sdar.envs.webshop.dataset import make_rows as webshop_rows
    from verl_sdar.tasks.codeword import make_rows as codeword_rows

    (tmp_path / "g1").mkdir()
    (tmp_path / "g1" / "traj_data.json").write_text(json.dumps({"task_type": "pick_and_place_simple"}))
    game = str(tmp_path / "g1" / "game.tw-pddl")
    assert _same(alfworld_rows([game], "train", repeat=2, privileged=lambda g: "route " + g[-5:]),
                 _alfworld_rows_before(game))
    assert _same(search_row("Who?", ["A", "b"], "multi_hop", "hotpotqa", "test", 7), SEARCH_ROW_BEFORE)
    assert _same(webshop_rows([{"instruction_text": "buy x", "category": "shoes", "k": [1, 2]}], "val"),
                 WEBSHOP_ROWS_BEFORE)
    assert _same(codeword_rows(2, 0, "train"), CODEWORD_ROWS_BEFORE)
    with pytest.raises(ValueError, match="no golden answers"):
        search_row("Who?", [], "multi_hop", "hotpotqa", "test", 7)


def test_dataset_row_keeps_its_own_fields_out_of_env_fields():
    from verl_sdar.envs.contract import TASK_TYPE, dataset_row

    with pytest.raises(ValueError, match="task_type"):
        dataset_row(data_source="d", prompt="p", ability="a", ground_truth="", index=0, split="s", task_type="t",
                    fields={TASK_TYPE: "other"})


def test_locked_cache_builds_each_resource_once_across_threads():
    import threading
    import time

    from verl_sdar.envs.common import locked_cache

    calls = []

    @locked_cache
    def load(path: str, topk: int = 3) -> object:
        calls.append((path, topk))
        time.sleep(0.05)  # a slow build: concurrent callers must wait for it, not build again
        return object()

    got = []
    threads = [threading.Thread(target=lambda: got.append(load("a"))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [("a", 3)] and len({id(x) for x in got}) == 1
    assert load("a", 3) is load(path="a") is got[0]  # same arguments, however they are spelled
    assert load("b") is not got[0] and calls == [("a", 3), ("b", 3)]
    assert len(load.cache) == 2
