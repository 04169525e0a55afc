"""Privileged text for ALFWorld: what the SDAR teacher (or a warm-start sample) sees beyond the task.

Two kinds, chosen by name (``none``: no privileged text):

* ``skills`` -- the skill library's text for the game's task type (:mod:`verl_sdar.skills`,
  ``task_type`` retrieval): generic procedural advice, the paper's privileged context;
* ``route`` -- game-specific: the receptacles the planner expert visits, in order, read from the
  game file's walkthrough (``"Places to visit, in order: microwave 1, fridge 1, countertop 1."``).
  The expert's actions depend on it (where the objects are), which the generic skills do not
  tell; it is the informative privileged context of the small-scale learning curves
  (``benchmarks/curves.py``).

    text_for = privileged_text("route")          # or privileged_text("skills", "builtin:alfworld")
    text_for("/path/to/game.tw-pddl")            # -> str
"""

from __future__ import annotations

import json
from collections.abc import Callable

KINDS = ("none", "skills", "route")
ROUTE_PREFIX = "Places to visit, in order: "


def route_hint(game_path: str) -> str:
    """The receptacles of the expert's ``go to`` actions, in order (consecutive repeats merged)."""
    with open(game_path) as f:
        walkthrough = json.load(f).get("walkthrough")
    if not walkthrough:
        raise ValueError(f"{game_path}: the game file has no expert walkthrough; route hints need one")
    places: list[str] = []
    for action in walkthrough:
        if action.startswith("go to "):
            place = action[len("go to "):]
            if not places or places[-1] != place:
                places.append(place)
    return ROUTE_PREFIX + ", ".join(places) + "."


def privileged_text(kind: str, skills: str | None = None) -> Callable[[str], str] | None:
    """A function ``game_path -> privileged text`` of the given kind (``skills`` needs the library
    folder); ``None`` for ``none``."""
    if kind == "none":
        return None
    if kind == "route":
        return route_hint
    if kind == "skills":
        if not skills:
            raise ValueError("privileged kind 'skills' needs a skill library folder")
        from verl_sdar.envs.alfworld.play import task_type_of
        from verl_sdar.skills import SkillLibrary, make_retriever

        retriever = make_retriever("task_type", SkillLibrary.load(skills))
        return lambda game: retriever.retrieve(task_type=task_type_of(game)).text
    raise ValueError(f"unknown privileged kind {kind!r}; choose from {KINDS}")
