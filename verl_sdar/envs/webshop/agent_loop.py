"""verl agent loop ``webshop``: one shopping episode, one training row per turn (verl-agent style).

Each dataset row carries its goal (``extra_info.goal``, JSON); the loop plays it in a
:class:`~verl_sdar.envs.webshop.env.WebShopEnv` over the catalogue in ``env.catalogue_dir``
(loaded and indexed once per process). Episode mechanics (turn rows, invalid-action penalty, env
thread, failures) are those of :class:`verl_sdar.envs.turn_loop.TurnRowAgentLoop`. An action that
is well formatted but not admissible on the current page changes nothing and is flagged
(``inadmissible``); as in the reference (which penalises format errors only) it is not penalised
unless ``env.penalise_inadmissible=true``.

When the agent buys, WebShop's reward is written on every turn row (``webshop_reward``) and
:func:`verl_sdar.envs.webshop.reward.compute_score` turns it into the score (10 for a perfect purchase,
else 0; ``compute_graded_score``: 10 x reward).

Configuration (top-level ``env`` block): ``max_steps`` (15), ``history_length`` (2),
``invalid_action_penalty_coef`` (0.1), ``use_invalid_action_penalty`` (true),
``penalise_inadmissible`` (false), ``catalogue_dir`` (the folder written by
``python -m verl_sdar.envs.webshop.catalogue``).

Skill-GRPO (``algorithm=skill_grpo``): every user message starts with the row's skills
(``sdar.skills``; the GPU recipes' strategy ``keyword_substring``, the reference's rule, matches
the prompt text), see
:class:`~verl_sdar.envs.turn_loop.TurnRowAgentLoop`.
"""

from __future__ import annotations

import json
from typing import Any

from verl.experimental.agent_loop.agent_loop import register

from verl_sdar.envs.common import locked_cache
from verl_sdar.envs.contract import BOUGHT, GOAL, WEBSHOP_REWARD, WON
from verl_sdar.envs.turn_loop import TURN_DEFAULTS, TurnRowAgentLoop
from verl_sdar.envs.turn_prompts import first_prompt, later_prompt
from verl_sdar.envs.webshop.env import Shop, WebShopEnv

AGENT_NAME = "webshop"
DEFAULTS = {**TURN_DEFAULTS, "max_steps": 15, "catalogue_dir": None}
ROLE = "You are an expert shopping agent in the WebShop online store."

@locked_cache
def get_shop(catalogue_dir: str) -> Shop:
    """One shop (catalogue loaded and indexed) per folder per process."""
    return Shop.from_dir(catalogue_dir)


@register(AGENT_NAME)
class WebShopAgentLoop(TurnRowAgentLoop):
    """Plays one WebShop goal; returns one :class:`AgentLoopOutput` per turn."""

    ENV_NAME = AGENT_NAME
    DEFAULTS = DEFAULTS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not self.settings["catalogue_dir"]:
            raise ValueError(
                "webshop agent loop: set env.catalogue_dir (python -m verl_sdar.envs.webshop.catalogue DIR)"
            )
        self.shop = get_shop(str(self.settings["catalogue_dir"]))

    def open_env(self):
        return WebShopEnv(self.shop, max_steps=self.max_steps)

    def reset(self, env, extra_info: dict) -> tuple[str, str, list[str]]:
        goal = extra_info.get(GOAL)
        if not goal:
            raise ValueError("row has no extra_info.goal")
        goal = json.loads(goal) if isinstance(goal, str) else goal
        obs, info = env.reset(goal)
        return info["task"], obs, info["admissible_commands"]

    def step(self, env, action: str):
        obs, _reward, done, info = env.step(action)
        return obs, done, bool(info[WON]), info["admissible_commands"], info

    def prompt(self, task, observation, admissible, history, history_length) -> str:
        if not history:
            return first_prompt(ROLE, observation, admissible, task=task)
        return later_prompt(ROLE, task, observation, admissible, history, history_length)

    def episode_fields(self, last_info: dict) -> dict[str, Any]:
        return {WEBSHOP_REWARD: float(last_info.get("reward", 0.0)), BOUGHT: bool(last_info.get(BOUGHT, False))}
