"""SDAR objectives and the baselines it is compared with. Pure torch: no verl import.

Notation (per response token ``t`` of one row, on the token the student sampled):

* ``s_t``  student log-prob ``log pi_theta(y_t | x, y_<t)`` (carries the gradient)
* ``t_t``  teacher log-prob ``log pi(y_t | x, c+, y_<t)`` (same policy, privileged context ``c+``; no grad)
* ``Delta_t = t_t - s_t`` the teacher-student gap, always detached. It is the single-sample
  estimate of minus the reverse KL(pi_student || pi_teacher) at that position.

Every loss here takes a ``response_mask`` (1 on tokens that count) and an aggregation mode
that behaves exactly like ``verl.trainer.ppo.core_algos.agg_loss`` (same names, same global
normalisers), so a term added to verl's PPO loss is normalised the same way as the PPO loss.

Masked positions never contribute, whatever they hold (-inf and NaN included): they are replaced
by zeros before any arithmetic, so neither the value nor the gradient can become NaN through
them. A response token whose *teacher* log-prob is not finite (-inf, +inf or NaN: a broken
teacher pass, or a token the teacher gives zero probability) is masked out of every term that
reads the teacher (:func:`teacher_mask`): it contributes exactly 0 to the value and the
gradient, while the aggregation's normalisers stay those of ``response_mask`` (as verl's global
token counts do), so one bad token changes no other token's weight. RLSD keeps the plain
outcome advantage there. Inside the mask, student and old log-probs are clamped from below at
``MIN_LOG_PROB`` (so are finite teacher log-probs below it). Every ``exp`` of a log-ratio is
clamped from above (``MAX_LOG_RATIO``, ``MAX_K3_EXPONENT``), so no term can overflow.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "DIVERGENCES",
    "GATES",
    "LOSS_AGG_MODES",
    "MAX_K3_EXPONENT",
    "MAX_LOG_RATIO",
    "MIN_LOG_PROB",
    "aggregate",
    "compute_gate",
    "gap_statistics",
    "opsd_loss",
    "rlsd_token_advantages",
    "sdar_loss",
    "skill_sd_loss",
    "teacher_mask",
]

GATES = ("gap", "entropy", "soft_or", "constant")
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")
MIN_LOG_PROB = -1.0e4
#: divergences of the gated term (``sdar.divergence``); ``reverse_kl`` is SDAR's own term.
DIVERGENCES = ("reverse_kl", "jsd", "forward_kl")
#: importance ratios are ``exp(min(log_ratio, MAX_LOG_RATIO))`` (Skill-SD's reference clamp, <= e^10).
MAX_LOG_RATIO = 10.0
#: Skill-SD's k3 uses ``exp(min(-(s - t), MAX_K3_EXPONENT))`` (the reference's clamp, <= e^20).
MAX_K3_EXPONENT = 20.0

Metrics = dict[str, torch.Tensor]


def _clean(log_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero outside the mask; clamp -inf (and below MIN_LOG_PROB) inside it. Keeps the gradient."""
    inside = torch.clamp(torch.nan_to_num(log_probs, nan=0.0, neginf=MIN_LOG_PROB), min=MIN_LOG_PROB)
    return torch.where(mask, inside, torch.zeros_like(log_probs))


