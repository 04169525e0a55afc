"""SDAR objectives against hand-computed values, autograd and verl's own aggregation."""

import math

import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

from verl_sdar import objectives as obj


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# Two rows, three token slots; row 1 has one padded slot (-inf / nan there on purpose).
S = [[-1.0, -2.0, -0.5], [-0.2, -1.5, float("-inf")]]
T = [[-0.5, -3.0, -0.5], [-1.2, -0.5, float("nan")]]
M = [[1, 1, 1], [1, 1, 0]]
ENT = [[0.3, 1.2, 0.0], [0.8, 0.1, 5.0]]


def tensors(requires_grad=True, dtype=torch.float64):
    s = torch.tensor(S, dtype=dtype, requires_grad=requires_grad)
    t = torch.tensor(T, dtype=dtype)
    m = torch.tensor(M, dtype=torch.bool)
    return s, t, m


def flat_valid(rows):
    return [rows[i][j] for i in range(2) for j in range(3) if M[i][j]]


GAPS = [t - s for s, t in zip(flat_valid(S), flat_valid(T), strict=True)]  # [0.5, -1.0, 0.0, -1.0, 1.0]


def hand_gate(kind, beta, gap, h):
    if kind == "gap":
        return sig(beta * gap)
    if kind == "entropy":
        return sig(beta * h)
    if kind == "soft_or":
        return sig(beta * (1 - (1 - h) * (1 - gap)))
    return 0.5


@pytest.mark.parametrize("kind", ["gap", "entropy", "soft_or", "constant"])
@pytest.mark.parametrize("beta", [0.0, 1.0, 5.0])
def test_sdar_loss_value_and_gradient_match_hand_computation(kind, beta):
    s, t, m = tensors()
    ent = torch.tensor(ENT, dtype=torch.float64)
    loss, metrics = obj.sdar_loss(s, t, m, beta=beta, gate=kind, entropy=ent)
    gates = [hand_gate(kind, beta, d, h) for d, h in zip(GAPS, flat_valid(ENT), strict=True)]
    n = len(GAPS)
    assert loss.item() == pytest.approx(sum(g * d for g, d in zip(gates, GAPS, strict=True)) / n, abs=1e-12)
    assert metrics["gate_mean"].item() == pytest.approx(sum(gates) / n, abs=1e-12)
    assert metrics["gate_active_ratio"].item() == pytest.approx(sum(g > 0.5 for g in gates) / n)
    assert metrics["gap_mean"].item() == pytest.approx(sum(GAPS) / n)
    mean = sum(GAPS) / n
    assert metrics["gap_std"].item() == pytest.approx(math.sqrt(sum((d - mean) ** 2 for d in GAPS) / n))
    loss.backward()
    # grad L = -Agg(g * grad s): -g/N on valid tokens, exactly 0 on the padded one.
    expected = iter(-g / n for g in gates)
    for i in range(2):
        for j in range(3):
            want = next(expected) if M[i][j] else 0.0
            assert s.grad[i, j].item() == pytest.approx(want, abs=1e-12)


def test_gate_is_detached_teacher_changes_value_but_gradient_only_through_gate():
    s, t, m = tensors()
    loss_a, _ = obj.sdar_loss(s, t, m, beta=5.0)
    (grad_a,) = torch.autograd.grad(loss_a, s)
    t_shift = t.clone()
    t_shift[0, 0] += 0.7  # teacher endorses token (0,0) more
    loss_b, _ = obj.sdar_loss(s, t_shift, m, beta=5.0)
    (grad_b,) = torch.autograd.grad(loss_b, s)
    assert loss_b.item() != pytest.approx(loss_a.item())
    n = len(GAPS)
    assert grad_b[0, 0].item() == pytest.approx(-sig(5.0 * (GAPS[0] + 0.7)) / n, abs=1e-12)
    # Other tokens: unchanged gradient.
    assert torch.allclose(grad_a[0, 1:], grad_b[0, 1:]) and torch.allclose(grad_a[1], grad_b[1])
    # A non-detached gate would add beta * Delta * g * (1 - g) (for d/ds: -beta*g*(1-g)*Delta); check it is absent.
    s2 = s.detach().clone().requires_grad_(True)
    gap = (t - s2).masked_fill(~m, 0.0)
    g_live = torch.sigmoid(5.0 * gap)
    undetached = (torch.where(m, g_live * gap, torch.zeros_like(gap))).sum() / n
    (grad_live,) = torch.autograd.grad(undetached, s2)
    assert not torch.allclose(grad_live, grad_a)


