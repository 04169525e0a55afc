"""Env faults: the per-step counts (each episode once, by kind), the stop rule (``sdar.faults``) on
hand-computed sequences, its settings, and one main_ppo run on an ALFWorld train set whose games
are all corrupted (it stops after ``patience_steps`` steps; with the rule off it trains on)."""

from __future__ import annotations

import shutil

import pytest
from main_ppo_runner import by_step, run_main_ppo

from verl_sdar.config import FaultsConfig, SDARConfig, SDARConfigError
from verl_sdar.envs.contract import (
    ENV_ERROR,
    EPISODE_ERROR,
    ERROR_KIND,
    ERROR_KINDS,
    RESET_ERROR,
    STEP_TIMEOUT,
    error_kind,
)
from verl_sdar.faults import EnvFaultError, FaultCounts, FaultMonitor, count_faults, fault_metrics


def rows(*episodes):
    """(keys, extra_fields) for episodes given as (uid, session, [fields of each turn row])."""
    keys, extra = [], []
    for uid, session, turns in episodes:
        for turn, fields in enumerate(turns):
            keys.append(f"{uid}_{session}_{turn}")
            extra.append(fields)
    return keys, extra


OK = {ERROR_KIND: "", EPISODE_ERROR: "", ENV_ERROR: ""}


def failed(kind):
    return {ERROR_KIND: kind, EPISODE_ERROR: f"{kind}: boom", ENV_ERROR: ""}


# ----------------------------------------------------------------------------- counting
def test_each_episode_counts_once_whatever_its_number_of_turn_rows():
    keys, extra = rows(
        ("a", 0, [OK, OK, OK, OK, OK]),                     # 5 turns, fine
        ("a", 1, [failed(STEP_TIMEOUT)] * 3),               # 3 turns, ended by a step timeout
        ("b", 0, [failed(RESET_ERROR)]),                    # reset failed: one row
        ("b", 1, [OK, OK]),
    )
    counts = count_faults(keys, extra, real=list(range(len(keys))))
    assert counts == FaultCounts(episodes=4, by_kind={STEP_TIMEOUT: 1, RESET_ERROR: 1})
    assert counts.faulted == 2 and counts.rate == 0.5
    metrics = fault_metrics(counts)
    assert metrics["episode/env_error_rate"] == 0.5
    assert metrics[f"episode/env_errors/{STEP_TIMEOUT}"] == 1.0 and metrics[f"episode/env_errors/{RESET_ERROR}"] == 1.0
    kinds = {k for k in metrics if k.startswith("episode/env_errors/")}
    assert kinds == {f"episode/env_errors/{k}" for k in ERROR_KINDS}
    assert sum(v for k, v in metrics.items() if k.startswith("episode/env_errors/")) == 2.0


def test_padding_rows_are_ignored_and_a_later_faulted_row_names_the_kind():
    keys, extra = rows(("a", 0, [OK, failed("retrieval_error")]), ("a", 1, [failed(RESET_ERROR)]))
    # the last row is a padding clone: not counted
    counts = count_faults(keys, extra, real=[0, 1])
    assert counts == FaultCounts(episodes=1, by_kind={"retrieval_error": 1})


def test_rows_without_a_kind_but_with_an_error_count_as_unknown_errors():
    keys, extra = rows(("a", 0, [{EPISODE_ERROR: "reset failed: x"}]), ("a", 1, [{ENV_ERROR: "step failed"}]),
                       ("a", 2, [{EPISODE_ERROR: ""}]))
    counts = count_faults(keys, extra, real=[0, 1, 2])
    assert counts.by_kind == {"error": 2} and counts.episodes == 3
    assert fault_metrics(counts)["episode/env_errors/error"] == 2.0


def test_rows_of_other_tasks_give_no_fault_metrics():
    keys, extra = rows(("a", 0, [{"won": True}]), ("b", 0, [None]))
    assert count_faults(keys, extra, real=[0, 1]) is None
    assert fault_metrics(None) == {}


def test_error_kind_of_an_exception():
    assert error_kind("reset", ValueError("x")) == "reset_error"
    assert error_kind("step", TimeoutError("x")) == "step_timeout"
    assert error_kind("retrieval", TimeoutError()) == "retrieval_timeout"
    with pytest.raises(ValueError, match="unknown env stage"):
        error_kind("close", ValueError())


# ----------------------------------------------------------------------------- stop rule
def counts_at(rate, episodes=8):
    faulted = round(rate * episodes)
    return FaultCounts(episodes=episodes, by_kind={RESET_ERROR: faulted} if faulted else {})


def test_the_run_stops_after_patience_steps_in_a_row_above_the_rate():
    monitor = FaultMonitor(max_rate=0.5, patience=3)
    # 0.75 (1 above), 0.5 (not above: the streak breaks), 0.625, 1.0, then the third in a row trips
    for step, rate in enumerate([0.75, 0.5, 0.625, 1.0], start=1):
        monitor.update(step, counts_at(rate))
    monitor.update(5, None)  # a step without env episodes neither extends nor breaks the streak
    with pytest.raises(EnvFaultError) as info:
        monitor.update(6, counts_at(0.875))
    message = str(info.value)
    assert "sdar.faults.max_env_error_rate=0.5" in message and "sdar.faults.patience_steps=3" in message
    assert "step 3: 0.62 (5/8), step 4: 1.00 (8/8), step 6: 0.88 (7/8)" in message
    assert f"{RESET_ERROR} 7" in message and "step 1" not in message


