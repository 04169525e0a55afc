"""Run verl's real ``python -m verl.trainer.main_ppo`` on a recipe in a subprocess (tests only)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_main_ppo(work: Path, recipe: str, *overrides: str, log_name: str = "run", timeout: int = 600) -> list[dict]:
    """Run ``recipes/<recipe>.yaml`` with ``VERL_SDAR_WORK=work``; return the file logger's records.

    Fails (with the log's tail) on a non-zero exit or when the plugin did not load.
    """
    folder, name = recipe.rsplit("/", 1)
    metrics_file = work / f"{log_name}.jsonl"
    env = dict(os.environ, VERL_SDAR_WORK=str(work), VERL_FILE_LOGGER_PATH=str(metrics_file),
               HYDRA_FULL_ERROR="1", TOKENIZERS_PARALLELISM="false", WANDB_MODE="disabled", RAY_DEDUP_LOGS="0")
    cmd = [
        sys.executable, "-m", "verl.trainer.main_ppo",
        f"--config-path={REPO / 'recipes' / folder}", f"--config-name={name}",
        "trainer.logger=[console,file]", f"hydra.run.dir={work / 'hydra' / log_name}",
        *overrides,
    ]
    log = work / f"{log_name}.log"
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=work)
    text = log.read_text()
    assert proc.returncode == 0, text[-6000:]
    assert "plugin failed to load" not in text, text[-6000:]
    return [json.loads(line) for line in metrics_file.read_text().splitlines()]


def by_step(records: list[dict]) -> dict[int, dict]:
    """Metrics merged per step (validation and training records of one step together)."""
    merged: dict[int, dict] = {}
    for record in records:
        merged.setdefault(record["step"], {}).update(record["data"])
    return merged


def dumped_sessions(dump_dir: Path, step: int) -> dict[str, dict[str, list[str]]]:
    """verl's rollout dump (``trainer.rollout_data_dir``) of ``step``: group (uid) -> session -> the
    session's responses in turn order (the dump's ``uid`` field is the row key ``uid_session_turn``)."""
    rows = [json.loads(line) for line in (Path(dump_dir) / f"{step}.jsonl").read_text().splitlines()]
    groups: dict[str, dict[str, list[tuple[int, str]]]] = {}
    for row in rows:
        uid, session, turn = str(row["uid"]).rsplit("_", 2)
        groups.setdefault(uid, {}).setdefault(session, []).append((int(turn), row["output"]))
    return {uid: {s: [text for _, text in sorted(turns)] for s, turns in sessions.items()}
            for uid, sessions in groups.items()}


def assert_no_identical_group(dump_dir: Path, step: int, sessions: int) -> None:
    """Every group of the dump has ``sessions`` sessions and they are not all the same text."""
    groups = dumped_sessions(dump_dir, step)
    assert groups, f"nothing dumped for step {step} in {dump_dir}"
    for uid, members in groups.items():
        assert len(members) == sessions, (uid, sorted(members))
        assert len({tuple(texts) for texts in members.values()}) > 1, f"group {uid}: all sessions identical {members}"
