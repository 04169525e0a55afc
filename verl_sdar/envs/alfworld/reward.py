"""Reward function for the ``alfworld`` agent loop (``reward.custom_reward_function``).

verl's reward loop calls it once per episode, on the last turn, with ``extra_info`` = the dataset
row's extra_info updated with that turn's ``extra_fields`` (so ``won`` is the episode result);
verl then copies the score to every turn row of the episode. The score is 10 x won, the
environment reward of verl-agent's ALFWorld setup.

    reward.custom_reward_function.path=pkg://verl_sdar.envs.alfworld.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

from verl_sdar.envs.contract import ENV_ERROR, EPISODE_ERROR, EPISODE_STEPS, SUCCESS, TASK_TYPE, WON

SUCCESS_REWARD = 10.0


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs) -> dict:
    return success_score(extra_info)


def success_score(extra_info: dict | None) -> dict:
    """10 x won, with success, episode steps, env error and task type (any env whose episode ends
    won or lost: ALFWorld, the vault task)."""
    info = extra_info or {}
    won = bool(info.get(WON, False))
    return {
        "score": SUCCESS_REWARD * float(won),
        SUCCESS: float(won),
        EPISODE_STEPS: float(info.get(EPISODE_STEPS, 0) or 0),
        ENV_ERROR: float(bool(info.get(EPISODE_ERROR))),
        # a string: verl's own statistics skip it; the SDAR trainer reports success per task type
        TASK_TYPE: str(info.get(TASK_TYPE) or "unknown"),
    }
