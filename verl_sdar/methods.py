"""The registry of methods: one entry per ``algorithm=<name>`` choice. Pure torch: no verl import.

A method is what a user selects on the command line (``algorithm=sdar``, ``algorithm=grpo_opsd``,
...). Each entry says everything the rest of the plugin needs to know about it:

* ``objective``: the value of ``sdar.objective`` it sets; the behaviour below belongs to the
  objective, so two methods can share one (``sdar`` and ``grpo_opsd`` differ only in the gate);
  two objectives can share a loss term (``sdar`` and ``opsd`` add the same gated term; ``opsd``
  also zeroes the outcome advantages);
* ``defaults``: the ``sdar.*`` values its algorithm YAML sets (checked against the YAML by a test);
* ``summary``: one line for the docs (checked against ``docs/method.md`` by a test).

An :class:`Objective` holds the behaviour: whether the teacher pass runs, which row fields its
loss term reads, the loss term added to verl's PPO loss (``None``: verl's loss as is), and the
advantage transform applied after verl's advantage step (``None``: verl's advantages as is).
The loss (``verl_sdar.loss``), the trainer and the config validation read these entries; nothing
else compares method or objective names.

To add a method: write its loss term or advantage transform with the signatures below (pure
torch, a formula in the docstring), add an :class:`Objective` if it behaves differently from the
existing ones, register a :class:`Method`, and add its algorithm YAML, a docs row and, for one of
the paper's methods (``paper=True``), a recipe (``tests/test_methods.py`` fails until they exist).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable

import torch

from .objectives import opsd_loss, rlsd_token_advantages, sdar_loss, skill_sd_loss

Metrics = dict[str, torch.Tensor]
#: ``term(student_log_probs, rows, response_mask, sdar, agg) -> (loss, metrics)``; ``rows`` holds
#: the padded row fields the objective lists (``teacher_log_probs``, ...), ``agg`` the keyword
#: arguments of :func:`verl_sdar.objectives.aggregate` (mode and global normalisers).
LossTerm = Callable[[torch.Tensor, dict, torch.Tensor, Any, dict], "tuple[torch.Tensor, Metrics]"]
#: ``transform(advantages, rows, response_mask, sdar, global_step) -> (advantages, metrics)``.
AdvantageTransform = Callable[[torch.Tensor, dict, torch.Tensor, Any, int], "tuple[torch.Tensor, dict[str, float]]"]

ENTROPY_GATES = ("entropy", "soft_or")


@dataclass(frozen=True)
class Objective:
    """The behaviour behind ``sdar.objective``.

    Attributes:
        name: the ``sdar.objective`` value.
        needs_teacher: whether the teacher log-prob pass runs each step.
        loss_fields: row fields the loss term reads besides ``response_mask`` (the trainer stores them).
        uses_gate: whether ``sdar.gate`` applies (an entropy gate then also reads ``entropy``).
        loss_term: the term added to verl's PPO loss as ``ppo_loss + sdar.coef * term``; None: none.
        advantage_fields: row fields the advantage transform reads besides ``advantages``/``response_mask``.
        transform_advantages: applied to verl's advantages after its advantage step; None: none.
    """

    name: str
    needs_teacher: bool
    loss_fields: tuple[str, ...] = ()
    uses_gate: bool = False
    loss_term: LossTerm | None = None
    advantage_fields: tuple[str, ...] = ()
    transform_advantages: AdvantageTransform | None = None

    def row_fields(self, sdar) -> tuple[str, ...]:
        """Row fields the actor loss needs for these settings."""
        fields = list(self.loss_fields)
        if self.uses_gate and sdar.gate in ENTROPY_GATES:
            fields.append("entropy")
        return tuple(fields)


@dataclass(frozen=True)
class Method:
    """One ``algorithm=<name>`` choice.

    Attributes:
        name: the algorithm group option (``verl_sdar/config/algorithm/<name>.yaml``).
        objective: the ``sdar.objective`` it sets (a key of ``OBJECTIVES``).
        summary: one line for the docs.
        defaults: the ``sdar.*`` values its YAML sets, flattened (``{"coef": 0.01, ...}``).
        paper: whether it is one of the paper's methods (``False``: a variant of ours).
    """

    name: str
    objective: str
    summary: str
    defaults: dict = field(default_factory=dict)
    paper: bool = True


# ----------------------------------------------------------------------------- loss terms
def _sdar_term(student, rows, mask, sdar, agg):
    entropy = rows["entropy"].to(student.dtype) if "entropy" in rows else None
    teacher = rows["teacher_log_probs"].to(student.dtype)
    return sdar_loss(
        student, teacher, mask, beta=sdar.beta, gate=sdar.gate, entropy=entropy, divergence=sdar.divergence, **agg
    )


def _opsd_rkl_term(student, rows, mask, sdar, agg):
    return opsd_loss(student, rows["teacher_log_probs"].to(student.dtype), mask, **agg)


def _skill_sd_term(student, rows, mask, sdar, agg):
    teacher = rows["teacher_log_probs"].to(student.dtype)
    return skill_sd_loss(student, teacher, rows["old_log_probs"].to(student.dtype), mask, **agg)


# ---------------------------------------------------------------------- advantage transforms
def _zero_advantages(advantages, rows, mask, sdar, step):
    """OPSD trains without the outcome: the advantages are zeroed (= policy-gradient coefficient 0).

    With A = 0 verl's vanilla PPO loss is ``max(-0 * ratio, -0 * clip(ratio)) = 0`` per token (the
    ratio is finite: verl clamps its log at +-20), so its value and gradient are exactly 0, while
    verl's KL-to-reference loss and entropy bonus, added separately in ``ppo_loss``, still apply.
    """
    return torch.zeros_like(advantages), {}


def _rlsd_advantages(advantages, rows, mask, sdar, step):
    mix = sdar.rlsd.mix_at(step)
    out = rlsd_token_advantages(
        advantages, rows["old_log_probs"], rows["teacher_log_probs"], mask, mix=mix, clip_eps=sdar.rlsd.clip_eps
    )
    return out, {"sdar/rlsd_mix": mix}


OBJECTIVES: dict[str, Objective] = {}
METHODS: dict[str, Method] = {}


def register_objective(objective: Objective) -> Objective:
    if objective.name in OBJECTIVES:
        raise ValueError(f"objective {objective.name!r} is already registered")
    OBJECTIVES[objective.name] = objective
    return objective


def register_method(method: Method) -> Method:
    if method.name in METHODS:
        raise ValueError(f"method {method.name!r} is already registered")
    if method.objective not in OBJECTIVES:
        raise ValueError(f"method {method.name!r}: unknown objective {method.objective!r}")
    METHODS[method.name] = method
    return method


register_objective(Objective("none", needs_teacher=False))
register_objective(
    Objective("sdar", needs_teacher=True, loss_fields=("teacher_log_probs",), uses_gate=True, loss_term=_sdar_term)
)
register_objective(
    Objective(
        "opsd",
        needs_teacher=True,
        loss_fields=("teacher_log_probs",),
        uses_gate=True,
        loss_term=_sdar_term,
        transform_advantages=_zero_advantages,
    )
)
register_objective(
    Objective(
        "opsd_rkl",
        needs_teacher=True,
        loss_fields=("teacher_log_probs",),
        loss_term=_opsd_rkl_term,
        transform_advantages=_zero_advantages,
    )
)
register_objective(
    Objective(
        "rlsd",
        needs_teacher=True,
        advantage_fields=("old_log_probs", "teacher_log_probs"),
        transform_advantages=_rlsd_advantages,
    )
)
register_objective(
    Objective(
        "skill_sd", needs_teacher=True, loss_fields=("teacher_log_probs", "old_log_probs"), loss_term=_skill_sd_term
    )
)

register_method(
    Method("grpo", "none", "GRPO baseline: verl's PPO loss with group-normalised outcome advantages; no teacher pass.")
)
register_method(
    Method(
        "sdar",
        "sdar",
        "SDAR: GRPO + coef * Agg(g_t * (t_t - s_t)), g_t = sigmoid(beta * Delta_t) detached.",
        defaults={"coef": 0.01, "beta": 5.0, "gate": "gap"},
    )
)
register_method(
    Method(
        "grpo_opsd",
        "sdar",
        "Naive GRPO+OPSD: the SDAR term with a constant gate 0.5 (= beta 0).",
        defaults={"coef": 0.01, "beta": 0.0, "gate": "constant"},
    )
)
register_method(
    Method(
        "opsd",
        "opsd",
        "OPSD (the paper's baseline): the SDAR gated term alone, coef 0.01, beta 5; outcome advantages zeroed "
        "(policy-gradient coefficient 0); KL to the reference and an entropy bonus 0.001 kept.",
        defaults={"coef": 0.01, "beta": 5.0, "gate": "gap"},
    )
)
register_method(
    Method(
        "opsd_rkl",
        "opsd_rkl",
        "Ours, not the paper's OPSD: reverse-KL self-distillation alone (score-function form, coef 1.0); "
        "outcome advantages zeroed.",
        defaults={"coef": 1.0},
        paper=False,
    )
)
register_method(
    Method(
        "rlsd",
        "rlsd",
        "RLSD: the outcome advantage reweighted per token by clip(exp(sign(A) * Delta_t), 1-eps, 1+eps).",
        defaults={"rlsd.mix": 0.5, "rlsd.clip_eps": 0.2, "rlsd.decay_steps": 100},
    )
)
register_method(
    Method(
        "skill_sd",
        "skill_sd",
        "Skill-SD: GRPO + coef * Agg(rho_t * k3_t), importance-weighted k3 KL to the skill-conditioned teacher.",
        defaults={"coef": 0.001},
    )
)
# Skill-GRPO: objective ``none`` (verl's PPO loss, no teacher pass); what differs is the rollout:
# the agent loops put the row's privileged text (skills) into the student's own prompt.
register_method(
    Method(
        "skill_grpo",
        "none",
        "Skill-GRPO: GRPO with the retrieved skills in the student's own rollout prompt (training and "
        "validation; chosen every turn from that turn's user message), validated with and without them; "
        "no teacher pass, no extra term.",
        defaults={"student_prompt": True, "student_skills": "per_turn"},
    )
)


def objective_of(sdar) -> Objective:
    """The registry entry of ``sdar.objective``."""
    try:
        return OBJECTIVES[sdar.objective]
    except KeyError:
        raise ValueError(
            f"sdar.objective: unknown objective {sdar.objective!r}; expected one of {tuple(OBJECTIVES)}"
        ) from None
