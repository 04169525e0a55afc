"""ALFWorld prompts (verl-agent style): the shared turn prompts of :mod:`verl_sdar.envs.turn_prompts`
with ALFWorld's role sentence. The first observation already states the task."""

from __future__ import annotations

from collections.abc import Sequence

from verl_sdar.envs.turn_prompts import (  # noqa: F401  (re-exported for the agent loop and users)
    FALLBACK_TAIL,
    Projection,
    admissible_text,
    format_response,
    history_text,
    project_action,
)
from verl_sdar.envs.turn_prompts import first_prompt as _first_prompt
from verl_sdar.envs.turn_prompts import later_prompt as _later_prompt

ROLE = "You are an agent acting in a household simulated by the ALFWorld text environment."


def first_prompt(observation: str, admissible_actions: Sequence[str], task: str | None = None) -> str:
    """The first turn's prompt; ``task`` is stated only when given (the first observation holds it,
    unless the loop had to shorten the observation to fit its prompt budget)."""
    return _first_prompt(ROLE, observation, admissible_actions, task=task)


def later_prompt(task: str, observation: str, admissible_actions: Sequence[str],
                 history: Sequence[tuple[str, str]], history_length: int = 2) -> str:
    return _later_prompt(ROLE, task, observation, admissible_actions, history, history_length)


def build_prompt(task: str, observation: str, admissible_actions: Sequence[str],
                 history: Sequence[tuple[str, str]], history_length: int = 2) -> str:
    """:func:`first_prompt` when there is no history, else :func:`later_prompt`."""
    if not history:
        return first_prompt(observation, admissible_actions)
    return later_prompt(task, observation, admissible_actions, history, history_length)
