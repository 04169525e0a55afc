"""Turn prompts and action projection in the verl-agent style (pure functions), shared by the
one-row-per-turn agent loops (ALFWorld, WebShop).

Each turn the prompt is rebuilt from scratch as one user message:

- turn 0: the role sentence, the current observation and the admissible actions;
- later turns: the role and task, how many steps were already taken, the last ``history_length``
  (observation, action) pairs as ``[Observation i: '...', Action i: '...']``, the current step
  number, the current observation and the admissible actions (quoted, "help" left out).

Both ask for reasoning inside ``<think></think>`` followed by exactly one action inside
``<action></action>``. :func:`project_action` turns a response into the command sent to the
environment and says whether it was well formatted (the admissible list is not checked here).

:func:`clip_text` shortens a text that does not fit the prompt budget (the loops' ``fit_prompt``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from collections.abc import Sequence

ACTION_OPEN, ACTION_CLOSE = "<action>", "</action>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_TAGS = (ACTION_OPEN, ACTION_CLOSE, THINK_OPEN, THINK_CLOSE)
#: characters of an untagged response that are still sent to the environment
FALLBACK_TAIL = 30
_CJK = re.compile(r"[\u4e00-\u9fff]")

ANSWER_FORMAT = (
    "First reason about the current situation and what to do next, and write that reasoning "
    f"between {THINK_OPEN} and {THINK_CLOSE}. Then choose exactly one of the admissible actions "
    f"and write it between {ACTION_OPEN} and {ACTION_CLOSE}."
)


def clip_text(text: str, chars: int) -> str:
    """``text`` cut to its first ``chars`` characters, marked ``[...]`` when cut."""
    return text if len(text) <= chars else text[: max(chars, 0)].rstrip() + " [...]"


def admissible_text(actions: Sequence[str]) -> str:
    """The admissible actions quoted and comma-separated, without the "help" command."""
    return ", ".join(f"'{a}'" for a in actions if a.strip().lower() != "help")


def first_prompt(role: str, observation: str, admissible_actions: Sequence[str], task: str | None = None) -> str:
    """The prompt of the first turn (no history yet); ``task`` when the observation lacks it."""
    head = f"{role} Your task is to: {task.strip()}" if task else role
    return (
        f"{head}\n"
        f"What you observe now: {observation.strip()}\n"
        f"Admissible actions at this step: [{admissible_text(admissible_actions)}].\n\n"
        f"{ANSWER_FORMAT}"
    )


def history_text(history: Sequence[tuple[str, str]], history_length: int, steps_taken: int) -> str:
    """The last ``history_length`` (observation, action) pairs, numbered by their step (1-based)."""
    if history_length <= 0 or not history:
        return ""
    recent = list(history)[-history_length:]
    first_index = steps_taken - len(recent) + 1
    lines = [
        f"[Observation {first_index + j}: '{obs.strip()}', Action {first_index + j}: '{act}']"
        for j, (obs, act) in enumerate(recent)
    ]
    return "\n".join(lines)


def later_prompt(
    role: str,
    task: str,
    observation: str,
    admissible_actions: Sequence[str],
    history: Sequence[tuple[str, str]],
    history_length: int = 2,
) -> str:
    """The prompt of a turn after the first (``len(history)`` = steps already taken)."""
    steps_taken = len(history)
    shown = min(max(history_length, 0), steps_taken)
    past = history_text(history, history_length, steps_taken)
    lines = [f"{role} Your task is to: {task.strip()}"]
    lines.append(
        f"Prior to this step you have already taken {steps_taken} step(s). "
        f"Here are the most recent {shown} observation(s) and the action(s) you took after each:"
    )
    if past:
        lines.append(past)
    lines.append(f"You are now at step {steps_taken + 1}. What you observe now: {observation.strip()}")
    lines.append(f"Admissible actions at this step: [{admissible_text(admissible_actions)}].")
    return "\n".join(lines) + f"\n\n{ANSWER_FORMAT}"


@dataclass(frozen=True)
class Projection:
    action: str
    """the command sent to the environment (lower-cased)"""
    valid: bool
    """well formatted: think and action tags present, no tag inside the action, no Chinese characters"""
    reason: str = ""
    """why the turn is invalid ('' when valid); several reasons are joined by ','"""


def project_action(text: str) -> Projection:
    """Map a model response to an environment command.

    The text is lower-cased; the span between the first ``<action>`` and the following
    ``</action>`` (stripped) is the action. Without both action tags, the last
    :data:`FALLBACK_TAIL` characters are sent instead. The turn is invalid when the action tags
    or the think tags are missing, when the action holds one of the four tags itself (nested tags,
    ``<action><action>look</action></action>``: no env command contains one), or when the response
    contains Chinese characters. Of repeated action blocks the first counts (verl-agent's rule).
    """
    lowered = text.lower()
    reasons = []
    start = lowered.find(ACTION_OPEN)
    end = lowered.find(ACTION_CLOSE, start + len(ACTION_OPEN)) if start >= 0 else -1
    if start < 0 or end < 0:
        action = lowered[-FALLBACK_TAIL:]
        reasons.append("no_action_tags")
    else:
        action = lowered[start + len(ACTION_OPEN):end].strip()
        if any(tag in action for tag in _TAGS):
            reasons.append("nested_tags")
    think_open = lowered.find(THINK_OPEN)
    if think_open < 0 or lowered.find(THINK_CLOSE, think_open + len(THINK_OPEN)) < 0:
        reasons.append("no_think_tags")
    if _CJK.search(text):
        reasons.append("chinese_characters")
    return Projection(action=action, valid=not reasons, reason=",".join(reasons))


def format_response(thought: str, action: str) -> str:
    """A well-formatted response (used by scripted policies and tests)."""
    return f"{THINK_OPEN}{thought}{THINK_CLOSE}{ACTION_OPEN}{action}{ACTION_CLOSE}"
