"""verl agent loop ``vault``: one vault episode, one training row per turn (verl-agent style).

Each dataset row carries its task (``extra_info.vault_task``, JSON; :mod:`verl_sdar.envs.vault.env`).
Episode mechanics (turn rows, invalid-action penalty, env thread, failures, Skill-GRPO prefixes)
are those of :class:`verl_sdar.envs.turn_loop.TurnRowAgentLoop`; the prompts are the ALFWorld-style
ones of :mod:`verl_sdar.envs.turn_prompts`. An action that is not admissible changes nothing and
is flagged ``inadmissible`` (penalised only with ``env.penalise_inadmissible=true``).

Configuration (top-level ``env`` block): ``max_steps`` (10: the longest split has 6 forks, an
episode takes forks + 2 turns), ``history_length`` (0: each decision is read in the current
observation, and past signs in the prompt were what a tiny model copied by mistake in the warm
start's fifth try: docs/results/vault/README.md), ``invalid_action_penalty_coef`` (0.1),
``use_invalid_action_penalty`` (true), ``penalise_inadmissible`` (false).
"""

from __future__ import annotations

import json
from typing import Any

from verl.experimental.agent_loop.agent_loop import register

from verl_sdar.envs.contract import VAULT_TASK, WON
from verl_sdar.envs.turn_loop import TURN_DEFAULTS, TurnRowAgentLoop
from verl_sdar.envs.turn_prompts import first_prompt, later_prompt
from verl_sdar.envs.vault.env import VaultEnv

AGENT_NAME = "vault"
DEFAULTS = {**TURN_DEFAULTS, "max_steps": 10, "history_length": 0}
ROLE = "You are an agent in a house with a locked vault."


def vault_prompt(task: str, observation: str, admissible: list[str], history: list[tuple[str, str]],
                 history_length: int) -> str:
    """The user message of a turn (also what the warm start trains on: :mod:`.warmstart`)."""
    if not history:
        return first_prompt(ROLE, observation, admissible, task=task)
    return later_prompt(ROLE, task, observation, admissible, history, history_length)


@register(AGENT_NAME)
class VaultAgentLoop(TurnRowAgentLoop):
    """Plays one vault task; returns one :class:`AgentLoopOutput` per turn."""

    ENV_NAME = AGENT_NAME
    DEFAULTS = DEFAULTS

    def open_env(self):
        return VaultEnv(max_steps=self.max_steps)

    def reset(self, env, extra_info: dict) -> tuple[str, str, list[str]]:
        task = extra_info.get(VAULT_TASK)
        if not task:
            raise ValueError(f"row has no extra_info.{VAULT_TASK}")
        return env.reset(json.loads(task) if isinstance(task, str) else task)

    def step(self, env, action: str):
        obs, done, won, admissible, info = env.step(action)
        return obs, done, won, admissible, {**info, WON: won}

    def prompt(self, task, observation, admissible, history, history_length) -> str:
        return vault_prompt(task, observation, admissible, history, history_length)

    def episode_fields(self, last_info: dict) -> dict[str, Any]:
        return {"forks_passed": int(last_info.get("forks_passed", 0)),
                "right_key": bool(last_info.get("right_key"))}
