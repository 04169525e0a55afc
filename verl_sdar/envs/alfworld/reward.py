"""Reward function for the ``alfworld`` agent loop (``reward.custom_reward_function``).

verl's reward loop calls it once per episode, on the last turn, with ``extra_info`` = the dataset
row's extra_info updated with that turn's ``extra_fields`` (so ``won`` is the episode result);
verl then copies the score to every turn row of the episode. The score is 10 x won, the
environment reward of verl-agent's ALFWorld setup.

    reward.custom_reward_function.path=pkg://verl_sdar.envs.alfworld.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

SUCCESS_REWARD = 10.0


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs) -> dict:
    info = extra_info or {}
    won = bool(info.get("won", False))
    return {
        "score": SUCCESS_REWARD * float(won),
        "success": float(won),
        "episode_steps": float(info.get("episode_steps", 0) or 0),
        "env_error": float(bool(info.get("episode_error"))),
        # a string: verl's own statistics skip it; the SDAR trainer reports success per task type
        "task_type": str(info.get("task_type") or "unknown"),
    }