def test_beta_zero_gives_half_gate_everywhere_and_equals_constant_gate():
    s, t, m = tensors()
    loss0, metrics0 = obj.sdar_loss(s, t, m, beta=0.0, gate="gap")
    lossc, _ = obj.sdar_loss(s, t, m, beta=5.0, gate="constant")
    g = obj.compute_gate(torch.tensor([-3.0, 0.0, 2.0]), beta=0.0)
    assert torch.equal(g, torch.full((3,), 0.5))
    assert metrics0["gate_mean"].item() == 0.5 and metrics0["gate_active_ratio"].item() == 0.0
    assert loss0.item() == pytest.approx(lossc.item())


def test_masked_and_non_finite_inputs_never_contribute():
    s, t, m = tensors()
    loss, _ = obj.sdar_loss(s, t, m, beta=5.0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(s.grad).all() and s.grad[1, 2] == 0
    # Same result as with clean zeros in the padded slot.
    s_clean = torch.tensor(S, dtype=torch.float64).nan_to_num(neginf=0.0)
    t_clean = torch.tensor(T, dtype=torch.float64).nan_to_num(nan=0.0)
    clean, _ = obj.sdar_loss(s_clean, t_clean, m, beta=5.0)
    assert loss.item() == pytest.approx(clean.item())
    # -inf *inside* the mask (teacher gives the token zero probability): finite, gate 0 there.
    t_zero = torch.tensor(T, dtype=torch.float64)
    t_zero[0, 0] = float("-inf")
    s3 = torch.tensor(S, dtype=torch.float64, requires_grad=True)
    loss3, metrics3 = obj.sdar_loss(s3, t_zero, m, beta=5.0)
    loss3.backward()
    assert torch.isfinite(loss3) and torch.isfinite(s3.grad).all() and s3.grad[0, 0].item() == 0.0
    for fn in (obj.opsd_loss,):
        v, _ = fn(torch.tensor(S, requires_grad=True), torch.tensor(T), m)
        assert torch.isfinite(v)
    v, _ = obj.skill_sd_loss(torch.tensor(S, requires_grad=True), torch.tensor(T), torch.tensor(S), m)
    assert torch.isfinite(v)


def _hand_agg(values_rows, mode, width=3):
    rows = [[v for v, keep in zip(r, mr, strict=True) if keep] for r, mr in zip(values_rows, M, strict=True)]
    if mode == "token-mean":
        return sum(sum(r) for r in rows) / sum(len(r) for r in rows)
    if mode == "token-sum":
        return sum(sum(r) for r in rows)
    if mode == "seq-mean-token-sum":
        return sum(sum(r) for r in rows) / len(rows)
    if mode == "seq-mean-token-sum-norm":
        return sum(sum(r) for r in rows) / len(rows) / width
    if mode == "seq-mean-token-mean":
        return sum(sum(r) / len(r) for r in rows) / len(rows)
    raise AssertionError(mode)


@pytest.mark.parametrize("mode", obj.LOSS_AGG_MODES)
def test_aggregation_matches_hand_values_and_verl(mode):
    from verl.trainer.ppo.core_algos import agg_loss

    vals = [[1.0, 2.0, 3.0], [4.0, 5.0, 99.0]]
    v = torch.tensor(vals, dtype=torch.float64)
    m = torch.tensor(M, dtype=torch.bool)
    ours = obj.aggregate(v, m, mode)
    assert ours.item() == pytest.approx(_hand_agg(vals, mode))
    assert ours.item() == pytest.approx(agg_loss(v, m.to(v.dtype), mode).item())
    # Global normalisers, as verl passes them inside a data-parallel micro-batch.
    kwargs = dict(dp_size=2, batch_num_tokens=10, global_batch_size=4, loss_scale_factor=7)
    assert obj.aggregate(v, m, mode, **kwargs).item() == pytest.approx(
        agg_loss(v, m.to(v.dtype), mode, **kwargs).item()
    )


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean"])
def test_sdar_gradient_is_minus_agg_of_gate_times_grad_logp(mode):
    s, t, m = tensors()
    loss, _ = obj.sdar_loss(s, t, m, beta=5.0, loss_agg_mode=mode)
    (grad,) = torch.autograd.grad(loss, s)
    g = obj.compute_gate((t - s).detach().nan_to_num(0.0), beta=5.0)
    # -Agg(g * d log pi): Agg is linear, so the gradient is the gradient of -Agg(g * s).
    s2 = s.detach().clone().nan_to_num(neginf=0.0).requires_grad_(True)
    (want,) = torch.autograd.grad(-obj.aggregate(g * s2, m, mode), s2)
    assert torch.allclose(grad, want)


def test_gradcheck_in_double_precision():
    """Finite differences agree with autograd wherever no stop-gradient is involved.

    (With beta > 0 the SDAR gate is deliberately detached, so finite differences, which see the
    gate move, must *disagree*; that case is covered by the hand-gradient tests above.)
    """
    s, t, m = tensors()
    s = s.detach().nan_to_num(neginf=-1.0).requires_grad_(True)
    t = t.nan_to_num(nan=-1.0)
    old = s.detach() - 0.1
    assert torch.autograd.gradcheck(lambda x: obj.sdar_loss(x, t, m, gate="constant")[0], (s,))
    assert torch.autograd.gradcheck(lambda x: obj.skill_sd_loss(x, t, old, m)[0], (s,))
    for mode in obj.LOSS_AGG_MODES:
        assert torch.autograd.gradcheck(lambda x, mode=mode: obj.aggregate(x, m, mode), (s,))
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda x: obj.sdar_loss(x, t, m, beta=5.0)[0], (s,))


