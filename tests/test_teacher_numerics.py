"""Teacher numerics: response tokens whose teacher log-prob is -inf or NaN are masked out of every
objective that reads the teacher (hand-computed values, gradients, gradcheck in float64) and
counted by the trainer's teacher-pass metrics."""

from __future__ import annotations

import math

import pytest
import torch

from verl_sdar import objectives as obj
from verl_sdar.config import SDARConfig
from verl_sdar.methods import OBJECTIVES

NAN, NEG_INF = float("nan"), float("-inf")
# one row, four response tokens; the teacher pass broke on token 1 (NaN) and gave token 2 zero probability (-inf)
S = [[-1.0, -2.0, -0.5, -1.5]]
T = [[-0.5, NAN, NEG_INF, -1.0]]
MASK = torch.ones(1, 4, dtype=torch.bool)
BAD = [1, 2]


def student(values=S):
    return torch.tensor(values, dtype=torch.float64, requires_grad=True)


def teacher():
    return torch.tensor(T, dtype=torch.float64)


def test_teacher_mask_is_the_response_mask_without_non_finite_teacher_tokens():
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    t = torch.tensor([[0.0, NAN, float("inf"), NAN]])
    assert obj.teacher_mask(t, mask).tolist() == [[True, False, False, False]]


def test_sdar_term_hand_computed_with_the_bad_tokens_masked():
    s = student()
    loss, metrics = obj.sdar_loss(s, teacher(), MASK, beta=5.0)
    loss.backward()
    # tokens 0 and 3: gap 0.5, gate sigmoid(2.5); tokens 1, 2 add nothing; token-mean over the 4 response tokens
    g = 1 / (1 + math.exp(-2.5))
    assert loss.item() == pytest.approx(2 * g * 0.5 / 4, rel=1e-12)
    assert s.grad[0].tolist() == pytest.approx([-g / 4, 0.0, 0.0, -g / 4], rel=1e-12)
    # the statistics skip the masked tokens
    assert metrics["gap_mean"].item() == pytest.approx(0.5) and metrics["gap_std"].item() == pytest.approx(0.0)
    assert metrics["gate_mean"].item() == pytest.approx(g)


def test_opsd_rkl_hand_computed_with_the_bad_tokens_masked():
    s = student()
    loss, _ = obj.opsd_loss(s, teacher(), MASK)
    loss.backward()
    # k = s - t = -0.5 on tokens 0 and 3; gradient k / 4 there
    assert loss.item() == pytest.approx(-1.0 / 4, rel=1e-12)
    assert s.grad[0].tolist() == pytest.approx([-0.125, 0.0, 0.0, -0.125], rel=1e-12)


def test_skill_sd_hand_computed_with_the_bad_tokens_masked():
    s = student()
    old = torch.tensor(S, dtype=torch.float64)
    loss, metrics = obj.skill_sd_loss(s, teacher(), old, MASK)
    loss.backward()
    # d = -0.5 on tokens 0 and 3, rho = 1: k3 = e^0.5 - 1 - 0.5; d(rho k3)/ds = k3 + (1 - e^0.5)
    k3 = math.exp(0.5) - 1.5
    assert loss.item() == pytest.approx(2 * k3 / 4, rel=1e-12)
    grad = (k3 + 1 - math.exp(0.5)) / 4
    assert s.grad[0].tolist() == pytest.approx([grad, 0.0, 0.0, grad], rel=1e-12)
    assert metrics["k3_mean"].item() == pytest.approx(k3)


def test_rlsd_keeps_the_outcome_advantage_on_the_bad_tokens():
    adv = obj.rlsd_token_advantages(torch.ones(1, 4, dtype=torch.float64), torch.tensor(S, dtype=torch.float64),
                                    teacher(), MASK, mix=0.5, clip_eps=0.2)
    # tokens 0 and 3: exp(0.5) clipped to 1.2 -> 0.5 + 0.5 * 1.2; tokens 1, 2: plain A = 1
    assert adv[0].tolist() == pytest.approx([1.1, 1.0, 1.0, 1.1], rel=1e-12)


