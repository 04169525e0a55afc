"""Dataset rows are checked when the run starts, before Ray and any rollout: a row the agent loop
cannot play (an ALFWorld row without ``extra_info.game_path``, a Search row without an answer, a
WebShop goal without its keys, a field of the wrong type) fails with the file, the row and the field."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig, ValidateOnJobStart, check_datasets
from verl_sdar.envs.contract import ROW_SCHEMAS, WEBSHOP_GOAL_KEYS, dataset_row
from verl_sdar.envs.row_check import SHOWN_PROBLEMS, DatasetRowError, check_data_files, check_rows, row_problems

REPO = Path(__file__).resolve().parent.parent


def alfworld_row(i, **fields):
    return dataset_row(data_source="alfworld", agent_name="alfworld", prompt="play", ability="agent", ground_truth="",
                       index=i, split="train", task_type="pick_and_place_simple",
                       fields={"game_path": f"/games/{i}/game.tw-pddl", **fields})


def search_row(i, answers=("Lima",), question="What is the capital of Peru?"):
    return dataset_row(data_source="countryinfo", agent_name="search", prompt=f"Question: {question}",
                       ability="fact-reasoning", ground_truth={"target": list(answers)}, index=i, split="train",
                       task_type="direct_lookup", fields={"question": question})


GOAL = {k: "x" for k in WEBSHOP_GOAL_KEYS}


def webshop_row(i, goal=GOAL):
    return dataset_row(data_source="webshop", agent_name="webshop", prompt="buy", ability="agent", ground_truth="",
                       index=i, split="train", task_type="fashion",
                       fields={"goal": goal if isinstance(goal, str) else json.dumps(goal)})


def write(path: Path, rows) -> Path:
    pd.DataFrame(rows).to_parquet(path)
    return path


def check_file(path, default="alfworld", key=None):
    return check_data_files(str(path), None, default_agent_loop=default, privileged_key=key)


# ----------------------------------------------------------------------------- one row
def vault_rows():
    from verl_sdar.envs.vault.dataset import make_rows
    from verl_sdar.envs.vault.env import generate_tasks

    return make_rows(generate_tasks(2, 3, seed=0), "train")


def test_good_rows_of_every_env_pass():
    assert set(ROW_SCHEMAS) == {"alfworld", "search", "webshop", "vault"}
    for row in (alfworld_row(0), search_row(0), webshop_row(0), webshop_row(1, goal=GOAL), *vault_rows()):
        assert row_problems(row, ROW_SCHEMAS[row["agent_name"]]) == []
    # Search answers: a string, a list of strings, or {"target": either}
    for truth in ("Lima", ["Lima", "Lima, Peru"], {"target": "Lima"}):
        assert row_problems({"reward_model": {"ground_truth": truth}, "extra_info": {"question": "q"}},
                            ROW_SCHEMAS["search"]) == []


@pytest.mark.parametrize("task, expected", [
    (None, "extra_info.vault_task is missing"),
    ("", "extra_info.vault_task is an empty string"),
    ("{not json", "extra_info.vault_task is not valid JSON"),
    ("[1, 2]", "extra_info.vault_task is a list, not a JSON object"),
])
def test_vault_row_problems(task, expected):
    problems = row_problems({"extra_info": {"vault_task": task}}, ROW_SCHEMAS["vault"])
    assert len(problems) == 1 and problems[0].startswith(expected), problems


@pytest.mark.parametrize("row, expected", [
    ({"extra_info": {}}, "extra_info.game_path is missing"),
    ({"extra_info": {"game_path": None}}, "extra_info.game_path is missing"),
    ({}, "extra_info.game_path is missing"),
    ({"extra_info": {"game_path": 7}}, "extra_info.game_path must be a str, got int 7"),
    ({"extra_info": {"game_path": True}}, "extra_info.game_path must be a str, got bool True"),
    ({"extra_info": {"game_path": "  "}}, "extra_info.game_path is an empty string"),
])
def test_alfworld_row_problems(row, expected):
    problems = row_problems(row, ROW_SCHEMAS["alfworld"])
    assert len(problems) == 1 and problems[0].startswith(expected), problems
    assert "the game file the alfworld agent loop plays" in problems[0]


@pytest.mark.parametrize("truth, expected", [
    ({"target": []}, "holds no answer"),
    ([], "holds no answer"),
    (["", "  "], "holds no answer"),
    ({"answers": ["Lima"]}, "is a mapping without 'target'"),
    ({"target": 5}, "holds a int"),
    (None, "is missing"),
    (3.5, "must be a str or list or dict, got float"),
])
def test_search_rows_without_an_answer(truth, expected):
    problems = row_problems({"extra_info": {"question": "q"}, "reward_model": {"ground_truth": truth}},
                            ROW_SCHEMAS["search"])
    assert len(problems) == 1 and problems[0].startswith("reward_model.ground_truth") and expected in problems[0]


def test_webshop_goal_problems():
    schema = ROW_SCHEMAS["webshop"]
    assert "lacks the keys ['price_upper']" in row_problems(
        webshop_row(0, goal={k: v for k, v in GOAL.items() if k != "price_upper"}), schema)[0]
    assert "is not valid JSON" in row_problems(webshop_row(0, goal="{not json"), schema)[0]
    assert "is a list, not a JSON object" in row_problems(webshop_row(0, goal="[1, 2]"), schema)[0]


# ----------------------------------------------------------------------------- parquet files
def test_a_corrupted_alfworld_file_names_file_row_and_field(tmp_path):
    rows = [alfworld_row(i) for i in range(4)]
    rows[2]["extra_info"]["game_path"] = None  # parquet keeps the struct's field: null in this row
    path = write(tmp_path / "train.parquet", rows)
    with pytest.raises(DatasetRowError) as info:
        check_file(path)
    message = str(info.value)
    assert f"data.train_files {path} row 2 (agent loop 'alfworld'): extra_info.game_path is missing" in message
    assert "(1 of 4 rows)" in message and "row 0" not in message


def test_a_file_without_the_field_at_all_and_many_bad_rows(tmp_path):
    rows = [dataset_row(data_source="alfworld", agent_name="alfworld", prompt="p", ability="agent", ground_truth="",
                        index=i, split="train", task_type="t") for i in range(12)]
    path = write(tmp_path / "train.parquet", rows)
    with pytest.raises(DatasetRowError) as info:
        check_file(path)
    message = str(info.value)
    assert f"(12 of 12 rows; the first {SHOWN_PROBLEMS} shown)" in message
    assert f"row {SHOWN_PROBLEMS - 1} " in message and f"row {SHOWN_PROBLEMS} " not in message


def test_wrong_type_in_a_search_file_and_the_default_agent_loop(tmp_path):
    rows = [search_row(i) for i in range(3)]
    for row in rows:
        del row["agent_name"]  # the default agent loop decides
    rows[1]["reward_model"]["ground_truth"] = {"target": []}
    path = write(tmp_path / "val.parquet", rows)
    expected = r"row 1 \(agent loop 'search'\): reward_model.ground_truth holds no answer"
    with pytest.raises(DatasetRowError, match=expected):
        check_data_files(None, [str(path)], default_agent_loop="search")
    # another default loop (not an env of ours): nothing to check
    assert check_data_files(None, [str(path)], default_agent_loop="single_turn_agent").checked == {str(path): 3}
    # wrong type: the question as a number
    rows = [search_row(0)]
    rows[0]["extra_info"]["question"] = 42
    with pytest.raises(DatasetRowError, match="extra_info.question must be a str, got int 42"):
        check_file(write(tmp_path / "typed.parquet", rows))


def test_privileged_text_is_checked_on_training_rows_only(tmp_path):
    rows = [alfworld_row(i) for i in range(2)]
    for row in rows:
        del row["extra_info"]["privileged"]
    path = write(tmp_path / "train.parquet", rows)
    with pytest.raises(DatasetRowError, match=r"row 0 .*extra_info.privileged is missing"):
        check_file(path, key="privileged")
    assert check_data_files(None, str(path), default_agent_loop="alfworld", privileged_key="privileged").checked
    rows = [alfworld_row(0, hint=3)]
    with pytest.raises(DatasetRowError, match="extra_info.hint must be a str, got int 3"):
        check_file(write(tmp_path / "typed.parquet", rows), key="hint")


def test_files_that_are_not_local_parquet_are_skipped_and_unreadable_ones_named(tmp_path):
    report = check_data_files(["hdfs://x/train.parquet", str(tmp_path / "absent.parquet")], None,
                              default_agent_loop="alfworld")
    assert report.checked == {} and len(report.skipped) == 2
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DatasetRowError, match=f"data.train_files: cannot read {bad}"):
        check_file(bad)


def test_the_job_start_callback_exits_with_the_message(tmp_path):
    # a parquet column has one type: a wrong type is the whole column's (here: game ids, not paths)
    rows = [alfworld_row(0, game_path=4), alfworld_row(1, game_path=5)]
    path = write(tmp_path / "train.parquet", [alfworld_row(0)])
    bad = write(tmp_path / "val.parquet", rows)
    config = OmegaConf.create({
        "data": {"train_files": str(path), "val_files": [str(bad)]},
        "actor_rollout_ref": {"rollout": {"agent": {"default_agent_loop": "alfworld"}}},
        "trainer": {"v1": {"trainer_mode": "sdar"}},
        "sdar": {"objective": "sdar"},
    })
    with pytest.raises(SystemExit) as info:
        ValidateOnJobStart().on_job_start(config)
    assert f"data.val_files {bad} row 0 (agent loop 'alfworld'): extra_info.game_path must be a str, got int 4" in str(
        info.value)
    assert "(2 of 2 rows)" in str(info.value)
    # the teacher reads sdar.privileged.key from training rows: a missing column is caught too
    config.data.val_files = None
    assert check_datasets(config, SDARConfig.from_config(config)).checked == {str(path): 1}
    config.sdar.privileged = {"key": "hint"}
    with pytest.raises(DatasetRowError, match="extra_info.hint is missing"):
        check_datasets(config, SDARConfig.from_config(config))


def test_check_rows_counts_rows():
    assert check_rows([alfworld_row(0), alfworld_row(1)], source="x", default_agent_loop=None) == 2
    assert check_rows([], source="x", default_agent_loop="alfworld") == 0


# ----------------------------------------------------------------------------- main_ppo
def test_main_ppo_stops_on_a_bad_row_before_starting_ray(tmp_path):
    """The real entry point with the ALFWorld recipe: a train file with a row lacking its game
    stops the job at start-up (the Hydra callback), naming file, row and field; Ray never starts."""
    data = tmp_path / "alfworld"
    data.mkdir()
    rows = [alfworld_row(i) for i in range(3)]
    rows[1]["extra_info"]["game_path"] = None
    write(data / "train.parquet", rows)
    write(data / "val.parquet", [alfworld_row(0)])
    env = dict(os.environ, HYDRA_FULL_ERROR="1", RAY_ADDRESS="", VERL_SDAR_WORK=str(tmp_path))
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'alfworld'}",
         "--config-name=tiny_cpu_sdar", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    seconds = time.perf_counter() - start
    assert proc.returncode != 0
    expected = (f"data.train_files {data / 'train.parquet'} row 1 (agent loop 'alfworld'): "
                "extra_info.game_path is missing")
    assert expected in proc.stderr, proc.stderr[-3000:]
    assert "ray init kwargs" not in proc.stdout and "Started a local Ray instance" not in proc.stdout + proc.stderr
    print(f"main_ppo stopped on the bad row after {seconds:.1f}s")
