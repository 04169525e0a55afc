"""Reward function for the ``vault`` agent loop (``reward.custom_reward_function``): 10 x won, with
the same fields as ALFWorld's (:func:`verl_sdar.envs.alfworld.reward.success_score`).

    reward.custom_reward_function.path=pkg://verl_sdar.envs.vault.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

from verl_sdar.envs.alfworld.reward import success_score


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs) -> dict:
    return success_score(extra_info)
