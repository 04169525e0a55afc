"""The contract between environments and the trainer: field names on rows and episodes, and the
one builder of verl's RL dataset rows (plain Python: no torch, no verl).

A field travels in three places:

* a dataset row's ``extra_info`` (written by the env's dataset module with :func:`dataset_row`,
  handed by verl to the agent loop as ``kwargs["extra_info"]``, kept on every training row);
* an agent loop's ``AgentLoopOutput.extra_fields`` (one dict per training row: per turn for the
  one-row-per-turn loops); verl's reward loop calls the reward function with ``extra_info`` = the
  row's ``extra_info`` updated with these fields, and the trainer reads them from TransferQueue;
* a reward function's result dict (``score`` plus extra outputs, which verl collects per row).

Who writes and who reads each field (``W:`` writers, ``R:`` readers):

=================================  ======================================================================
field (constant)                   writers / readers
=================================  ======================================================================
``index``, ``split``               W: every dataset (:func:`dataset_row`).  R: bookkeeping only
(``INDEX``, ``SPLIT``)
``task_type`` (``TASK_TYPE``)      W: every dataset; agent loops copy it into ``extra_fields``; rewards
                                   return it (a string).  R: skill retrieval
                                   (``sdar.skills.task_type_key``), trainer metrics per task type
``privileged`` (``PRIVILEGED``)    W: every dataset (``""``: no context).  R: the teacher pass
                                   (``sdar.privileged.key`` with ``source=column``)
``noisy`` (``NOISY``)              W: the vault dataset's noisy condition (true: the row's privileged
                                   text is another task's).  R: trainer metrics per condition
                                   (``sdar/noisy/<true|false>/*``)
``game_path`` (``GAME_PATH``)      W: ALFWorld dataset; the ALFWorld loop copies it into
                                   ``extra_fields``.  R: ALFWorld loop (the game to play)
``question`` (``QUESTION``)        W: Search dataset.  R: Search loop
``goal`` (``GOAL``)                W: WebShop dataset (JSON).  R: WebShop loop
``won`` (``WON``)                  W: agent loops, on every row (the episode's result); envs' step
                                   ``info``.  R: trainer episode metrics, ALFWorld reward, agent loops
``invalid_action_penalty``         W: agent loops, per row (turn loops, turn-row Search: the row's own
(``INVALID_ACTION_PENALTY``)       turn; single-row Search: coef x invalid turns).  R: trainer
                                   (``verl_sdar.advantages``), the only place it is subtracted
``invalid_reason``                 W: agent loops (``""`` when valid).  R: logs, tests
(``INVALID_REASON``)
``env_error`` (``ENV_ERROR``)      W: turn loops, per row (the failed step's error, else ``""``); the
                                   ALFWorld reward's output (0/1).  R: logs, validation metrics
``episode_error``                  W: turn loops, on every row (reset or step failure, else ``""``).
(``EPISODE_ERROR``)                R: ALFWorld reward
``error_kind`` (``ERROR_KIND``)    W: every env agent loop, on every row: the kind of the episode's env
                                   fault (one of ``ERROR_KINDS``: the error that ended it; Search: a
                                   failed retrieval), else ``""``.  R: trainer fault counting
                                   (:mod:`verl_sdar.faults`)
``episode_steps``                  W: turn loops, on every row.  R: ALFWorld and WebShop rewards
(``EPISODE_STEPS``)
``turn``, ``action``, ``valid``    W: turn loops, per row.  R: logs, tests
``env_seconds``,                   W: turn loops (single-row Search: ``episode_seconds`` only).  R: logs
``episode_seconds``,
``num_turns_total``
``answer``, ``searches``,          W: Search loop.  R: Search reward
``invalid_turns``,
``retrieval_seconds``
``webshop_reward``, ``bought``     W: WebShop loop (episode fields).  R: WebShop reward
``valid_action``                   W: an env's step ``info`` (WebShop: ``False`` for a refused action).
(``VALID_ACTION``)                 R: turn loops (the turn is invalid with ``env.penalise_inadmissible``)
``inadmissible`` (``INADMISSIBLE``) W: turn loops, per row: the env refused the action.  R: logs, tests
``reward_extra_info``              W: agent loops (``{}``, verl's field).  R: verl
(``REWARD_EXTRA_INFO``)
``success`` (``SUCCESS``)          W: reward functions' extra output (0/1).  R: trainer validation
                                   metrics
=================================  ======================================================================

The constants of the multi-word rows are the upper-case field names (``ENV_SECONDS``, ...).

:data:`ROW_SCHEMAS` says which dataset-row fields each agent loop needs and of which type; the
datasets are checked against it before any rollout (:mod:`verl_sdar.envs.row_check`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

# dataset row: extra_info
INDEX = "index"
SPLIT = "split"
TASK_TYPE = "task_type"
PRIVILEGED = "privileged"
NOISY = "noisy"
GAME_PATH = "game_path"
QUESTION = "question"
GOAL = "goal"
VAULT_TASK = "vault_task"

# agent loops: extra_fields
WON = "won"
INVALID_ACTION_PENALTY = "invalid_action_penalty"
INVALID_REASON = "invalid_reason"
ENV_ERROR = "env_error"
EPISODE_ERROR = "episode_error"
EPISODE_STEPS = "episode_steps"
TURN = "turn"
ACTION = "action"
VALID = "valid"
ENV_SECONDS = "env_seconds"
EPISODE_SECONDS = "episode_seconds"
NUM_TURNS_TOTAL = "num_turns_total"
REWARD_EXTRA_INFO = "reward_extra_info"
ERROR_KIND = "error_kind"
ANSWER = "answer"
SEARCHES = "searches"
INVALID_TURNS = "invalid_turns"
RETRIEVAL_SECONDS = "retrieval_seconds"
WEBSHOP_REWARD = "webshop_reward"
BOUGHT = "bought"

# an env's step info
VALID_ACTION = "valid_action"
INADMISSIBLE = "inadmissible"

# reward functions: extra outputs
SUCCESS = "success"

# kinds of env faults (ERROR_KIND values)
RESET_ERROR = "reset_error"
RESET_TIMEOUT = "reset_timeout"
STEP_ERROR = "step_error"
STEP_TIMEOUT = "step_timeout"
RETRIEVAL_ERROR = "retrieval_error"
RETRIEVAL_TIMEOUT = "retrieval_timeout"
ERROR_KINDS = (RESET_ERROR, RESET_TIMEOUT, STEP_ERROR, STEP_TIMEOUT, RETRIEVAL_ERROR, RETRIEVAL_TIMEOUT)


def error_kind(stage: str, error: BaseException) -> str:
    """The ``ERROR_KIND`` of an exception raised by an env call: ``<stage>_timeout`` for a
    ``TimeoutError``, else ``<stage>_error`` (``stage``: ``reset``, ``step`` or ``retrieval``)."""
    kind = f"{stage}_timeout" if isinstance(error, TimeoutError) else f"{stage}_error"
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown env stage {stage!r}")
    return kind


_ROW_FIELDS = (INDEX, SPLIT, TASK_TYPE, PRIVILEGED)


def dataset_row(
    *,
    data_source: str,
    prompt: str,
    ability: str,
    ground_truth: Any,
    index: int,
    split: str,
    task_type: str,
    privileged: str = "",
    agent_name: str | None = None,
    fields: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One row of verl's RL parquet dataset, the layout every verl-sdar dataset writes.

    Columns, in this order (the parquet column order): ``data_source``, ``agent_name`` (only when
    given: the verl agent loop that plays the row), ``prompt`` (one user message holding
    ``prompt``), ``ability``, ``reward_model`` (``{"style": "rule", "ground_truth": ...}``) and
    ``extra_info``: ``index``, ``split``, the env's own ``fields`` (e.g. ``game_path``), then
    ``task_type`` and ``privileged`` (``""``: no privileged context for the teacher).
    """
    fields = dict(fields or {})
    clash = sorted(set(fields) & set(_ROW_FIELDS))
    if clash:
        raise ValueError(f"dataset_row: {clash} are set by their own arguments, not through fields")
    row: dict[str, Any] = {"data_source": data_source}
    if agent_name is not None:
        row["agent_name"] = agent_name
    row["prompt"] = [{"role": "user", "content": prompt}]
    row["ability"] = ability
    row["reward_model"] = {"style": "rule", "ground_truth": ground_truth}
    row["extra_info"] = {INDEX: index, SPLIT: split, **fields, TASK_TYPE: task_type, PRIVILEGED: privileged}
    return row


