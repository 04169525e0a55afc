"""Advantages: the turn-row GRPO estimator (registered in verl's registry), the invalid-action
penalty on each row's reward, and the objectives' advantage transforms.

verl's V1 trainer computes advantages in three steps that must all run: (1) the KL-in-reward
penalty (``algorithm.use_kl_in_reward``), (2) rollout correction (``algorithm.rollout_correction``),
(3) the estimator. This module plugs into them instead of replacing them:

* ``algorithm.adv_estimator=turn_row_grpo`` selects :func:`compute_turn_row_grpo_advantage` through
  verl's advantage-estimator registry. verl's own ``grpo`` in the V1 trainer scores each session's
  *final* row and copies its advantage to the earlier turns; verl-agent's GRPO (the paper's) takes
  the statistics over *every* turn row of a group, each row scored by its own reward.
* Before verl's step (1), :func:`penalise_rewards` subtracts each row's invalid-action penalty
  (``extra_fields["invalid_action_penalty"]``, written by the agent loops) from the row's reward
  (``sdar.invalid_action_penalty=reward``, the reference's default); or, with ``=advantage``, after
  verl's step (3) :func:`penalise_advantages` subtracts it from the row's advantage, so the group
  statistics see outcomes only. It cannot ride on the reward function's score: verl 0.9.1's reward
  loop scores an episode's last turn and copies that score to every turn row.
* After verl's step (3), the objective's advantage transform (``verl_sdar.methods``: OPSD zeroes
  the advantages, RLSD reweights them per token) runs on the padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from verl.trainer.ppo import core_algos

from .envs.contract import INVALID_ACTION_PENALTY

TURN_ROW_GRPO = "turn_row_grpo"

__all__ = ["TURN_ROW_GRPO", "compute_turn_row_grpo_advantage", "penalise_advantages", "penalise_rewards",
           "row_penalties"]


@core_algos.register_adv_est(TURN_ROW_GRPO)
def compute_turn_row_grpo_advantage(token_level_rewards, response_mask, index, config=None, **kwargs):
    """GRPO over every row of a group (one row per turn), verl-agent's convention.

        A_i = (r_i - mean_g(r)) / (std_g(r) + 1e-6)     (std unbiased; without
                                                          ``norm_adv_by_std_in_grpo``: r_i - mean_g)

    ``r_i`` is row i's summed token-level reward (the episode reward minus the row's own
    invalid-action penalty, after verl's KL-in-reward penalty when that is on), ``g`` its group
    (``index`` = the rows' ``uid``: all turn rows of all rollouts of one task, so long episodes weigh
    more). A group of one row gets ``A = r``. verl's ``compute_grpo_outcome_advantage`` does the
    arithmetic; this entry only makes every row take part instead of each session's final row.
    """
    norm = config.get("norm_adv_by_std_in_grpo", True) if config is not None else True
    return core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=token_level_rewards,
        response_mask=response_mask,
        index=index,
        norm_adv_by_std_in_grpo=norm,
        config=config,
    )


def row_penalties(extra_fields: Sequence) -> list[float]:
    """Each row's invalid-action penalty (0 for rows that carry none)."""
    return [float(e.get(INVALID_ACTION_PENALTY, 0.0) or 0.0) if isinstance(e, dict) else 0.0 for e in extra_fields]


def penalise_rewards(rm_scores: Sequence[torch.Tensor], penalties: Sequence[float]) -> list[torch.Tensor]:
    """Row i's token-level reward with ``penalties[i]`` subtracted on its last token.

    The summed reward of the row drops by exactly the penalty (verl's outcome estimators sum the
    token-level reward); rows without tokens or without a penalty are returned unchanged.
    """
    if len(rm_scores) != len(penalties):
        raise ValueError(f"{len(rm_scores)} reward rows for {len(penalties)} penalties")
    out = []
    for scores, penalty in zip(rm_scores, penalties, strict=True):
        if penalty and scores.numel():
            scores = scores.clone()
            scores[-1] = scores[-1] - penalty
        out.append(scores)
    return out


def penalise_advantages(advantages: torch.Tensor, response_mask: torch.Tensor,
                        penalties: Sequence[float]) -> torch.Tensor:
    """``A'_{i,t} = A_{i,t} - penalties[i]`` on row i's response tokens (padded ``(rows, tokens)``
    tensors): ``sdar.invalid_action_penalty=advantage``, the penalty after the group statistics, so
    an all-fail group's only advantage is the invalid rows' own ``-penalty``."""
    if advantages.shape[0] != len(penalties):
        raise ValueError(f"{advantages.shape[0]} advantage rows for {len(penalties)} penalties")
    column = torch.as_tensor(list(penalties), dtype=advantages.dtype, device=advantages.device).unsqueeze(-1)
    return advantages - column * response_mask.to(advantages.dtype)
