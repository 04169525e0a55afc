"""Shared fixtures.

The small ALFWorld set (2 tasks per type per split, seed 0) is generated on first use into
``envs/alfworld/data_small`` (git-ignored): it embeds alfworld's PDDL domain and grammar, which
are alfworld's files, so the repository ships the generator, not the games.
"""

import subprocess
import sys
from pathlib import Path

import pytest

ALFWORLD_SMALL = Path(__file__).resolve().parents[1] / "envs" / "alfworld" / "data_small"
ALFWORLD_SMALL_ARGS = ["--n-train", "12", "--n-eval-seen", "12", "--n-eval-unseen", "12", "--seed", "0",
                       "--no-initial-state", "--quiet"]


@pytest.fixture(scope="session")
def alfworld_small() -> Path:
    pytest.importorskip("alfworld")
    if not (ALFWORLD_SMALL / "manifest.jsonl").is_file():
        subprocess.run(
            [sys.executable, "-m", "verl_sdar.envs.alfworld.generate", str(ALFWORLD_SMALL), *ALFWORLD_SMALL_ARGS],
            check=True,
        )
    return ALFWORLD_SMALL
