"""Privileged-text sources: where each training row's teacher context comes from (``sdar.privileged.source``).

A source turns a batch's rows into one privileged text per row (empty: no context, the teacher
then sees the student's prompt), may learn from the rows' rewards, and has a state that goes into
every checkpoint:

* ``column``: ``extra_info[sdar.privileged.key]`` of each dataset row (stateless);
* ``skills``: retrieved from the skill library ``sdar.skills.library`` with ``sdar.skills.strategy``
  (``verl_sdar.skills``); UCB learns from each real row's reward, and its statistics are state.

The trainer builds a :class:`TeacherInputs` from TransferQueue and calls ``texts``, then
``feedback``; it never looks inside a source.

**The student's own prompt (Skill-GRPO, ``sdar.student_prompt=true``).** The agent
loops, in their own worker processes, give the student the row's privileged text from the same
source: ``column`` reads ``extra_info[sdar.privileged.key]``; ``skills`` retrieves from
``sdar.skills.library``, when ``sdar.student_skills`` says:

* ``per_turn`` (the reference's Skill-GRPO, the default): every turn, the keyword substrings of that
  turn's whole user message (``keyword_substring``: general skills plus every task type one of
  whose keywords occurs in it, the general skills alone when none does), so the skills follow the
  observation; ``sdar.skills.strategy`` is not used;
* ``per_episode`` (ours): once per episode, ``sdar.skills.strategy`` (one of
  ``STATELESS_STRATEGIES``: the choice must not depend on process-local state) on the task text.

The text goes in front of the user message's text in the reference's format,
:func:`skill_prefix`: ``"[Privileged Skill Information]\n{text}\n\n"``, inside the chat template's
user turn (the reference prefixes the observation text it puts in the user turn). An agent loop
calls :func:`student_privileged` once (``None``: off) and then, every turn,
:func:`student_turn_prefix` (the turn's user message with ``per_turn``, else the task text);
libraries are loaded once per process. A row carrying ``NO_STUDENT_SKILLS`` (the trainer's second
validation pass, ``val_no_skill/*``) gets no block.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .skills import (
    PROMPT_STRATEGIES,
    STATELESS_STRATEGIES,
    WHOLE_PROMPT_STRATEGIES,
    Retrieval,
    SkillLibrary,
    make_retriever,
)
from .teacher import RAW_PREFIX_HEADER, privileged_texts, raw_prefix_text


@dataclass
class TeacherInputs:
    """The per-row data a source may read (lists in batch order).

    Attributes:
        extra_infos: each row's dataset ``extra_info``.
        prompts: each row's prompt token ids (1-D tensors).
        raw_prompts: each row's chat messages, when stored (``raw_prompt``), else None.
        scores: each row's summed reward, when known, else None.
        real: positions of the rows that are not verl's batch-balancing padding clones.
        decode: turns prompt ids into text (a tokenizer's ``decode``): ``decode(ids)`` without special
            tokens, ``decode(ids, keep_special=True)`` with them.
    """

    extra_infos: list
    prompts: list
    raw_prompts: list | None
    scores: list[float] | None
    real: list[int]
    decode: Callable[..., str]


def _last_user_text(messages) -> str | None:
    """Content of the last user message of a chat prompt (a list of role/content dicts)."""
    for message in reversed(list(messages or [])):
        if isinstance(message, dict) and message.get("role") == "user":
            return str(message.get("content", ""))
    return None


class PrivilegedSource(ABC):
    """One privileged text per row; optional reward feedback and checkpoint state."""

    state_name = "privileged source"
    """What the checkpoint state is, for logs."""

    def texts(self, rows: TeacherInputs) -> list[str]:
        """The privileged text of each row ("" = none). verl's batch-balancing padding rows (a prompt
        of pad tokens with ``extra_info`` copied from the first real row) always get ``""``: no
        block, no retrieval, no effect on a learning source's statistics."""
        out = [""] * len(rows.extra_infos)
        real_texts = self.real_texts(rows)
        if len(real_texts) != len(rows.real):
            raise RuntimeError(f"{type(self).__name__} returned {len(real_texts)} texts for {len(rows.real)} rows")
        for i, text in zip(rows.real, real_texts, strict=True):
            out[i] = text
        return out

    @abstractmethod
    def real_texts(self, rows: TeacherInputs) -> list[str]:
        """The privileged text of each real row, in the order of ``rows.real``."""

    def feedback(self, rows: TeacherInputs) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Learn from the rows' rewards (after ``texts`` on the same rows)."""

    def metrics(self) -> dict[str, float]:
        """Per-step metrics of the last ``texts`` call."""
        return {}

    def state_dict(self) -> dict[str, Any] | None:
        """Checkpoint state; None for a stateless source."""
        return None

    def load_state_dict(self, state: dict[str, Any]) -> None:
        raise TypeError(f"{type(self).__name__} has no state to restore")