def test_rlsd_token_advantages_match_hand_values():
    s, t, m = tensors(requires_grad=False)
    adv = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, -2.0]], dtype=torch.float64)
    out = obj.rlsd_token_advantages(adv, s, t, m, mix=0.5, clip_eps=0.2)
    for (i, j), gap in zip([(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)], GAPS, strict=True):
        a = adv[i, j].item()
        w = min(max(math.exp(math.copysign(1.0, a) * gap), 0.8), 1.2)
        assert out[i, j].item() == pytest.approx(a * (0.5 + 0.5 * w))
    assert out[1, 2].item() == 0.0
    # mix = 0 gives the outcome advantage back.
    assert torch.allclose(obj.rlsd_token_advantages(adv, s, t, m, mix=0.0), adv * m)
    # Hand check of one entry: A=1, gap=0.5 -> clip(e^0.5)=1.2 -> 1*(0.5+0.6)=1.1
    assert out[0, 0].item() == pytest.approx(1.1)


def test_skill_sd_matches_hand_value_and_analytic_gradient():
    s = torch.tensor([[-1.0, -2.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[-0.5, -3.0]], dtype=torch.float64)
    old = torch.tensor([[-1.1, -1.9]], dtype=torch.float64)
    m = torch.ones(1, 2, dtype=torch.bool)
    loss, metrics = obj.skill_sd_loss(s, t, old, m)
    terms, grads = [], []
    for sv, tv, ov in [(-1.0, -0.5, -1.1), (-2.0, -3.0, -1.9)]:
        d = sv - tv
        k3 = math.exp(-d) - 1 + d
        rho = math.exp(sv - ov)
        terms.append(rho * k3)
        grads.append((rho * k3 + rho * (1 - math.exp(-d))) / 2)
    assert loss.item() == pytest.approx(sum(terms) / 2)
    loss.backward()
    assert s.grad[0].tolist() == pytest.approx(grads)
    assert metrics["k3_mean"].item() == pytest.approx(
        sum(math.exp(-(a - b)) - 1 + (a - b) for a, b in [(-1.0, -0.5), (-2.0, -3.0)]) / 2
    )


def test_opsd_value_is_reverse_kl_estimate_and_gradient_is_score_function():
    s, t, m = tensors()
    loss, metrics = obj.opsd_loss(s, t, m)
    n = len(GAPS)
    assert loss.item() == pytest.approx(sum(-d for d in GAPS) / n)
    loss.backward()
    expected = iter(-d / n for d in GAPS)
    for i in range(2):
        for j in range(3):
            assert s.grad[i, j].item() == pytest.approx(next(expected) if M[i][j] else 0.0)
    assert metrics["gap_mean"].item() == pytest.approx(sum(GAPS) / n)


# ------------------------------------------------------------------ Skill-SD: the reference's clamps


def test_skill_sd_is_finite_at_extreme_inputs():
    m = torch.ones(1, 3, dtype=torch.bool)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        # teacher endorses far more than the student (exp(99.9) = inf unclamped); ratio e^50; both at once
        s = torch.tensor([[-100.0, 0.0, -100.0]], dtype=dtype, requires_grad=True)
        t = torch.tensor([[-0.1, -1.0, -0.1]], dtype=dtype)
        old = torch.tensor([[-100.0, -50.0, -200.0]], dtype=dtype)
        loss, metrics = obj.skill_sd_loss(s, t, old, m)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(s.grad).all(), dtype
        assert all(torch.isfinite(v) for v in metrics.values()), dtype
    # at the clamps: k3 = e^20 - 1 + d (d = -99.9), rho = e^10; gradient through the unclamped parts only
    s = torch.tensor([[-100.0, 0.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[-0.1, -1.0]], dtype=torch.float64)
    old = torch.tensor([[-100.0, -50.0]], dtype=torch.float64)
    loss, _ = obj.skill_sd_loss(s, t, old, torch.ones(1, 2, dtype=torch.bool))
    k3_a, rho_a = math.exp(20.0) - 1 - 99.9, 1.0  # token a: k3 clamped, ratio e^0
    k3_b, rho_b = math.exp(-1.0) - 1 + 1.0, math.exp(10.0)  # token b: ratio clamped, k3 not
    assert loss.item() == pytest.approx((rho_a * k3_a + rho_b * k3_b) / 2, rel=1e-12)
    loss.backward()
    # d/ds (rho k3): token a: rho k3 (rho live) + rho * 1 (exp part constant); token b: rho * (1 - e^-d) (rho constant)
    want = [(rho_a * k3_a + rho_a) / 2, rho_b * (1 - math.exp(-1.0)) / 2]
    assert s.grad[0].tolist() == pytest.approx(want, rel=1e-12)


def test_skill_sd_is_finite_with_non_finite_values_masked_or_inside_the_mask():
    s = torch.tensor([[-1.0, float("-inf"), float("nan")]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[0.0, float("nan"), float("-inf")]], dtype=torch.float64)
    old = torch.tensor([[float("-inf"), -1.0, float("inf")]], dtype=torch.float64)
    m = torch.tensor([[1, 0, 0]], dtype=torch.bool)
    loss, _ = obj.skill_sd_loss(s, t, old, m)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all() and s.grad[0, 1:].tolist() == [0.0, 0.0]
    # -inf inside the mask (student or teacher gives the token zero probability): finite too
    s2 = torch.tensor([[float("-inf"), 0.0]], dtype=torch.float32, requires_grad=True)
    t2 = torch.tensor([[0.0, float("-inf")]], dtype=torch.float32)
    loss2, _ = obj.skill_sd_loss(s2, t2, torch.zeros(1, 2), torch.ones(1, 2, dtype=torch.bool))
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(s2.grad).all()


def test_skill_sd_clamps_leave_values_inside_their_range_unchanged():
    # d = s - t = -15 (exponent 15 < 20) and s - old = 9 (< 10): exactly the unclamped formula
    s = torch.tensor([[-15.5, -1.0]], dtype=torch.float64, requires_grad=True)
    t = torch.tensor([[-0.5, -0.2]], dtype=torch.float64)
    old = torch.tensor([[-16.0, -10.0]], dtype=torch.float64)
    loss, _ = obj.skill_sd_loss(s, t, old, torch.ones(1, 2, dtype=torch.bool))
    terms, grads = [], []
    for sv, tv, ov in [(-15.5, -0.5, -16.0), (-1.0, -0.2, -10.0)]:
        d, rho = sv - tv, math.exp(sv - ov)
        k3 = math.exp(-d) - 1 + d
        terms.append(rho * k3)
        grads.append((rho * k3 + rho * (1 - math.exp(-d))) / 2)
    assert loss.item() == pytest.approx(sum(terms) / 2, rel=1e-12)
    loss.backward()
    # rel 1e-9: the gradient of token 0 is a difference of terms ~ e^15 (rounding, not the clamp)
    assert s.grad[0].tolist() == pytest.approx(grads, rel=1e-9)


# ----------------------------------------------------- loss-form ablation: sdar.divergence


def hand_divergence(kind, gap):
    """(value phi, push weight u) of the gated term per divergence, from the formulas in the docs."""
    if kind == "reverse_kl":
        return gap, 1.0
    if kind == "forward_kl":
        r = math.exp(min(gap, obj.MAX_LOG_RATIO))  # the ratio is clamped at e^10
        return r - 1, r
    r = math.exp(gap)  # jsd: no clamp (computed with softplus / sigmoid, finite for any gap)
    return 0.5 * (math.log(1 + r) - math.log(2)), 0.5 * r / (1 + r)


@pytest.mark.parametrize("divergence", obj.DIVERGENCES)
@pytest.mark.parametrize("kind", ["gap", "constant"])
def test_divergence_value_and_gradient_match_hand_computation(divergence, kind):
    s, t, m = tensors()
    loss, metrics = obj.sdar_loss(s, t, m, beta=5.0, gate=kind, divergence=divergence)
    gates = [hand_gate(kind, 5.0, d, None) for d in GAPS]
    forms = [hand_divergence(divergence, d) for d in GAPS]
    n = len(GAPS)
    assert loss.item() == pytest.approx(sum(g * phi for g, (phi, _) in zip(gates, forms, strict=True)) / n, abs=1e-12)
    assert metrics["gate_mean"].item() == pytest.approx(sum(gates) / n, abs=1e-12)
    loss.backward()
    # grad L = -Agg(g * u * grad s); exactly 0 on the padded slot (which holds -inf / nan)
    expected = iter(-g * u / n for g, (_, u) in zip(gates, forms, strict=True))
    for i in range(2):
        for j in range(3):
            assert s.grad[i, j].item() == pytest.approx(next(expected) if M[i][j] else 0.0, abs=1e-12)


def test_divergence_hand_values_spelled_out():
    """Gaps [0.5, -1, 0, -1, 1], constant gate 0.5, token-mean over 5 tokens."""
    e = math.e
    fkl, _ = obj.sdar_loss(*tensors(), gate="constant", divergence="forward_kl")
    assert fkl.item() == pytest.approx(0.5 * ((e**0.5 - 1) + 2 * (1 / e - 1) + 0 + (e - 1)) / 5, abs=1e-12)
    jsd, _ = obj.sdar_loss(*tensors(), gate="constant", divergence="jsd")
    half_log = [0.5 * math.log((1 + e**d) / 2) for d in (0.5, -1.0, 0.0, -1.0, 1.0)]
    assert jsd.item() == pytest.approx(0.5 * sum(half_log) / 5, abs=1e-12)
    s, t, m = tensors()
    obj.sdar_loss(s, t, m, gate="constant", divergence="jsd")[0].backward()
    # token (0, 2): gap 0 -> u = sigmoid(0) / 2 = 1/4, gradient -0.5 * 1/4 / 5
    assert s.grad[0, 2].item() == pytest.approx(-0.025, abs=1e-15)


def test_reverse_kl_is_bit_identical_to_the_sdar_term():
    for kind in ("gap", "constant", "soft_or"):
        ent = torch.tensor(ENT, dtype=torch.float64)
        s1, t, m = tensors()
        s2, _, _ = tensors()
        base, base_metrics = obj.sdar_loss(s1, t, m, beta=5.0, gate=kind, entropy=ent)
        rkl, rkl_metrics = obj.sdar_loss(s2, t, m, beta=5.0, gate=kind, entropy=ent, divergence="reverse_kl")
        assert torch.equal(base, rkl)
        assert all(torch.equal(base_metrics[k], rkl_metrics[k]) for k in base_metrics)
        base.backward()
        rkl.backward()
        assert torch.equal(s1.grad, s2.grad)
    # ... and to the formula Agg(g * (t - s)) written out
    s, t, m = tensors(dtype=torch.float32)
    loss, _ = obj.sdar_loss(s, t, m, divergence="reverse_kl")
    sc = torch.where(m, s.detach().nan_to_num(neginf=obj.MIN_LOG_PROB), torch.zeros_like(s))
    tc = torch.where(m, t.nan_to_num(nan=0.0), torch.zeros_like(t))
    g = torch.sigmoid(5.0 * (tc - sc))
    assert torch.equal(loss.detach(), obj.aggregate(g * (tc - sc), m))


def test_divergence_gradcheck_in_double_precision():
    """Value and gradient agree (finite differences) whenever the gate does not move with s.

    The value ``g * phi(Delta)`` has derivative ``-g * phi'(Delta) = -g * u``, the gradient the
    surrogate gives; with the gap gate (which moves with s but is detached) they must disagree.
    """
    s, t, m = tensors()
    s = s.detach().nan_to_num(neginf=-1.0).requires_grad_(True)
    t = t.nan_to_num(nan=-1.0)
    ent = torch.tensor(ENT, dtype=torch.float64)
    for divergence in obj.DIVERGENCES:
        for mode in obj.LOSS_AGG_MODES:
            for gate in ("constant", "entropy"):

                def f(x, divergence=divergence, mode=mode, gate=gate):
                    return obj.sdar_loss(x, t, m, gate=gate, entropy=ent, divergence=divergence, loss_agg_mode=mode)[0]

                assert torch.autograd.gradcheck(f, (s,)), (divergence, mode, gate)
        with pytest.raises(GradcheckError):
            torch.autograd.gradcheck(lambda x, d=divergence: obj.sdar_loss(x, t, m, beta=5.0, divergence=d)[0], (s,))


@pytest.mark.parametrize("divergence", obj.DIVERGENCES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_divergence_is_finite_at_extreme_inputs(divergence, dtype):
    # the teacher endorses a token far more / far less than the student; -inf and nan inside and outside the mask
    s = torch.tensor([[-100.0, -0.1, float("-inf"), 0.0], [-1.0, float("nan"), float("-inf"), -3.0]], dtype=dtype)
    t = torch.tensor([[-0.1, -100.0, 0.0, float("-inf")], [float("nan"), -1.0, -2.0, -1.0]], dtype=dtype)
    m = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)
    s.requires_grad_(True)
    loss, metrics = obj.sdar_loss(s, t, m, beta=5.0, divergence=divergence)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    assert all(torch.isfinite(v) for v in metrics.values())
    assert s.grad[1, :3].tolist() == [0.0, 0.0, 0.0]
    if divergence == "forward_kl" and dtype == torch.float64:
        # gap 99.9 -> r clamped at e^10; gate sigmoid(5 * 99.9) = 1: gradient -e^10 / 5 tokens
        assert s.grad[0, 0].item() == pytest.approx(-math.exp(obj.MAX_LOG_RATIO) / 5)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: obj.compute_gate(torch.zeros(2), beta=1.0, gate="nope"), "unknown gate"),
        (lambda: obj.compute_gate(torch.zeros(2), beta=-1.0), "beta must be >= 0"),
        (lambda: obj.compute_gate(torch.zeros(2), beta=1.0, gate="entropy"), "needs the per-token entropy"),
        (lambda: obj.aggregate(torch.zeros(1, 2), torch.ones(1, 2), "mean"), "unknown loss_agg_mode"),
        (lambda: obj.sdar_loss(torch.zeros(2, 3), torch.zeros(2, 2), torch.ones(2, 3)), "shape mismatch"),
        (lambda: obj.rlsd_token_advantages(*(torch.zeros(1, 1),) * 4, mix=2.0), "mix must be in"),
        (lambda: obj.sdar_loss(*(torch.zeros(1, 2),) * 2, torch.ones(1, 2), divergence="kl"), "unknown divergence"),
    ],
)
def test_bad_arguments_raise_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def _turn_row_grpo(scores, groups, norm_by_std=True):
    """verl-sdar's turn-row GRPO through verl's own registry (one token per row holds the score)."""
    import numpy as np
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    import verl_sdar.advantages  # noqa: F401  (registers the estimator)

    if len(groups) != scores.numel():
        raise ValueError(f"need one score per row: {tuple(scores.shape)} scores, {len(groups)} group ids")
    fn = get_adv_estimator_fn("turn_row_grpo")
    rewards = torch.stack([torch.zeros_like(scores), scores], dim=1)
    adv, _ = fn(token_level_rewards=rewards, response_mask=torch.ones_like(rewards),
                index=np.array(groups, dtype=object), config={"norm_adv_by_std_in_grpo": norm_by_std})
    return adv[:, 1]


def test_turn_row_grpo_advantages_match_hand_values():
    # group a: 3 turn rows of a won episode (10) and 2 of a lost one with one invalid turn (-0.1)
    scores = torch.tensor([10.0, 10.0, 10.0, 0.0, -0.1, 5.0])
    groups = ["a", "a", "a", "a", "a", "b"]
    adv = _turn_row_grpo(scores, groups)
    a = [10.0, 10.0, 10.0, 0.0, -0.1]
    mean = sum(a) / 5
    std = math.sqrt(sum((x - mean) ** 2 for x in a) / 4)
    for i in range(5):
        assert adv[i].item() == pytest.approx((a[i] - mean) / (std + 1e-6), rel=1e-5)
    assert adv[5].item() == pytest.approx(5.0 / (1 + 1e-6))  # single-row group: mean 0, std 1
    plain = _turn_row_grpo(scores, groups, norm_by_std=False)
    assert plain[3].item() == pytest.approx(0.0 - mean, rel=1e-5)
    with pytest.raises(ValueError, match="one score per row"):
        _turn_row_grpo(scores, groups[:-1])