# ------------------------------------------------------------------------- dataset-row schemas
@dataclass(frozen=True)
class RowField:
    """A field a dataset row must carry for the agent loop that plays it.

    Attributes:
        path: ``<column>.<key>`` (``extra_info.game_path``) or a top-level column.
        types: the accepted Python types of the value (as ``pyarrow``'s ``to_pylist`` gives it).
        purpose: what the agent loop uses it for (for the error message).
        check: a further check of a value of the right type: returns what is wrong, or None.
    """

    path: str
    types: tuple[type, ...]
    purpose: str
    check: Callable[[Any], str | None] | None = None


def _not_blank(value: Any) -> str | None:
    if isinstance(value, str) and not value.strip():
        return "is an empty string"
    return None


def _golden_answers(value: Any) -> str | None:
    """Search answers: a non-empty string, a non-empty list of strings, or ``{"target": <either>}``."""
    if isinstance(value, dict):
        if "target" not in value:
            return f"is a mapping without 'target' (keys {sorted(value)})"
        value = value["target"]
    if isinstance(value, str):
        return _not_blank(value)
    if not isinstance(value, (list, tuple)):
        return f"holds a {type(value).__name__}, not a string or a list of strings"
    answers = [a for a in value if isinstance(a, str) and a.strip()]
    if not answers:
        return "holds no answer (an empty list, or no non-empty string in it)"
    return None