class ColumnSource(PrivilegedSource):
    """``extra_info[key]`` of each row; a row without the field is an error."""

    def __init__(self, key: str):
        self.key = key

    def real_texts(self, rows: TeacherInputs) -> list[str]:
        return privileged_texts([rows.extra_infos[i] for i in rows.real], self.key)


class SkillSource(PrivilegedSource):
    """Skills retrieved per row from a skill library; UCB learns from each real row's reward.

    Each real row's outcome (its summed token-level score, i.e. the episode reward written on
    the row) is fed back for the skills retrieved for it.
    """

    state_name = "skill retriever"

    def __init__(self, library: str, strategy: str, *, task_type_key: str = "task_type", seed: int = 0,
                 ucb_c: float = 2.0 ** 0.5):
        self.strategy = strategy
        self.task_type_key = task_type_key
        self.retriever = make_retriever(strategy, SkillLibrary.load(library), seed=seed, ucb_c=ucb_c)
        self._retrievals: list[Retrieval] = []

    def real_texts(self, rows: TeacherInputs) -> list[str]:
        self.retriever.reset_counts()
        self._retrievals = []
        for i in rows.real:
            info = rows.extra_infos[i]
            task_type = info.get(self.task_type_key) if isinstance(info, dict) else None
            prompt_text = None
            if self.strategy in WHOLE_PROMPT_STRATEGIES:
                prompt_text = rows.decode(rows.prompts[i].tolist(), keep_special=True)
            elif self.strategy in PROMPT_STRATEGIES:
                prompt_text = _last_user_text(rows.raw_prompts[i]) if rows.raw_prompts is not None else None
                if prompt_text is None:
                    prompt_text = rows.decode(rows.prompts[i].tolist())
            self._retrievals.append(self.retriever.retrieve(prompt=prompt_text, task_type=task_type))
        return [r.text for r in self._retrievals]

    def feedback(self, rows: TeacherInputs) -> None:
        if rows.scores is None:
            return
        for retrieval, i in zip(self._retrievals, rows.real, strict=True):
            self.retriever.update(retrieval, rows.scores[i])

    def metrics(self) -> dict[str, float]:
        unknown = sum(self.retriever.unknown.values())
        return {"sdar/skills/unknown_task_type_rows": unknown / max(self.retriever.rows, 1)}

    def state_dict(self) -> dict[str, Any]:
        return {"retriever": self.retriever.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.retriever.load_state_dict(state["retriever"])


def make_source(sdar) -> PrivilegedSource:
    """The source ``sdar.privileged.source`` names."""
    if sdar.privileged.source == "skills":
        skills = sdar.skills
        return SkillSource(
            skills.library, skills.strategy, task_type_key=skills.task_type_key, seed=skills.seed, ucb_c=skills.ucb_c
        )
    if sdar.privileged.source == "column":
        return ColumnSource(sdar.privileged.key)
    raise ValueError(f"sdar.privileged.source: unknown source {sdar.privileged.source!r}")


# ------------------------------------------------------------------ the student's prompt (Skill-GRPO)
def skill_prefix(text: str) -> str:
    """The reference's privileged block as text: ``"[Privileged Skill Information]\n{text}\n\n"``;
    ``""`` for an empty text (no block)."""
    return raw_prefix_text(text)


STUDENT_SKILLS = ("per_turn", "per_episode")
"""When the student's skills are chosen (``sdar.student_skills``): see the module docstring."""

PER_TURN_STRATEGY = "keyword_substring"
"""The rule of ``sdar.student_skills=per_turn`` (the reference's ``get_privileged_info_from_prompt``)."""

NO_STUDENT_SKILLS = "sdar_no_student_skills"
"""A dataset-row field (true): this row's student prompt gets no skills (``val_no_skill/*``)."""


class StudentPrivileged:
    """The privileged text of a row for the student's own rollout prompt (Skill-GRPO).

    Args:
        source: ``column`` or ``skills`` (``sdar.privileged.source``).
        key: with ``column``, the ``extra_info`` field (``sdar.privileged.key``).
        library, strategy, task_type_key: with ``skills``, ``sdar.skills.*``; with ``per_turn=False``
            ``strategy`` must be one of ``STATELESS_STRATEGIES``, with ``per_turn=True`` it is not used.
        per_turn: ``sdar.student_skills == "per_turn"``: with ``skills``, the agent loop asks every
            turn with that turn's user message and the rule is ``PER_TURN_STRATEGY`` (with ``column``
            the text is the row's, the same every turn).
    """

    header = RAW_PREFIX_HEADER

    def __init__(
        self,
        source: str,
        *,
        key: str = "privileged",
        library: str | None = None,
        strategy: str = "task_type",
        task_type_key: str = "task_type",
        per_turn: bool = False,
    ):
        if source not in ("column", "skills"):
            raise ValueError(f"sdar.privileged.source must be 'column' or 'skills', got {source!r}")
        if per_turn and source == "skills":
            strategy = PER_TURN_STRATEGY
        self.source, self.key, self.task_type_key, self.strategy = source, key, task_type_key, strategy
        self.per_turn = per_turn
        self.retriever = None
        if source == "skills":
            if strategy not in STATELESS_STRATEGIES:
                raise ValueError(
                    f"sdar.skills.strategy={strategy!r} cannot fill the student's prompt (its choice depends on "
                    f"process-local state); use one of {STATELESS_STRATEGIES}"
                )
            if not library:
                raise ValueError("sdar.skills.library: the student's skills need a skill library folder")
            self.retriever = make_retriever(strategy, SkillLibrary.load(library))

    def text(self, extra_info: Mapping[str, Any] | None, prompt: str | None = None) -> str:
        """The row's privileged text (``""``: none). ``prompt``: the text keyword strategies match
        (the task / goal / question); ``extra_info``: the dataset row's (task type, column)."""
        info = extra_info if isinstance(extra_info, Mapping) else {}
        if self.retriever is None:
            return privileged_texts([dict(info)], self.key)[0]
        task_type = info.get(self.task_type_key)
        if self.strategy in PROMPT_STRATEGIES and prompt is None:
            raise TypeError(f"sdar.skills.strategy={self.strategy!r} needs the row's prompt text (prompt=...)")
        return self.retriever.retrieve(prompt=prompt, task_type=task_type).text

    def prefix(self, extra_info: Mapping[str, Any] | None, prompt: str | None = None) -> str:
        """:func:`skill_prefix` of :meth:`text`: put it in front of the user message's text."""
        return skill_prefix(self.text(extra_info, prompt))


def _select(config: Any, dotted: str, default: Any = None) -> Any:
    node = config
    for part in dotted.split("."):
        getter = getattr(node, "get", None)
        if getter is None:
            return default
        node = getter(part, None)
        if node is None:
            return default
    return node


_student_lock = threading.Lock()
_student_cache: dict[tuple, StudentPrivileged] = {}


def student_privileged(trainer_config: Any) -> StudentPrivileged | None:
    """The student's privileged text for an agent loop, from the trainer config (``sdar.privileged``,
    ``sdar.skills``, ``sdar.student_skills``; an OmegaConf node or a plain mapping); ``None`` unless
    ``sdar.student_prompt`` is true. One object per distinct settings per process (the
    skill library is loaded once, under a lock: agent loops are built concurrently)."""
    if not _select(trainer_config, "sdar.student_prompt", False):
        return None
    when = str(_select(trainer_config, "sdar.student_skills", STUDENT_SKILLS[0]))
    if when not in STUDENT_SKILLS:
        raise ValueError(f"sdar.student_skills must be one of {STUDENT_SKILLS}, got {when!r}")
    library = _select(trainer_config, "sdar.skills.library", None)
    settings = (
        str(_select(trainer_config, "sdar.privileged.source", "column")),
        str(_select(trainer_config, "sdar.privileged.key", "privileged")),
        None if library is None else str(library),
        str(_select(trainer_config, "sdar.skills.strategy", "task_type")),
        str(_select(trainer_config, "sdar.skills.task_type_key", "task_type")),
        when == "per_turn",
    )
    with _student_lock:
        found = _student_cache.get(settings)
        if found is None:
            source, key, library, strategy, task_type_key, per_turn = settings
            found = _student_cache[settings] = StudentPrivileged(
                source, key=key, library=library, strategy=strategy, task_type_key=task_type_key,
                per_turn=per_turn,
            )
        return found


def student_privileged_for(student: StudentPrivileged | None, row: Mapping[str, Any]) -> StudentPrivileged | None:
    """``student`` for the agent loop's row (its keyword arguments), or ``None`` when the row
    carries ``NO_STUDENT_SKILLS`` (the trainer's validation pass without skills)."""
    flag = row.get(NO_STUDENT_SKILLS)
    return None if flag is not None and bool(flag) else student


def student_turn_prefix(student: StudentPrivileged | None, row: Mapping[str, Any], extra_info: Mapping[str, Any],
                        task_text: str, message: Callable[[], str]) -> str:
    """The Skill-GRPO block in front of one turn's user message, the one rule of every agent loop:
    ``""`` when Skill-GRPO is off or the row is flagged (:func:`student_privileged_for`); with
    ``per_turn`` retrieved from ``message()`` (that turn's whole user message, built only then),
    else from ``task_text`` (the episode's task: the same every turn)."""
    student = student_privileged_for(student, row)
    if student is None:
        return ""
    return student.prefix(extra_info, prompt=message() if student.per_turn else task_text)
