"""Turn-row GRPO through verl's own advantage step, and the invalid-action penalty on rewards."""

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from verl import DataProto
from verl.trainer.ppo import core_algos
from verl.trainer.ppo.ray_trainer import apply_kl_penalty
from verl.trainer.ppo.v1.utils import compute_advantage_for_multi_trajectories

from verl_sdar.advantages import TURN_ROW_GRPO, penalise_advantages, penalise_rewards, row_penalties


def test_penalty_lowers_each_rows_summed_reward_by_exactly_its_penalty():
    rows = [torch.tensor([0.0, 0.0, 10.0]), torch.tensor([0.0, 10.0]), torch.tensor([10.0]), torch.tensor([])]
    penalties = row_penalties([{"invalid_action_penalty": 0.1}, {}, {"invalid_action_penalty": 0.0}, "not a dict"])
    assert penalties == [0.1, 0.0, 0.0, 0.0]
    out = penalise_rewards(rows, penalties)
    assert out[0].tolist() == pytest.approx([0.0, 0.0, 9.9]) and rows[0][-1] == 10.0  # input untouched
    assert [float(r.sum()) for r in out[1:3]] == [10.0, 10.0] and out[3].numel() == 0
    # the same float32 value as subtracting the penalty from the summed reward (what it replaced)
    assert out[0].sum() == rows[0].sum() - torch.tensor(0.1)
    with pytest.raises(ValueError, match="2 reward rows for 1 penalties"):
        penalise_rewards(rows[:2], [0.0])


def _all_fail_group_advantages(placement: str) -> torch.Tensor:
    """8 failed turn rows of one group (reward 0), row 3 invalid (penalty 0.1), 2 response tokens
    each (the second row's last token is padding), through turn-row GRPO with std normalisation."""
    penalties = [0.0, 0.0, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0]
    mask = torch.ones(8, 2)
    mask[1, 1] = 0
    rewards = [torch.zeros(2) for _ in penalties]
    if placement == "reward":
        rewards = penalise_rewards(rewards, penalties)
    scores = torch.stack(rewards) * mask
    adv, _ = core_algos.get_adv_estimator_fn(TURN_ROW_GRPO)(
        token_level_rewards=scores, response_mask=mask, index=np.array(["g"] * 8), config={})
    return penalise_advantages(adv, mask, penalties) if placement == "advantage" else adv


def test_penalty_on_the_reward_is_an_all_fail_groups_only_variance_and_is_amplified():
    """Hand values: rewards [0,0,0,-0.1,0,0,0,0], mean -0.0125, unbiased std sqrt(0.00875/7) = 0.035355:
    the invalid row gets -0.0875/0.035355 = -2.4749, the seven others +0.0125/0.035355 = +0.3536."""
    adv = _all_fail_group_advantages("reward")
    assert adv[3, 0].item() == pytest.approx(-2.4749, abs=1e-3)
    assert adv[0, 0].item() == pytest.approx(0.3536, abs=1e-3) and adv[7, 1].item() == pytest.approx(0.3536, abs=1e-3)


def test_penalty_after_normalisation_keeps_outcome_credit_primary():
    """``sdar.invalid_action_penalty=advantage``: the group's outcomes are all equal, so the outcome
    advantage is 0 everywhere and only the invalid row's tokens carry -0.1 (padding stays 0)."""
    adv = _all_fail_group_advantages("advantage")
    want = torch.zeros(8, 2)
    want[3] = -0.1
    assert torch.allclose(adv, want, atol=1e-6)
    # a mixed group keeps its outcome advantages, shifted by the penalty on the penalised row only
    outcome = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    assert torch.allclose(penalise_advantages(outcome, torch.ones(2, 2), [0.0, 0.1]),
                          torch.tensor([[1.0, 1.0], [-1.1, -1.1]]))
    with pytest.raises(ValueError, match="2 advantage rows for 1 penalties"):
        penalise_advantages(outcome, torch.ones(2, 2), [0.1])


def _batch(scores):
    """Five turn rows of two episodes of one task (uid u), one row of another task (uid v)."""
    n, width = len(scores), 3
    token_scores = torch.zeros(n, width)
    token_scores[:, -1] = torch.tensor(scores)
    generator = torch.Generator().manual_seed(0)
    batch = TensorDict(
        {
            "token_level_scores": token_scores,
            "response_mask": torch.ones(n, width),
            "old_log_probs": -torch.rand(n, width, generator=generator),
            "ref_log_prob": -torch.rand(n, width, generator=generator),
        },
        batch_size=n,
    )
    data = DataProto(batch=batch, non_tensor_batch={"uid": np.array(["u"] * 5 + ["v"], dtype=object)})
    keys = ["u_0_0", "u_0_1", "u_0_2", "u_1_0", "u_1_1", "v_0_0"]
    return data, keys


def _advantages(scores, *, kl_in_reward: bool, estimator: str = TURN_ROW_GRPO):
    data, keys = _batch(scores)
    metrics = {}
    if kl_in_reward:
        data, metrics = apply_kl_penalty(data, kl_ctrl=core_algos.FixedKLController(0.5), kl_penalty="kl")
    else:
        data.batch["token_level_rewards"] = data.batch["token_level_scores"]
    data = compute_advantage_for_multi_trajectories(
        data, batch_keys=keys, adv_estimator=estimator, num_repeat=1, config={"norm_adv_by_std_in_grpo": True}
    )
    return data.batch["advantages"], metrics


def test_turn_row_grpo_runs_inside_verls_advantage_step_with_kl_in_reward():
    scores = [10.0, 10.0, 10.0 - 0.1, 0.0, -0.1, 5.0]
    plain, _ = _advantages(scores, kl_in_reward=False)
    # every turn row of group u takes part: the hand-computed GRPO over the 5 row scores
    u = torch.tensor(scores[:5])
    expected = (u - u.mean()) / (u.std() + 1e-6)
    assert torch.allclose(plain[:5, 0], expected)
    assert torch.allclose(plain[:5], plain[:5, :1].expand(5, 3))  # one advantage per row, on every token
    # verl's own KL-in-reward step changes the token-level rewards, and so the advantages
    with_kl, metrics = _advantages(scores, kl_in_reward=True)
    assert "actor/reward_kl_penalty" in metrics
    assert not torch.allclose(plain, with_kl)


def test_verls_stock_grpo_differs_from_turn_rows():
    # stock V1 GRPO scores each session's final row only and copies its advantage to earlier turns
    scores = [10.0, 10.0, 9.9, 0.0, -0.1, 5.0]
    stock, _ = _advantages(scores, kl_in_reward=False, estimator="grpo")
    turn_rows, _ = _advantages(scores, kl_in_reward=False)
    assert torch.equal(stock[0], stock[2]) and not torch.equal(turn_rows[0], turn_rows[2])


# verl's KL-in-reward and rollout-correction steps with turn-row GRPO through main_ppo: asserted on the
# ALFWorld SDAR step, tests/test_alfworld_agent_loop.py::test_one_sdar_step_through_main_ppo
