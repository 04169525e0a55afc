"""SDAR's own trainer state inside verl's checkpoints (``global_step_N/sdar_state.json``).

verl saves the actor, optimizer and dataloader; what verl-sdar adds (today: the skill
retriever's statistics) goes into one JSON file per checkpoint folder. It is written atomically
(a temporary file renamed into place) before verl's save, which marks the checkpoint complete
(``latest_checkpointed_iteration.txt``) last, so a resumable checkpoint always has a whole file.
"""

from __future__ import annotations

import json
import os
from typing import Any

STATE_FILE = "sdar_state.json"


def checkpoint_folder(trainer_config, global_steps: int, *, resuming: bool = False) -> str:
    """The ``global_step_N`` folder of a save, or of the checkpoint a resume loaded."""
    if resuming and trainer_config.resume_mode == "resume_path":
        return trainer_config.resume_from_path
    return os.path.join(trainer_config.default_local_dir, f"global_step_{global_steps}")


def save_state(folder: str, state: dict[str, Any]) -> str:
    """Write ``state`` to ``folder/sdar_state.json`` atomically; return the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, STATE_FILE)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_state(folder: str, *, what: str) -> dict[str, Any] | None:
    """The state saved in ``folder``; a missing file is an error naming ``what`` would be lost."""
    path = os.path.join(folder, STATE_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"resuming from {folder}, but it has no {STATE_FILE}; {what} would be lost")
    with open(path) as f:
        return json.load(f)
