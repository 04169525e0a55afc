"""verl agent loop ``alfworld``: one ALFWorld episode, one training row per turn.

Each dataset row names a game (``extra_info.game_path``); the loop resets an
:class:`~verl_sdar.envs.alfworld.play.AlfworldEnv` on it and plays it with the verl-agent style
prompts of :mod:`.prompts`. Episode mechanics (turn rows, invalid-action penalty, env thread,
failures) are those of :class:`verl_sdar.envs.turn_loop.TurnRowAgentLoop`.

Reward: :func:`verl_sdar.envs.alfworld.reward.compute_score` (10 x won) on the last turn, copied
by verl to every turn row.

Configuration (top-level ``env`` block of the trainer config, verl-agent names): ``max_steps``
(50), ``history_length`` (2), ``invalid_action_penalty_coef`` (0.1), ``use_invalid_action_penalty``
(true), ``step_timeout_s`` (60), ``reset_timeout_s`` (120). Keys given in the agent loop config
file (``actor_rollout_ref.rollout.agent.agent_loop_config_path``) override them.

Skill-GRPO (``algorithm=skill_grpo``): every user message starts with the row's skills
(``sdar.skills``, strategy ``task_type``: the game's task type), see
:class:`~verl_sdar.envs.turn_loop.TurnRowAgentLoop`.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import register

from verl_sdar.envs.alfworld.prompts import build_prompt, first_prompt
from verl_sdar.envs.contract import GAME_PATH, TASK_TYPE, WON
from verl_sdar.envs.turn_loop import TURN_DEFAULTS, TurnRowAgentLoop, call_env  # noqa: F401  (call_env: tests)

AGENT_NAME = "alfworld"
DEFAULTS = dict(TURN_DEFAULTS)
SUCCESS_REWARD = 10.0


def make_env(max_steps: int):
    """The environment used by the loop (tests may replace this module attribute)."""
    from verl_sdar.envs.alfworld.play import AlfworldEnv

    return AlfworldEnv(max_steps=max_steps)


@register(AGENT_NAME)
class AlfworldAgentLoop(TurnRowAgentLoop):
    """Plays one ALFWorld game; returns one :class:`AgentLoopOutput` per turn."""

    ENV_NAME = AGENT_NAME
    DEFAULTS = DEFAULTS

    def open_env(self):
        return make_env(self.max_steps)

    def row_fields(self, extra_info: dict) -> dict[str, Any]:
        return {TASK_TYPE: extra_info.get(TASK_TYPE), GAME_PATH: extra_info.get(GAME_PATH)}

    def reset(self, env, extra_info: dict) -> tuple[str, str, list[str]]:
        from verl_sdar.envs.alfworld.play import strip_welcome

        game_path = extra_info.get(GAME_PATH)
        if not game_path:
            raise ValueError("row has no extra_info.game_path")
        obs, info = env.reset(game_path)
        return info.get("task", ""), strip_welcome(obs), info["admissible_commands"]

    def step(self, env, action: str):
        next_obs, _reward, done, info = env.step(action)
        return next_obs, done, bool(info.get(WON, False)), info["admissible_commands"], info

    def prompt(self, task, observation, admissible, history, history_length) -> str:
        if not history and task and task not in observation:
            # the first observation states the task; shortened to fit the prompt budget it may not
            return first_prompt(observation, admissible, task=task)
        return build_prompt(task, observation, admissible, history, history_length)
