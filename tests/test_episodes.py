"""Episode bookkeeping for multi-turn batches (pure Python)."""

import pytest

from verl_sdar.metrics import first_row_per_episode, rate_by_group, session_of, store_metrics


def test_session_of_strips_the_turn_index_only():
    assert session_of("3f2a-uid_0_4") == "3f2a-uid_0"
    assert session_of("a_b_c_1_12") == "a_b_c_1"  # uids may contain underscores
    assert session_of("plainkey") == "plainkey"
    assert session_of("u_1_x") == "u_1_x"  # no turn index: the key is its own episode


def test_one_row_per_episode_in_batch_order():
    keys = ["u_0_0", "u_0_1", "u_1_0", "v_0_0", "u_0_2", "u_1_1"]
    assert first_row_per_episode(keys) == [0, 2, 3]


def test_rate_by_group_counts_each_item_once():
    assert rate_by_group(["a", "b", "a", None], [1, 0, 0, 1]) == {"a": (0.5, 2), "b": (0.0, 1), "unknown": (1.0, 1)}
    with pytest.raises(ValueError, match="2 groups for 1 values"):
        rate_by_group(["a", "b"], [1])


def test_store_metrics_counts_rows_per_partition():
    listing = {"train": {"a_0_0": {}, "a_0_1": {}, "b_0_0": {}}, "sdar_teacher": {}, "val": {"c": {}}}
    assert store_metrics(listing, "sdar_teacher") == {"sdar/teacher_partition_rows": 0.0, "sdar/tq_stored_rows": 4.0}
    listing["sdar_teacher"] = {"a_0_0": {}}
    assert store_metrics(listing, "sdar_teacher")["sdar/teacher_partition_rows"] == 1.0
    assert store_metrics({}, "sdar_teacher") == {"sdar/teacher_partition_rows": 0.0, "sdar/tq_stored_rows": 0.0}


def test_group_metrics_count_mixed_identical_and_nonzero_rows_by_hand():
    import torch

    from verl_sdar.metrics import advantage_metrics, group_metrics

    # group a: 2 sessions of 2 turns, identical tokens, same outcome; group b: 2 one-turn sessions,
    # different tokens and outcomes; group c: one session (not counted as identical or not)
    keys = ["a_0_0", "a_0_1", "a_1_0", "a_1_1", "b_0_0", "b_1_0", "c_0_0"]
    responses = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([1, 2]), torch.tensor([3]),
                 torch.tensor([4]), torch.tensor([5]), [6]]
    scores = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 1.0]
    m = group_metrics(keys, responses, scores, real=list(range(7)))
    assert m == {"group/groups": 3.0, "group/sessions_mean": 5 / 3, "group/mixed_reward_share": 1 / 3,
                 "group/identical_share": 0.5}
    adv = torch.tensor([[0.0, 0.0], [0.5, 0.0], [0.0, 0.7]])
    mask = torch.tensor([[1, 1], [1, 1], [1, 0]])
    # row 2 is non-zero only on a masked token
    assert advantage_metrics(adv, mask, real=[0, 1, 2])["group/nonzero_advantage_rows"] == pytest.approx(1 / 3)