@pytest.mark.parametrize("divergence", obj.DIVERGENCES)
@pytest.mark.parametrize("name", [n for n, o in OBJECTIVES.items() if o.loss_term is not None])
def test_every_teacher_loss_term_is_finite_and_ignores_the_bad_tokens(name, divergence):
    """Through the registry (the terms the actor loss adds): value and gradient finite, no
    gradient on the bad tokens, and the student's values there do not matter."""
    sdar = SDARConfig(objective=name, divergence=divergence)
    term = OBJECTIVES[name].loss_term
    rows = {"teacher_log_probs": teacher(), "old_log_probs": torch.tensor(S, dtype=torch.float64),
            "entropy": torch.full((1, 4), 0.3, dtype=torch.float64)}
    agg = {"loss_agg_mode": "token-mean"}
    s = student()
    loss, metrics = term(s, rows, MASK, sdar, agg)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert s.grad[0, BAD].tolist() == [0.0, 0.0]
    other = student([[-1.0, -7.0, -9.0, -1.5]])
    assert term(other, rows, MASK, sdar, agg)[0].item() == pytest.approx(loss.item(), rel=1e-12)


def test_an_all_bad_batch_gives_a_zero_term():
    t = torch.full((1, 4), NAN, dtype=torch.float64)
    s = student()
    loss, metrics = obj.sdar_loss(s, t, MASK, beta=5.0)
    loss.backward()
    assert loss.item() == 0.0 and s.grad.abs().sum().item() == 0.0
    assert all(torch.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("mode", obj.LOSS_AGG_MODES)
def test_gradcheck_float64_with_bad_teacher_tokens(mode):
    """torch.autograd.gradcheck where the term is a plain function of the student (the SDAR term
    with a constant gate: the gap gate is detached by design, so numerical and analytic gradients
    differ there; Skill-SD, inside its clamps). Two rows, a padded slot holding -inf."""
    s = torch.tensor([[-1.0, -2.0, -0.5, -1.5], [-0.7, -1.2, -0.3, NEG_INF]], dtype=torch.float64,
                     requires_grad=True)
    t = torch.tensor([[-0.5, NAN, NEG_INF, -1.0], [NAN, -0.9, -0.4, 0.0]], dtype=torch.float64)
    old = torch.tensor([[-1.1, -2.0, -0.6, -1.4], [-0.8, -1.0, -0.2, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool)
    assert torch.autograd.gradcheck(
        lambda x: obj.sdar_loss(x, t, mask, beta=0.0, gate="constant", loss_agg_mode=mode)[0], (s,))
    assert torch.autograd.gradcheck(lambda x: obj.skill_sd_loss(x, t, old, mask, loss_agg_mode=mode)[0], (s,))
    for divergence in ("forward_kl", "jsd"):  # weights depend on the detached gap: check the bad tokens only
        x = s.detach().clone().requires_grad_(True)
        obj.sdar_loss(x, t, mask, beta=0.0, gate="constant", divergence=divergence, loss_agg_mode=mode)[0].backward()
        assert x.grad[0, 1:3].tolist() == [0.0, 0.0] and x.grad[1, 0].item() == 0.0


def test_teacher_metrics_count_the_bad_tokens_of_real_rows_only():
    from verl_sdar.metrics import teacher_metrics
    from verl_sdar.teacher import TeacherRows

    def rows(*values):
        return [torch.tensor(v, dtype=torch.float32) for v in values]

    # row 0: 4 response tokens, NaN and -inf in the response; row 1: a padding clone (its NaN is not
    # counted); row 2: 3 tokens, -inf on a token outside its response mask (not counted) and one NaN
    teacher_lp = rows([-0.5, NAN, NEG_INF, -1.0], [NAN, NAN], [-0.2, NAN, NEG_INF])
    old = rows([-1.0, -2.0, -0.5, -1.5], [-1.0, -1.0], [-0.2, -0.3, -0.4])
    mask = rows([1, 1, 1, 1], [1, 1], [1, 1, 0])
    built = TeacherRows(inserted_tokens=[3, 0, 0], removed_context_tokens=[0, 0, 0])
    metrics = teacher_metrics(old_log_probs=old, teacher_log_probs=teacher_lp, response_mask=mask,
                              entropy=rows([0.1] * 4, [0.1] * 2, [0.1] * 3), texts=["skill", "", ""], built=built,
                              task_types=[None, None, None], real=[0, 2], beta=5.0, gate="gap")
    assert metrics["sdar/teacher_nonfinite_tokens"] == 3.0
    assert all(math.isfinite(v) for v in metrics.values()), metrics
    # the gap statistics use the finite tokens only: row 0 tokens 0, 3 (0.5 each), row 2 token 0 (0.0)
    assert metrics["sdar/gap_mean"] == pytest.approx(1.0 / 3)
    assert metrics["sdar/plain_rows_gap_abs_max"] == 0.0
    clean = teacher_metrics(old_log_probs=old, teacher_log_probs=old, response_mask=mask,
                            entropy=rows([0.1] * 4, [0.1] * 2, [0.1] * 3), texts=["", "", ""], built=built,
                            task_types=[None, None, None], real=[0, 2], beta=5.0, gate="gap")
    assert clean["sdar/teacher_nonfinite_tokens"] == 0.0


def test_teacher_metrics_split_gate_and_gap_by_task_type_and_noisy_condition():
    """Rows flagged ``extra_info.noisy`` get their own gate and gap statistics beside the clean rows'
    (the noisy-teacher condition), as task types do; rows without a flag count in neither."""
    from verl_sdar.metrics import teacher_metrics
    from verl_sdar.teacher import TeacherRows

    def rows(*values):
        return [torch.tensor(v, dtype=torch.float32) for v in values]

    old = rows([-1.0, -1.0], [-1.0], [-1.0])
    teacher_lp = rows([0.0, -1.0], [-3.0], [-1.0])  # gaps: row 0 (1, 0), row 1 (-2), row 2 (0)
    built = TeacherRows(inserted_tokens=[1, 1, 1], removed_context_tokens=[0, 0, 0])
    metrics = teacher_metrics(old_log_probs=old, teacher_log_probs=teacher_lp, response_mask=rows([1, 1], [1], [1]),
                              entropy=rows([0.1, 0.1], [0.1], [0.1]), texts=["r", "r", "r"], built=built,
                              task_types=["a", "a", "b"], real=[0, 1, 2], beta=1.0, gate="gap",
                              noisy=[False, True, None])
    assert metrics["sdar/noisy/false/gap_mean"] == pytest.approx(0.5)
    assert metrics["sdar/noisy/true/gap_mean"] == pytest.approx(-2.0)
    assert metrics["sdar/noisy/true/gate_mean"] == pytest.approx(1 / (1 + math.exp(2.0)))
    assert metrics["sdar/noisy/false/gate_mean"] == pytest.approx((1 / (1 + math.exp(-1.0)) + 0.5) / 2)
    assert metrics["sdar/task_type/a/gap_mean"] == pytest.approx(-1.0 / 3)
    assert metrics["sdar/task_type/b/gap_mean"] == 0.0
    unflagged = teacher_metrics(old_log_probs=old, teacher_log_probs=teacher_lp, response_mask=rows([1, 1], [1], [1]),
                                entropy=rows([0.1, 0.1], [0.1], [0.1]), texts=["r", "r", "r"], built=built,
                                task_types=[None] * 3, real=[0, 1, 2], beta=1.0, gate="gap")
    assert not any(k.startswith(("sdar/noisy/", "sdar/task_type/")) for k in unflagged)