def teacher_mask(teacher_log_probs: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """The response tokens whose teacher log-prob is finite: ``response_mask & isfinite(teacher)``
    (bool). Tokens outside it are masked out of every teacher-reading term."""
    return response_mask.bool() & torch.isfinite(teacher_log_probs.detach())


def _check(mask: torch.Tensor, *tensors: torch.Tensor | None) -> torch.Tensor:
    for t in tensors:
        if t is not None and t.shape != mask.shape:
            raise ValueError(f"shape mismatch: expected {tuple(mask.shape)} like response_mask, got {tuple(t.shape)}")
    return mask.bool()


def aggregate(
    values: torch.Tensor,
    mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    *,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
    global_batch_size: int | None = None,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Reduce a (batch, tokens) matrix to a scalar; same modes and normalisers as verl's ``agg_loss``.

    With ``m`` the mask, ``T`` = ``batch_num_tokens`` (default: sum m), ``B`` = ``global_batch_size``
    (default: rows with any token), ``d`` = ``dp_size``:

    * ``token-mean``:              d * sum(v m) / T
    * ``token-sum``:               d * sum(v m)
    * ``seq-mean-token-sum``:      d * sum_rows(sum_t v m) / B
    * ``seq-mean-token-sum-norm``: the above / ``loss_scale_factor`` (default: the row width)
    * ``seq-mean-token-mean``:     d * sum_rows(sum_t v m / sum_t m) / B
    """
    mask = _check(mask, values)
    v = torch.where(mask, values, torch.zeros_like(values))
    m = mask.to(v.dtype)
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("batch_num_tokens (global) is required when dp_size > 1")
            batch_num_tokens = m.sum()
        return v.sum() / batch_num_tokens * dp_size
    if loss_agg_mode == "token-sum":
        return v.sum() * dp_size
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"):
        tokens_per_row = m.sum(dim=-1)
        row_has_tokens = (tokens_per_row > 0).to(v.dtype)
        row_values = v.sum(dim=-1)
        if loss_agg_mode == "seq-mean-token-mean":
            row_values = row_values / (tokens_per_row + 1e-8)
        if global_batch_size is None:
            if dp_size > 1:
                raise ValueError("global_batch_size is required when dp_size > 1")
            global_batch_size = row_has_tokens.sum()
        loss = (row_values * row_has_tokens).sum() / global_batch_size * dp_size
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_scale_factor if loss_scale_factor is not None else mask.shape[-1])
        return loss
    raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}; expected one of {LOSS_AGG_MODES}")


def compute_gate(
    gap: torch.Tensor, *, beta: float, gate: str = "gap", entropy: torch.Tensor | None = None
) -> torch.Tensor:
    """Per-token gate in (0, 1), always detached.

    * ``gap``:      g = sigmoid(beta * Delta)
    * ``entropy``:  g = sigmoid(beta * h)                       (h: student entropy at the token)
    * ``soft_or``:  g = sigmoid(beta * (1 - (1 - h) (1 - Delta)))
    * ``constant``: g = 0.5 (naive GRPO+OPSD; equals ``gap`` with beta = 0)
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    gap = gap.detach()
    if gate == "gap":
        g = torch.sigmoid(beta * gap)
    elif gate == "constant":
        g = torch.full_like(gap, 0.5)
    elif gate in ("entropy", "soft_or"):
        if entropy is None:
            raise ValueError(f"gate {gate!r} needs the per-token entropy")
        h = entropy.detach()
        g = torch.sigmoid(beta * h) if gate == "entropy" else torch.sigmoid(beta * (1 - (1 - h) * (1 - gap)))
    else:
        raise ValueError(f"unknown gate {gate!r}; expected one of {GATES}")
    return g.detach()


def _masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    n = mask.sum().clamp(min=1)
    xm = torch.where(mask, x, torch.zeros_like(x))
    mean = xm.sum() / n
    var = torch.where(mask, (x - mean) ** 2, torch.zeros_like(x)).sum() / n
    return mean, var.sqrt()


def gap_statistics(gap: torch.Tensor, gate: torch.Tensor, mask: torch.Tensor) -> Metrics:
    """Token-level statistics over the mask: gate mean, gate-active ratio (g > 0.5), gap mean/std."""
    mask = _check(mask, gap, gate)
    gap_mean, gap_std = _masked_mean_std(gap.detach(), mask)
    gate_mean, _ = _masked_mean_std(gate.detach(), mask)
    active, _ = _masked_mean_std((gate.detach() > 0.5).to(gap.dtype), mask)
    return {"gate_mean": gate_mean, "gate_active_ratio": active, "gap_mean": gap_mean, "gap_std": gap_std}


def _divergence_form(divergence: str, gap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token value ``phi_D(Delta)`` and push weight ``u_D = phi_D'(Delta)`` of a non-reverse divergence.

    Both are functions of the detached gap only (see :func:`sdar_loss` for the derivation).
    """
    if divergence == "forward_kl":
        r = torch.exp(torch.clamp(gap, max=MAX_LOG_RATIO))
        return r - 1, r
    if divergence == "jsd":
        return 0.5 * (torch.nn.functional.softplus(gap) - math.log(2.0)), 0.5 * torch.sigmoid(gap)
    raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")


def sdar_loss(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    beta: float = 5.0,
    gate: str = "gap",
    entropy: torch.Tensor | None = None,
    divergence: str = "reverse_kl",
    loss_agg_mode: str = "token-mean",
    **agg_kwargs,
) -> tuple[torch.Tensor, Metrics]:
    """Gated self-distillation term of SDAR, with the divergence it is built on as a choice.

        g_t = gate(Delta_t)        (detached, see ``compute_gate``)
        l_t = g_t * (t_t - s_t)    (gradient only through s_t)
        L   = Agg(l_t)

    so ``grad L = -Agg(g_t * grad s_t)``: a likelihood push on the student's own tokens, strong
    where the teacher endorses the token more than the student does, weak where it rejects it.
    That is ``divergence="reverse_kl"`` (the default, SDAR's own term, computed exactly as above).

    ``jsd`` and ``forward_kl`` (loss-form ablation) are **our construction**: the reference code has
    no such variants. Only the sampled token's log-probs exist, so each variant is a sampled-token
    surrogate with the same detached gate. Derivation: with ``r = q/p`` (teacher over student
    probability, on the sampled token ``r_t = exp(Delta_t)``), each divergence is an f-divergence
    ``D(p || q) = E_{y~p}[f(r)]`` and its gradient is ``E_{y~p}[psi(r) grad log p]`` with
    ``psi = f - r f'``. The gated term replaces ``psi(r)`` by its (negated) sensitivity to the gap,
    ``u(r) = -d psi / d log r = r^2 f''(r)``, so every variant is a gated likelihood push
    ``grad l_t = -g_t * u_t * grad s_t`` with value ``l_t = g_t * phi(Delta_t)``, ``phi' = u``,
    ``phi(0) = 0``:

    * ``reverse_kl``, KL(p || q):  f = -log r            u = 1               phi = Delta
      (exactly SDAR's term; the score-function weight itself would be ``1 - Delta``)
    * ``forward_kl``, KL(q || p):  f = r log r           u = r               phi = r - 1
      (``-g_t r_t grad s_t`` is the gated importance-weighted single-sample estimate of
      ``grad KL(q || p) = -E_{y~q}[grad log p] = -E_{y~p}[r grad log p]``)
    * ``jsd``, JS(p, q) with M = (p + q) / 2:  u = r / (2 (1 + r)) = sigmoid(Delta) / 2,
      phi = (log(1 + r) - log 2) / 2 (``-g_t u_t grad s_t`` is the importance-weighted estimate
      of the gradient of JSD's teacher-side half ``KL(q || M) / 2``; JSD's curvature at r = 1 is
      1/4 of KL's, so at equal ``coef`` it pushes 4x less near agreement)

    ``r_t`` is detached and, for ``forward_kl``, clamped at ``exp(MAX_LOG_RATIO)`` (as Skill-SD's
    reference clamps its ratio) so the term stays finite; ``jsd`` is computed from ``Delta_t`` with
    ``softplus``/``sigmoid`` and is finite without a clamp (its weight is below 1/2). Implemented as
    ``l_t = g_t * (phi_t + u_t * (sg(s_t) - s_t))``: value ``g_t * phi_t``, gradient
    ``-g_t * u_t * grad s_t``.

    Tokens whose teacher log-prob is not finite contribute 0 (value and gradient; module docstring).

    Returns the loss and metrics (gate mean, gate-active ratio, gap mean/std over the tokens with a
    finite teacher log-prob, loss), all detached.
    """
    mask = _check(response_mask, student_log_probs, teacher_log_probs, entropy)
    if divergence not in DIVERGENCES:
        raise ValueError(f"unknown divergence {divergence!r}; expected one of {DIVERGENCES}")
    finite = teacher_mask(teacher_log_probs, mask)
    s = _clean(student_log_probs, mask)
    t = _clean(teacher_log_probs.detach(), finite)
    gap = torch.where(finite, t - s, torch.zeros_like(s)).detach()
    g = compute_gate(gap, beta=beta, gate=gate, entropy=entropy)
    if divergence == "reverse_kl":
        per_token = g * (t - s)
    else:
        value, weight = _divergence_form(divergence, gap)
        per_token = g * (value + weight * (s.detach() - s))
    per_token = torch.where(finite, per_token, torch.zeros_like(per_token))
    loss = aggregate(per_token, mask, loss_agg_mode, **agg_kwargs)
    metrics = gap_statistics(gap, g, finite)
    metrics["loss"] = loss.detach()
    return loss, metrics


def opsd_loss(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs,
) -> tuple[torch.Tensor, Metrics]:
    """Reverse-KL self-distillation, score-function form (objective ``opsd_rkl``: ours, not the paper's OPSD).

        k_t = s_t - t_t = -Delta_t            (value: per-token reverse-KL estimate)
        grad l_t = k_t * grad s_t             (REINFORCE form of grad KL(pi_s || pi_t))

    implemented as ``l_t = k_t + sg(k_t) * (s_t - sg(s_t))`` so the value is the KL estimate and
    the gradient is the score-function estimate. Tokens whose teacher log-prob is not finite
    contribute 0.
    """
    mask = _check(response_mask, student_log_probs, teacher_log_probs)
    finite = teacher_mask(teacher_log_probs, mask)
    s = _clean(student_log_probs, mask)
    t = _clean(teacher_log_probs.detach(), finite)
    k = torch.where(finite, s - t, torch.zeros_like(s)).detach()
    per_token = torch.where(finite, k + k * (s - s.detach()), torch.zeros_like(s))
    loss = aggregate(per_token, mask, loss_agg_mode, **agg_kwargs)
    metrics = gap_statistics(-k, torch.full_like(k, 1.0), finite)
    metrics.pop("gate_mean")
    metrics.pop("gate_active_ratio")
    metrics["loss"] = loss.detach()
    return loss, metrics


def rlsd_token_advantages(
    advantages: torch.Tensor,
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    mix: float = 0.5,
    clip_eps: float = 0.2,
) -> torch.Tensor:
    """RLSD token advantages (baseline): the outcome advantage reweighted by the teacher's verdict.

        A_t = A * ((1 - l) + l * clip(exp(sign(A) * Delta_t), 1 - eps, 1 + eps))

    with ``l = mix`` and ``eps = clip_eps``. Masked positions get 0. A token whose teacher log-prob
    is not finite keeps the outcome advantage ``A`` (no teacher reweighting). No gradient flows.
    """
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"mix must be in [0, 1], got {mix}")
    if clip_eps < 0:
        raise ValueError(f"clip_eps must be >= 0, got {clip_eps}")
    mask = _check(response_mask, advantages, student_log_probs, teacher_log_probs)
    finite = teacher_mask(teacher_log_probs, mask)
    s = _clean(student_log_probs.detach(), mask)
    t = _clean(teacher_log_probs.detach(), finite)
    a = torch.where(mask, advantages.detach(), torch.zeros_like(advantages))
    weight = torch.clamp(torch.exp(torch.sign(a) * (t - s)), 1 - clip_eps, 1 + clip_eps)
    weight = torch.where(finite, weight, torch.ones_like(weight))
    return torch.where(mask, a * ((1 - mix) + mix * weight), torch.zeros_like(a))


def skill_sd_loss(
    student_log_probs: torch.Tensor,
    teacher_log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    loss_agg_mode: str = "token-mean",
    **agg_kwargs,
) -> tuple[torch.Tensor, Metrics]:
    """Skill-SD distillation term (baseline): importance-weighted k3 estimate of KL to the teacher.

        d_t   = s_t - t_t
        k3_t  = exp(min(-d_t, 20)) - 1 + d_t
        rho_t = exp(min(s_t - old_t, 10))
        L     = Agg(rho_t * k3_t)

    The two clamps are the reference implementation's (``-(s - t) <= 20`` inside k3, log ratio
    ``s - old <= 10``; ``MAX_K3_EXPONENT``, ``MAX_LOG_RATIO``): without them a token the teacher
    endorses far more than the student (s = -100, t = -0.1) gives exp(99.9) = inf. Inside the
    clamps value and gradient are the unclamped formula's; where a clamp binds, that factor's
    exponential is constant (no gradient through it), so value and gradient stay finite.
    The gradient flows through ``s_t`` in both factors; teacher and old log-probs are constants.
    Tokens whose teacher log-prob is not finite contribute 0.
    """
    mask = _check(response_mask, student_log_probs, teacher_log_probs, old_log_probs)
    finite = teacher_mask(teacher_log_probs, mask)
    s = _clean(student_log_probs, mask)
    t = _clean(teacher_log_probs.detach(), finite)
    old = _clean(old_log_probs.detach(), mask)
    d = torch.where(finite, s - t, torch.zeros_like(s))
    k3 = torch.exp(torch.clamp(-d, max=MAX_K3_EXPONENT)) - 1 + d
    rho = torch.exp(torch.clamp(s - old, max=MAX_LOG_RATIO))
    per_token = torch.where(finite, rho * k3, torch.zeros_like(s))
    loss = aggregate(per_token, mask, loss_agg_mode, **agg_kwargs)
    k3_mean, _ = _masked_mean_std(k3.detach(), finite)
    gap_mean, gap_std = _masked_mean_std(-d.detach(), finite)
    return loss, {"k3_mean": k3_mean, "gap_mean": gap_mean, "gap_std": gap_std, "loss": loss.detach()}