@pytest.mark.parametrize("max_rate, patience", [(1.0, 3), (None, 3), (0.5, 0), (0.5, None)])
def test_the_rule_is_off_with_rate_1_or_patience_0_or_null(max_rate, patience):
    monitor = FaultMonitor(max_rate, patience)
    assert not monitor.enabled
    for step in range(1, 10):
        monitor.update(step, counts_at(1.0))


def test_rate_exactly_at_the_threshold_does_not_count():
    monitor = FaultMonitor(0.25, 1)
    monitor.update(1, counts_at(0.25))
    with pytest.raises(EnvFaultError):
        monitor.update(2, counts_at(0.375))


# ----------------------------------------------------------------------------- settings
def test_faults_settings_defaults_and_validation():
    assert SDARConfig().faults == FaultsConfig(max_env_error_rate=0.5, patience_steps=3)
    assert SDARConfig().faults.enabled and not FaultsConfig(max_env_error_rate=1.0).enabled
    assert SDARConfig.from_dict({"faults": {"max_env_error_rate": None, "patience_steps": 0}}).faults == FaultsConfig(
        None, 0)
    for bad, key in (({"max_env_error_rate": 1.5}, "max_env_error_rate"), ({"max_env_error_rate": "x"}, "max_env"),
                     ({"patience_steps": -1}, "patience_steps"), ({"patience_steps": 1.5}, "patience_steps"),
                     ({"patience": 3}, "sdar.faults.patience")):
        with pytest.raises(SDARConfigError, match=key):
            SDARConfig.from_dict({"faults": bad})


def test_a_step_with_nothing_to_train_on_stops_at_once_whatever_the_settings():
    all_failed = counts_at(1.0)
    for monitor in (FaultMonitor(0.5, 3), FaultMonitor(1.0, 3), FaultMonitor(None, None)):
        monitor.update(1, counts_at(0.25), trainable_rows=5)  # some rows can be trained on: go on
        with pytest.raises(EnvFaultError, match="at step 2 every episode failed in the env") as info:
            monitor.update(2, all_failed, trainable_rows=0)
        assert "8/8 episodes; faults by kind: reset_error 8" in str(info.value)
    FaultMonitor(1.0, 3).update(3, counts_at(0.0), trainable_rows=0)  # no fault: not ours to judge


# ----------------------------------------------------------------------------- main_ppo, corrupted games
def test_a_run_on_corrupted_games_stops_after_patience_steps_and_runs_on_with_the_rule_off(tmp_path, alfworld_small):
    """Three of the four train games are garbage files: their episodes fail at reset (one masked row
    each, kind ``reset_error``), so every step's env error rate is 6/8 = 0.75, above the default
    0.5. With ``patience_steps=2`` the run stops at step 2 with the message, before training on it;
    with ``max_env_error_rate=1.0`` it trains its 2 steps, logging the rate. (With all four
    corrupted, no row of a step has a trainable token: the run stops at step 1, see
    ``test_a_step_with_nothing_to_train_on_stops_at_once_whatever_the_settings``.)"""
    pytest.importorskip("alfworld")
    import json

    import pandas as pd

    from verl_sdar.envs.alfworld.dataset import build
    from verl_sdar.tiny_model import build_tiny_model

    games = tmp_path / "games"
    shutil.copytree(alfworld_small, games)
    build_tiny_model(tmp_path / "tiny-model", seed=0)
    build(games, tmp_path / "alfworld", limit_train=4, limit_val=2)
    paths = [info["game_path"] for info in pd.read_parquet(tmp_path / "alfworld" / "train.parquet")["extra_info"]]
    assert len(paths) == 4
    for path in paths[:3]:
        with open(path, "w") as f:
            f.write("this is not a game")
    common = ("trainer.val_before_train=false", "data.shuffle=false", "data.train_batch_size=4", "env.max_steps=2",
              "env.rollout.n=2")

    with pytest.raises(AssertionError):  # run_main_ppo asserts exit status 0
        run_main_ppo(tmp_path, "alfworld/tiny_cpu_sdar", *common, "trainer.total_training_steps=3",
                     "sdar.faults.patience_steps=2", log_name="stops", timeout=420)
    log = (tmp_path / "stops.log").read_text()
    assert "plugin failed to load" not in log
    assert "EnvFaultError" in log and "sdar.faults.max_env_error_rate=0.5" in log, log[-4000:]
    assert "sdar.faults.patience_steps=2" in log and "step 1: 0.75 (6/8), step 2: 0.75 (6/8)" in log
    assert "reset_error 6" in log
    logged = [json.loads(line) for line in (tmp_path / "stops.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1]  # step 2 stopped before its update and its metrics
    assert logged[0]["data"]["episode/env_error_rate"] == 0.75

    records = run_main_ppo(tmp_path, "alfworld/tiny_cpu_sdar", *common, "trainer.total_training_steps=2",
                           "sdar.faults.max_env_error_rate=1.0", log_name="runs_on", timeout=420)
    steps = by_step(records)
    assert sorted(steps) == [1, 2]
    for step in steps.values():
        assert step["episode/env_error_rate"] == 0.75 and step["episode/env_errors/reset_error"] == 6.0
        assert step["episode/episodes"] == 8


def test_trainable_rows_counts_real_rows_with_a_loss_token():
    import torch

    from verl_sdar.faults import trainable_rows

    masks = [torch.tensor([0, 1]), torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([1])]
    assert trainable_rows(masks, real=[0, 1, 2]) == 2  # row 3 is padding: not counted
    assert trainable_rows(masks, real=[1]) == 0
