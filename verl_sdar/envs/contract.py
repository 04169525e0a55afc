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
(``VALID_ACTION``)                 R: turn loops (the turn is then invalid)
``reward_extra_info``              W: agent loops (``{}``, verl's field).  R: verl
(``REWARD_EXTRA_INFO``)
``success`` (``SUCCESS``)          W: reward functions' extra output (0/1).  R: trainer validation
                                   metrics
=================================  ======================================================================

The constants of the multi-word rows are the upper-case field names (``ENV_SECONDS``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# dataset row: extra_info
INDEX = "index"
SPLIT = "split"
TASK_TYPE = "task_type"
PRIVILEGED = "privileged"
GAME_PATH = "game_path"
QUESTION = "question"
GOAL = "goal"

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
ANSWER = "answer"
SEARCHES = "searches"
INVALID_TURNS = "invalid_turns"
RETRIEVAL_SECONDS = "retrieval_seconds"
WEBSHOP_REWARD = "webshop_reward"
BOUGHT = "bought"

# an env's step info
VALID_ACTION = "valid_action"

# reward functions: extra outputs
SUCCESS = "success"

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
