"""A folder's pinned settings: runs made in parts (over sessions) must share them.

Pure Python (json only). ``benchmarks/experiment.py`` pins its raw folder and each run's working
folder, ``benchmarks/curves.py`` (through ``verl_sdar.reports.curves.start_sweep``) its raw folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SETTINGS_FILE = "settings.json"


def pin_settings(folder: Path, settings: dict[str, Any],
                 refusal: str = "settings differ from {path} (fixed, given): {differ}") -> None:
    """The first call writes ``folder/settings.json``; later calls must pass the same settings, else
    ``SystemExit(refusal)`` (nothing written), formatted with ``folder``, the file's ``path`` and
    ``differ`` = ``{key: (fixed, given)}`` for every key whose value differs or is on one side only.

    Values are compared as JSON stores them (a tuple given equals the list read back).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / SETTINGS_FILE
    given = json.loads(json.dumps(settings))
    if not path.exists():
        path.write_text(json.dumps(given, indent=1) + "\n")
        return
    fixed = json.loads(path.read_text())
    differ = {k: (fixed.get(k), given.get(k)) for k in sorted(set(fixed) | set(given)) if fixed.get(k) != given.get(k)}
    if differ:
        raise SystemExit(refusal.format(folder=folder, path=path, differ=differ))