#: keys of a WebShop goal the env and its reward read
WEBSHOP_GOAL_KEYS = ("instruction_text", "query", "product_category", "name", "attributes", "goal_options",
                     "price_upper")


def _not_blank_json(value: Any) -> str | None:
    if isinstance(value, str):
        problem = _not_blank(value)
        if problem:
            return problem
        try:
            value = json.loads(value)
        except ValueError as e:
            return f"is not valid JSON ({e})"
    return None if isinstance(value, dict) else f"is a {type(value).__name__}, not a JSON object"


def _webshop_goal(value: Any) -> str | None:
    problem = _not_blank_json(value)
    if problem:
        return problem
    value = json.loads(value) if isinstance(value, str) else value
    missing = [k for k in WEBSHOP_GOAL_KEYS if k not in value]
    return f"lacks the keys {missing}" if missing else None


#: per agent loop (``agent_name``), the fields its dataset rows must carry
ROW_SCHEMAS: dict[str, tuple[RowField, ...]] = {
    "alfworld": (RowField(f"extra_info.{GAME_PATH}", (str,), "the game file the alfworld agent loop plays",
                          _not_blank),),
    "search": (
        RowField(f"extra_info.{QUESTION}", (str,), "the question the search agent loop asks", _not_blank),
        RowField("reward_model.ground_truth", (str, list, dict),
                 "the golden answers the search reward scores against", _golden_answers),
    ),
    "vault": (RowField(f"extra_info.{VAULT_TASK}", (str, dict), "the task (JSON object) the vault agent loop plays",
                       _not_blank_json),),
    "webshop": (RowField(f"extra_info.{GOAL}", (str, dict),
                         f"the goal (JSON object with {list(WEBSHOP_GOAL_KEYS)}) the webshop agent loop plays",
                         _webshop_goal),),
}
