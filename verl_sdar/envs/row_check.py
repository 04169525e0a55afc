"""Dataset rows checked against the env contract when the run starts, before any rollout.

A dataset row an agent loop cannot play (an ALFWorld row without ``extra_info.game_path``, a
Search row without an answer, a field of the wrong type) would otherwise fail only when the
rollout reaches it, possibly hours in, and then as one failed episode among many. Here every row
of ``data.train_files`` and ``data.val_files`` is read (the columns ``agent_name``,
``extra_info`` and ``reward_model`` only) and checked against :data:`~verl_sdar.envs.contract.ROW_SCHEMAS`
for the agent loop that will play it: the row's own ``agent_name``, else
``actor_rollout_ref.rollout.agent.default_agent_loop``. Loops without a schema (verl's own, a
user's) are not checked. With a teacher that reads each row's privileged text from a column
(``sdar.privileged.source=column``), training rows must also carry that ``extra_info`` field as a
string (or null).

The error (:class:`DatasetRowError`) names the file, the row (0-based position in the file), the
field and what is wrong, for the first few bad rows, with the count of all of them.

Runs in the launching process from the Hydra callback that validates ``sdar.*``
(:class:`verl_sdar.config.ValidateOnJobStart`), so the run stops before Ray starts. Files that are
not local parquet files there (a remote URI, a path only the cluster sees) are skipped and listed.
Plain Python plus ``pyarrow``: no torch, no verl.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from verl_sdar.envs.contract import ROW_SCHEMAS, RowField

#: bad rows described in full in the error message (all of them are counted)
SHOWN_PROBLEMS = 5
_COLUMNS = ("agent_name", "extra_info", "reward_model")


class DatasetRowError(ValueError):
    """A dataset row the agent loop (or the teacher) cannot use; the message names file, row and field."""


@dataclass
class CheckReport:
    """What :func:`check_data_files` looked at."""

    checked: dict[str, int] = field(default_factory=dict)  # file -> rows checked
    skipped: list[str] = field(default_factory=list)  # files not checked here, with the reason


def _get(row: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted path in a row (``extra_info.game_path``)."""
    node: Any = row
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def row_problems(row: Mapping[str, Any], fields: Sequence[RowField]) -> list[str]:
    """What is wrong with one row for these fields (empty: nothing)."""
    problems = []
    for spec in fields:
        found, value = _get(row, spec.path)
        if not found or value is None:
            problems.append(f"{spec.path} is missing ({spec.purpose})")
            continue
        if not isinstance(value, spec.types) or isinstance(value, bool):
            wanted = " or ".join(t.__name__ for t in spec.types)
            problems.append(
                f"{spec.path} must be a {wanted}, got {type(value).__name__} {_describe(value)} ({spec.purpose})"
            )
            continue
        problem = spec.check(value) if spec.check is not None else None
        if problem:
            problems.append(f"{spec.path} {problem} ({spec.purpose})")
    return problems


def _privileged_problems(row: Mapping[str, Any], key: str) -> list[str]:
    info = row.get("extra_info")
    if not isinstance(info, Mapping) or key not in info:
        return [f"extra_info.{key} is missing (the teacher's privileged text, sdar.privileged.key; '' for none)"]
    value = info[key]
    if value is not None and not isinstance(value, str):
        return [f"extra_info.{key} must be a str, got {type(value).__name__} {_describe(value)} "
                "(the teacher's privileged text, sdar.privileged.key)"]
    return []


def check_rows(
    rows: Iterable[Mapping[str, Any]],
    *,
    source: str,
    default_agent_loop: str | None,
    privileged_key: str | None = None,
) -> int:
    """Check every row; raise :class:`DatasetRowError` naming ``source`` (the file), the rows and
    fields. Returns the number of rows checked."""
    problems: list[str] = []
    bad = 0
    n = 0
    for n, row in enumerate(rows, start=1):
        index = n - 1
        agent = row.get("agent_name") or default_agent_loop
        found = row_problems(row, ROW_SCHEMAS.get(str(agent), ())) if agent else []
        if privileged_key is not None:
            found += _privileged_problems(row, privileged_key)
        if found:
            bad += 1
            if bad <= SHOWN_PROBLEMS:
                loop = f" (agent loop {agent!r})" if agent in ROW_SCHEMAS else ""
                problems.extend(f"{source} row {index}{loop}: {p}" for p in found)
    if bad:
        count = f"{bad} of {n} rows" + (f"; the first {SHOWN_PROBLEMS} shown" if bad > SHOWN_PROBLEMS else "")
        raise DatasetRowError(f"verl-sdar: invalid dataset rows ({count}):\n  " + "\n  ".join(problems))
    return n


def read_rows(path: str) -> list[dict[str, Any]]:
    """The rows of a parquet file as plain Python (only the columns the checks read)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    columns = [c for c in _COLUMNS if c in names]
    return pq.read_table(path, columns=columns).to_pylist()


def _files(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(v) for v in value]


def check_data_files(
    train_files: Any,
    val_files: Any,
    *,
    default_agent_loop: str | None,
    privileged_key: str | None = None,
) -> CheckReport:
    """Check every local parquet file of ``data.train_files`` / ``data.val_files`` (see module
    docstring); ``privileged_key`` applies to training files only."""
    report = CheckReport()
    for setting, files, key in (("data.train_files", train_files, privileged_key), ("data.val_files", val_files, None)):
        for path in _files(files):
            if "://" in path or not os.path.isfile(path):
                report.skipped.append(f"{setting}: {path} (not a local file here)")
                continue
            if not path.endswith(".parquet"):
                report.skipped.append(f"{setting}: {path} (not a parquet file)")
                continue
            try:
                rows = read_rows(path)
            except Exception as e:  # noqa: BLE001 - an unreadable file is reported by name
                raise DatasetRowError(f"verl-sdar: {setting}: cannot read {path}: {type(e).__name__}: {e}") from e
            report.checked[path] = check_rows(
                rows, source=f"{setting} {path}", default_agent_loop=default_agent_loop, privileged_key=key
            )
    return report
