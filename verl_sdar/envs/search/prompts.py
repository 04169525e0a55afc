"""Search-QA prompts and action parsing (Search-R1 tags).

The agent writes ``<think>...</think>`` then one action: ``<search> query </search>`` (the results
come back in ``<information>...</information>``) or ``<answer> text </answer>`` (ends the episode).

Which action a response holds and whether it counts as invalid (penalised) follows one of two rule
sets, ``env.action_rules`` (:func:`parse_action`):

* ``reference`` (default; verl-agent's ``search_projection``, the authors' code): the response is
  cut after its first ``</search>``, else after its first ``</answer>``; the action is the first
  ``<search>`` block of that prefix, else its first ``<answer>`` block (tags case-insensitive,
  content stripped, empty allowed). The response is *invalid* when it has no block, holds both an
  ``<search>`` and an ``<answer>`` tag, or more than one of either; an invalid response's action
  still runs when one was found. The turn-row loop trains on the whole response.
* ``ours``: the first complete block; empty content or content holding an action tag (nested
  tags) is invalid and runs nothing; multiple blocks are allowed (the first counts). Whatever the
  model writes after the action's closing tag is cut from the row (Search-R1 stops generation
  there).

The single-row loop cuts after the action in both: the episode grows inside one assistant
message, so text after the action would sit between the action and its results.

Two prompt styles:

* :func:`build_prompt`: the one user message of the single-row (Search-R1) loop; the episode then
  grows inside one assistant message.
* :func:`turn_prompt`: the turn-row (verl-agent) loop rebuilds one user message every turn: the
  rules, the question, where the episode stands, and the last ``history_length`` turns as
  :class:`Turn` records (each action and what came back).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from verl_sdar.envs.turn_prompts import clip_text

INSTRUCTION = (
    "Answer the question below. You may search a knowledge base: write <search> your query </search> "
    "and the results will be shown between <information> and </information>. You have at most "
    "{max_turns} turns. Before each action, reason inside <think> </think>. When you know the answer, "
    "write it inside <answer> </answer>, just the answer without explanation, for example "
    "<answer> Paris </answer>.\nQuestion: {question}"
)
INVALID_FEEDBACK = (
    "Invalid action: write <search> query </search> to search or <answer> text </answer> to answer."
)
_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_TAG = re.compile(r"</?(search|answer)>")
_REF_BLOCK = {kind: re.compile(rf"<{kind}>(.*?)</{kind}>", re.IGNORECASE | re.DOTALL) for kind in ("search", "answer")}
_REF_OPEN = {kind: re.compile(rf"<{kind}>", re.IGNORECASE) for kind in ("search", "answer")}
ACTION_RULES = ("reference", "ours")


def build_prompt(question: str, max_turns: int) -> str:
    return INSTRUCTION.format(question=question.strip(), max_turns=max_turns)


@dataclass(frozen=True)
class Action:
    """What a response does. ``kind``: ``"search"`` | ``"answer"`` | ``"invalid"`` (no action to
    run); ``end``: the character offset just after the action's closing tag (``len(text)`` when
    none); ``valid``: False when the response is penalised (always for ``"invalid"``; with the
    reference's rules also for a multi-tag response whose first action still runs); ``reason``:
    why it is invalid."""

    kind: str
    content: str
    end: int
    reason: str = ""
    valid: bool = True


def parse_action(text: str, rules: str = "reference") -> Action:
    """The action of a response under ``rules`` (``ACTION_RULES``; module docstring)."""
    if rules == "reference":
        return _parse_reference(text)
    if rules != "ours":
        raise ValueError(f"env.action_rules must be one of {ACTION_RULES}, got {rules!r}")
    match = _ACTION.search(text)
    if match is None:
        return Action("invalid", "", len(text), "no <search> or <answer> block", valid=False)
    content = " ".join(match.group(2).split())
    if not content:
        return Action("invalid", "", match.end(), f"empty <{match.group(1)}> block", valid=False)
    if _TAG.search(content):
        return Action("invalid", "", match.end(), f"nested tags in the <{match.group(1)}> block", valid=False)
    return Action(match.group(1), content, match.end())


def _parse_reference(text: str) -> Action:
    lowered = text.lower()
    cut = len(text)
    for closing in ("</search>", "</answer>"):
        at = lowered.find(closing)
        if at >= 0:
            cut = at + len(closing)
            break
    prefix = text[:cut]
    found = None
    for kind in ("search", "answer"):
        match = _REF_BLOCK[kind].search(prefix)
        if match is not None:
            found = (kind, match.group(1).strip(), match.end())
            break
    counts = {kind: len(_REF_OPEN[kind].findall(text)) for kind in ("search", "answer")}
    reason = ""
    if found is None:
        reason = "no <search> or <answer> block"
    elif counts["search"] and counts["answer"]:
        reason = "both <search> and <answer> tags"
    elif counts["search"] > 1 or counts["answer"] > 1:
        reason = "more than one <search> or <answer> tag"
    if found is None:
        return Action("invalid", "", len(text), reason, valid=False)
    kind, content, end = found
    return Action(kind, content, end, reason, valid=not reason)


def information_block(results: str) -> str:
    """The text appended after a search (not generated by the model: masked out of the loss)."""
    return f"\n\n<information>{results}</information>\n\n"


# ----------------------------------------------------------------------------- turn-row prompts
TURN_RULES = (
    "You answer a question with the help of a search engine over a knowledge base. Each turn you "
    "write one action, and the episode has at most {max_turns} turns."
)
TURN_ACTIONS = (
    "You may reason first inside <think> </think>. Then write exactly one action:\n"
    "- <search> a query </search> to look something up; the best matching documents come back as "
    "<information> ... </information> in your next turn;\n"
    "- <answer> the answer </answer> once you know it: just the answer, no explanation (for example "
    "<answer> Paris </answer>). This ends the episode.\n"
    "A response with neither action wastes the turn."
)


@dataclass(frozen=True)
class Turn:
    """One past turn as the next prompts show it."""

    action: str
    """``<search> q </search>``, ``<answer> a </answer>``, or a note on an invalid response"""
    observation: str
    """what came back: ``<information>...</information>``, or the invalid-action hint"""


def search_turn(query: str, results: str) -> Turn:
    return Turn(f"<search> {query} </search>", f"<information>{results}</information>")


def invalid_turn(reason: str) -> Turn:
    return Turn(f"(no valid action: {reason})", INVALID_FEEDBACK)


def clip_turn(turn: Turn, chars: int) -> Turn:
    """``turn`` with its observation cut to ``chars`` characters (inside the information tags)."""
    open_, close = "<information>", "</information>"
    obs = turn.observation
    if obs.startswith(open_) and obs.endswith(close):
        obs = open_ + clip_text(obs[len(open_): -len(close)], chars) + close
    else:
        obs = clip_text(obs, chars)
    return Turn(turn.action, obs)


def turn_prompt(
    question: str,
    history: Sequence[Turn],
    max_turns: int,
    history_length: int,
    shown: int | None = None,
) -> str:
    """The user message of the turn after ``history`` (``len(history)`` turns already taken).

    The last ``history_length`` turns are shown (fewer when ``shown`` is smaller: the loop drops
    the oldest ones to fit its prompt budget), each as ``Turn i: <action>`` followed by its
    observation, numbered from 1 over the whole episode.
    """
    taken = len(history)
    window = min(max(history_length, 0), taken)
    if shown is not None:
        window = min(window, max(shown, 0))
    parts = [TURN_RULES.format(max_turns=max_turns), f"Question: {question.strip()}"]
    if taken == 0:
        status = f"This is turn 1 of {max_turns}: nothing has been searched yet."
    else:
        status = f"This is turn {taken + 1} of {max_turns}. You have taken {taken} turn(s) so far"
        if window == 0:
            status += "; none of them is shown."
        elif window == taken:
            status += ", shown below with what each returned:"
        else:
            status += f"; the last {window} are shown below with what each returned (earlier ones are left out):"
    parts.append(status)
    if window:
        first = taken - window + 1
        parts.append("\n".join(
            f"Turn {first + j}: {turn.action}\n{turn.observation}" for j, turn in enumerate(history[-window:])
        ))
    if taken + 1 >= max_turns:
        parts.append("This is your last turn: answer now.")
    parts.append(TURN_ACTIONS)
    return "\n\n".join(parts)
