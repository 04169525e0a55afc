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
from ..objectives import GATES

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
        header: text placed before the privileged text inside the inserted block.
        role: chat role of the inserted block (``system`` or ``user``).
        placement: ``start`` (first turn) or ``before_last_user`` (just before the last user turn).
    """

    source: str = "column"
    key: str = "privileged"
    header: str = "Useful knowledge for this task:\n"
    role: str = "system"
    placement: str = "start"


@dataclass(frozen=True)
class SkillsConfig:
    """Skill retrieval for the teacher (``sdar.privileged.source=skills``); see ``verl_sdar.skills``.

    Attributes:
        library: folder of the skill library (``general/``, ``task_types/``, ``mapping.yaml``).
        strategy: ``task_type`` | ``keyword`` | ``full`` | ``random`` | ``ucb``.
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
    * ``opsd``:     reverse-KL self-distillation alone: the outcome advantages are zeroed, so the
                    PPO term carries no gradient; ``L_obj`` = reverse-KL score-function term.
    * ``rlsd``:     no extra term; the advantages are reweighted per token (see ``RLSDConfig``).
    * ``skill_sd``: ``Agg(rho_t * k3_t)``, ``k3 = exp(-d) - 1 + d``, ``d = s_t - t_t``,
                    ``rho_t = exp(s_t - old_t)``.

    Attributes:
        objective: one of ``OBJECTIVES``.
        coef: lambda, the weight of ``L_obj`` (paper: 0.01 for SDAR, 0.001 for Skill-SD).
        beta: gate sharpness (paper: 5.0; 0 gives a constant gate 0.5).
        gate: ``gap`` | ``entropy`` | ``soft_or`` | ``constant``.
        privileged: where the teacher's privileged text comes from and how it is inserted.
        skills: skill retrieval, with ``privileged.source=skills``.
        teacher: teacher pass settings (prompt budget).
        rlsd: RLSD settings (used only with ``objective=rlsd``).
    """

    objective: str = "sdar"
    coef: float = 0.01
    beta: float = 5.0
    gate: str = "gap"
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
        if self.privileged.source not in ("column", "skills"):
            raise SDARConfigError(
                f"sdar.privileged.source must be 'column' or 'skills', got {self.privileged.source!r}"
            )
        if self.needs_teacher and self.privileged.source == "skills":
            from ..skills import STRATEGIES

            if not self.skills.library:
                raise SDARConfigError("sdar.skills.library: privileged.source=skills needs a skill library folder")
            if self.skills.strategy not in STRATEGIES:
                raise SDARConfigError(
                    f"sdar.skills.strategy: unknown strategy {self.skills.strategy!r}; expected one of {STRATEGIES}"
                )
        if (
            self.needs_teacher
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
        if sdar.needs_teacher and sdar.privileged.source == "skills":
            from ..skills import SkillLibrary, SkillLibraryError

            try:
                SkillLibrary.load(sdar.skills.library)  # a bad library fails here, naming the file
            except SkillLibraryError as exc:
                raise SDARConfigError(f"sdar.skills.library: {exc}") from exc
        if not OmegaConf.select(config, "trainer.use_v1", default=True):
            raise SDARConfigError("trainer.use_v1: the SDAR trainer is a V1 trainer; set trainer.use_v1=true")
        return sdar


class ValidateOnJobStart(Callback):
    """Hydra callback (``hydra.callbacks``): validate ``sdar.*`` before the job starts Ray."""

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        SDARConfig.from_config(config)
