"""Typed SDAR settings (the top-level ``sdar:`` key) and their validation.

The YAML groups under ``verl_sdar/config/algorithm/`` set these (each method's own values; the
shared ones come from ``verl_sdar/config/algorithm_base/``); ``SDARConfig.from_config`` turns
the composed OmegaConf tree into the dataclasses below and fails with a message that names the
offending key. It runs twice: in a Hydra ``on_job_start`` callback (before Ray starts) and in the
SDAR trainer's constructor (for launches that bypass Hydra).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from .. import methods
from ..names import PLACEMENTS, TRAINER_MODE
from ..objectives import DIVERGENCES, GATES
from ..teacher import FORMATS as PRIVILEGED_FORMATS

OBJECTIVES = tuple(methods.OBJECTIVES)
TURN_ROW_GRPO = "turn_row_grpo"  # the advantage estimator verl_sdar.advantages registers with verl


class SDARConfigError(ValueError):
    """A bad ``sdar.*`` value (or a verl setting that contradicts it). The message names the key."""


@dataclass(frozen=True)
class PrivilegedConfig:
    """Where the teacher's privileged text comes from.

    Attributes:
        source: ``column`` (each row's ``extra_info[key]``) or ``skills`` (retrieved from the skill
            library in ``sdar.skills`` for each row).
        key: with ``source=column``, the field inside each dataset row's ``extra_info`` that holds
            the privileged text. An empty string in a row means "no privileged context": the
            teacher then sees exactly the student's prompt. A row without the field is an error.
        header: text placed before the privileged text inside the inserted block (``chat_turn``).
        role: chat role of the inserted block (``system`` or ``user``; ``chat_turn``).
        placement: ``start`` (first turn) or ``before_last_user`` (just before the last user turn).
        format: ``chat_turn`` (a chat turn of the tokenizer's template holding ``header + text``) or
            ``raw_prefix`` (the SDAR reference's ``"[Privileged Skill Information]\\n{text}\\n\\n"``
            as raw text in front of the prompt's text; ``placement=start`` only). Both are spliced at
            token level; see docs/teacher_build.md.
    """

    source: str = "column"
    key: str = "privileged"
    header: str = "Useful knowledge for this task:\n"
    role: str = "system"
    placement: str = "start"
    format: str = "chat_turn"


@dataclass(frozen=True)
class SkillsConfig:
    """Skill retrieval for the teacher (``sdar.privileged.source=skills``); see ``verl_sdar.skills``.

    Attributes:
        library: folder of the skill library (``general/``, ``task_types/``, ``mapping.yaml``; or the
            authors' layout, ``skill_mapping.json`` + markdown files).
        strategy: ``task_type`` | ``keyword`` | ``keyword_any`` | ``full`` | ``random`` | ``ucb``.
        task_type_key: ``extra_info`` field naming a row's task type (``task_type``/``ucb``).
        seed: RNG seed of ``random``.
        ucb_c: exploration constant of ``ucb``.
    """

    library: str | None = None
    strategy: str = "task_type"
    task_type_key: str = "task_type"
    seed: int = 0
    ucb_c: float = 1.4142135623730951


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher pass settings.

    Attributes:
        max_prompt_length: token budget of a teacher prompt (student prompt + privileged block);
            null = no limit. Over budget, the oldest context after the block is removed (never the
            block, never the response) and the row is counted in ``sdar/teacher_rows_truncated``.
    """

    max_prompt_length: int | None = None


@dataclass(frozen=True)
class RLSDConfig:
    """RLSD baseline: ``A_t = A * ((1 - l) + l * clip(exp(sign(A) Delta_t), 1 - eps, 1 + eps))``.

    Attributes:
        mix: ``l`` at step 0.
        clip_eps: ``eps``.
        decay_steps: ``l`` decays linearly to 0 over this many steps; 0 keeps it constant.
    """

    mix: float = 0.5
    clip_eps: float = 0.2
    decay_steps: int = 100

    def mix_at(self, step: int) -> float:
        """``l`` at a global step (linear decay to 0 over ``decay_steps``)."""
        if self.decay_steps <= 0:
            return self.mix
        return self.mix * max(0.0, 1.0 - step / self.decay_steps)


@dataclass(frozen=True)
class SDARConfig:
    """SDAR settings. ``L = L_GRPO + coef * L_obj`` where ``L_obj`` depends on ``objective``:

    * ``none``:     GRPO only; no teacher pass.
    * ``sdar``:     ``Agg(g_t * (t_t - s_t))`` with ``g_t = gate(beta, Delta_t)`` detached.
                    ``gate=constant`` (or ``beta=0`` with ``gap``) is naive GRPO+OPSD.
    * ``opsd``:     the paper's OPSD: the same gated term, with the outcome advantages zeroed
                    (policy-gradient coefficient 0); verl's KL and entropy terms still apply.
    * ``opsd_rkl``: ours, not the paper's: advantages zeroed, ``L_obj`` = reverse-KL
                    score-function term.
    * ``rlsd``:     no extra term; the advantages are reweighted per token (see ``RLSDConfig``).
    * ``skill_sd``: ``Agg(rho_t * k3_t)``, ``k3 = exp(min(-d, 20)) - 1 + d``, ``d = s_t - t_t``,
                    ``rho_t = exp(min(s_t - old_t, 10))`` (the reference's clamps).

    Attributes:
        objective: one of ``OBJECTIVES``.
        coef: lambda, the weight of ``L_obj`` (paper: 0.01 for SDAR, 0.001 for Skill-SD).
        beta: gate sharpness (paper: 5.0; 0 gives a constant gate 0.5).
        gate: ``gap`` | ``entropy`` | ``soft_or`` | ``constant``.
        divergence: the divergence the gated term (objectives ``sdar``, ``opsd``) is built on, one of
            ``DIVERGENCES``; ``reverse_kl`` is SDAR's own term, ``jsd`` and ``forward_kl`` are our
            sampled-token constructions for the loss-form ablation (formulas in
            ``verl_sdar.objectives.sdar_loss``).
        student_prompt: Skill-GRPO (``algorithm=skill_grpo``): the agent loops put each row's
            privileged text (from ``privileged.source``; ``skills`` with a stateless strategy) into
            the student's own rollout prompt, as ``"[Privileged Skill Information]\\n{text}\\n\\n"``
            in front of the user message, in training and validation.
        privileged: where the teacher's privileged text comes from and how it is inserted.
        skills: skill retrieval, with ``privileged.source=skills``.
        teacher: teacher pass settings (prompt budget).
        rlsd: RLSD settings (used only with ``objective=rlsd``).
    """

    objective: str = "sdar"
    coef: float = 0.01
    beta: float = 5.0
    gate: str = "gap"
    divergence: str = "reverse_kl"
    student_prompt: bool = False
    privileged: PrivilegedConfig = field(default_factory=PrivilegedConfig)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rlsd: RLSDConfig = field(default_factory=RLSDConfig)

    def __post_init__(self) -> None:
        if self.objective not in OBJECTIVES:
            raise SDARConfigError(f"sdar.objective: unknown objective {self.objective!r}; expected one of {OBJECTIVES}")
        if not (isinstance(self.coef, (int, float)) and math.isfinite(self.coef) and self.coef >= 0):
            raise SDARConfigError(f"sdar.coef must be a finite number >= 0, got {self.coef!r}")
        if not (isinstance(self.beta, (int, float)) and math.isfinite(self.beta) and self.beta >= 0):
            raise SDARConfigError(f"sdar.beta must be a finite number >= 0, got {self.beta!r}")
        if self.gate not in GATES:
            raise SDARConfigError(f"sdar.gate: unknown gate {self.gate!r}; expected one of {GATES}")
        if self.divergence not in DIVERGENCES:
            raise SDARConfigError(
                f"sdar.divergence: unknown divergence {self.divergence!r}; expected one of {DIVERGENCES}"
            )
        if self.privileged.source not in ("column", "skills"):
            raise SDARConfigError(
                f"sdar.privileged.source must be 'column' or 'skills', got {self.privileged.source!r}"
            )
        uses_privileged = self.needs_teacher or self.student_prompt
        if not isinstance(self.student_prompt, bool):
            raise SDARConfigError(f"sdar.student_prompt must be true or false, got {self.student_prompt!r}")
        if uses_privileged and self.privileged.source == "skills":
            from ..skills import STATELESS_STRATEGIES, STRATEGIES

            if not self.skills.library:
                raise SDARConfigError("sdar.skills.library: privileged.source=skills needs a skill library folder")
            if self.skills.strategy not in STRATEGIES:
                raise SDARConfigError(
                    f"sdar.skills.strategy: unknown strategy {self.skills.strategy!r}; expected one of {STRATEGIES}"
                )
            if self.student_prompt and self.skills.strategy not in STATELESS_STRATEGIES:
                raise SDARConfigError(
                    f"sdar.skills.strategy={self.skills.strategy!r} cannot fill the student's prompt "
                    f"(sdar.student_prompt): use one of {STATELESS_STRATEGIES}"
                )
        if (
            uses_privileged
            and self.privileged.source == "column"
            and not (isinstance(self.privileged.key, str) and self.privileged.key.strip())
        ):
            raise SDARConfigError(
                f"sdar.privileged.key: objective {self.objective!r} needs a privileged-text source; "
                "set sdar.privileged.key to the extra_info field holding it"
            )
        if self.privileged.placement not in PLACEMENTS:
            raise SDARConfigError(
                f"sdar.privileged.placement: unknown placement {self.privileged.placement!r}; "
                f"expected one of {PLACEMENTS}"
            )
        if self.privileged.format not in PRIVILEGED_FORMATS:
            raise SDARConfigError(
                f"sdar.privileged.format: unknown format {self.privileged.format!r}; "
                f"expected one of {PRIVILEGED_FORMATS}"
            )
        if self.privileged.format == "raw_prefix" and self.privileged.placement != "start":
            raise SDARConfigError(
                "sdar.privileged.format=raw_prefix goes in front of the prompt's text: "
                "set sdar.privileged.placement=start"
            )
        if self.privileged.role not in ("system", "user"):
            raise SDARConfigError(f"sdar.privileged.role must be 'system' or 'user', got {self.privileged.role!r}")
        budget = self.teacher.max_prompt_length
        if budget is not None and not (isinstance(budget, int) and budget > 0):
            raise SDARConfigError(f"sdar.teacher.max_prompt_length must be a positive integer or null, got {budget!r}")
        if not 0.0 <= self.rlsd.mix <= 1.0:
            raise SDARConfigError(f"sdar.rlsd.mix must be in [0, 1], got {self.rlsd.mix!r}")
        if self.rlsd.clip_eps < 0:
            raise SDARConfigError(f"sdar.rlsd.clip_eps must be >= 0, got {self.rlsd.clip_eps!r}")
        if self.rlsd.decay_steps < 0:
            raise SDARConfigError(f"sdar.rlsd.decay_steps must be >= 0, got {self.rlsd.decay_steps!r}")

    @property
    def objective_spec(self) -> methods.Objective:
        """The registry entry of ``objective`` (``verl_sdar.methods``)."""
        return methods.objective_of(self)

    @property
    def needs_teacher(self) -> bool:
        """Whether a teacher log-prob pass runs each step."""
        return self.objective_spec.needs_teacher

    @property
    def adds_loss_term(self) -> bool:
        """Whether the actor loss gets an extra term (otherwise verl's PPO loss is used as is)."""
        return self.objective_spec.loss_term is not None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SDARConfig:
        """Build from a plain mapping; unknown keys are errors that name the key."""
        raw = dict(raw)
        sub = {
            "privileged": PrivilegedConfig,
            "skills": SkillsConfig,
            "teacher": TeacherConfig,
            "rlsd": RLSDConfig,
        }
        kwargs: dict[str, Any] = {}
        known = {f.name for f in dataclasses.fields(cls)}
        for key, value in raw.items():
            if key == "multi_turn":
                raise SDARConfigError(
                    "sdar.multi_turn.turn_row_grpo was replaced by verl's own key: "
                    f"algorithm.adv_estimator={TURN_ROW_GRPO} (registered by verl-sdar)"
                )
            if key not in known:
                raise SDARConfigError(f"sdar.{key}: unknown key; known keys are {sorted(known)}")
            if key in sub:
                sub_known = {f.name for f in dataclasses.fields(sub[key])}
                value = dict(value or {})
                for sub_key in value:
                    if sub_key not in sub_known:
                        raise SDARConfigError(f"sdar.{key}.{sub_key}: unknown key; known keys are {sorted(sub_known)}")
                value = sub[key](**value)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_config(cls, config: DictConfig) -> SDARConfig | None:
        """Validate a composed main_ppo config; return the SDAR settings, or None when SDAR is off.

        Checks both directions: ``sdar:`` present but another trainer selected, and the SDAR
        trainer selected without ``sdar:``.
        """
        mode = OmegaConf.select(config, "trainer.v1.trainer_mode", default=None)
        raw = OmegaConf.select(config, "sdar", default=None)
        if raw is None:
            if mode == TRAINER_MODE:
                raise SDARConfigError(
                    "sdar: trainer.v1.trainer_mode=sdar needs the top-level 'sdar' settings; "
                    "select them with algorithm=sdar (or grpo, opsd, grpo_opsd, rlsd, skill_sd)"
                )
            return None
        if mode != TRAINER_MODE:
            raise SDARConfigError(
                f"trainer.v1.trainer_mode is {mode!r} but 'sdar' settings are present; "
                "use trainer.v1.trainer_mode=sdar (set by algorithm=sdar) or drop the sdar key"
            )
        sdar = cls.from_dict(OmegaConf.to_container(raw, resolve=True))
        if (sdar.needs_teacher or sdar.student_prompt) and sdar.privileged.source == "skills":
            from ..skills import SkillLibrary, SkillLibraryError

            try:
                SkillLibrary.load(sdar.skills.library)  # a bad library fails here, naming the file
            except SkillLibraryError as exc:
                raise SDARConfigError(f"sdar.skills.library: {exc}") from exc
        if not OmegaConf.select(config, "trainer.use_v1", default=True):
            raise SDARConfigError("trainer.use_v1: the SDAR trainer is a V1 trainer; set trainer.use_v1=true")
        return sdar


class ValidateOnJobStart(Callback):
    """Hydra callback (``hydra.callbacks``): validate ``sdar.*`` before the job starts Ray.

    Hydra 1.3 turns an exception raised in a callback into a warning and runs the job anyway, so a
    bad value is reported as ``SystemExit`` (which Hydra lets through): the job stops, exit status 1,
    with the message naming the key.
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            SDARConfig.from_config(config)
        except SDARConfigError as exc:
            raise SystemExit(f"verl-sdar: invalid configuration: {exc}") from exc
