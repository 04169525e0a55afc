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
from ..names import PLACEMENTS, TEACHER_SOURCES, TRAINER_MODE
from ..objectives import DIVERGENCES, GATES
from ..teacher import FORMATS as PRIVILEGED_FORMATS

OBJECTIVES = tuple(methods.OBJECTIVES)
PENALTY_PLACEMENTS = ("reward", "advantage")
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
        library: the skill library: a shipped one by name, ``builtin:<name>`` (``alfworld``,
            ``codeword``, ``search``, ``webshop``; found in each process's own installation, see
            ``verl_sdar.resources``), or a folder (``general/``, ``task_types/``, ``mapping.yaml``;
            or the authors' layout, ``skill_mapping.json`` + markdown files). Checked at start-up.
        strategy: ``task_type`` | ``keyword`` | ``keyword_any`` | ``keyword_substring`` (the
            reference's: keyword substrings of the whole decoded prompt) | ``full`` | ``random`` |
            ``ucb``.
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
class TeacherModelConfig:
    """The separate teacher model of ``sdar.teacher.source=model``, served by verl's own teacher
    machinery (``verl.experimental.teacher_loop``: inference replicas on a dedicated resource pool,
    as for verl's on-policy distillation; verl's distillation loss stays off).

    Attributes:
        path: the teacher's weights (local folder or Hugging Face name); it must have the student's
            tokenizer (same vocabulary), checked at start-up.
        n_gpus_per_node: GPUs per node of the teacher's own resource pool (verl's
            ``distillation.n_gpus_per_node``); the pool holds ``n_gpus_per_node * nnodes /
            (tensor * data * pipeline parallel size of inference)`` replicas.
        nnodes: nodes of the teacher's resource pool (verl's ``distillation.nnodes``).
        inference: inference-engine settings of the teacher replicas (verl's ``RolloutConfig`` keys,
            e.g. ``name``, ``tensor_model_parallel_size``, ``gpu_memory_utilization``,
            ``max_model_len``, ``dtype``), applied over verl's own teacher defaults
            (``distillation.teacher_models.teacher_model.inference``: the student rollout's backend,
            dtype and lengths, real weights) with ``tensor_model_parallel_size=1`` and, when
            ``sdar.teacher.max_prompt_length`` is set, that as ``prompt_length``.
    """

    path: str | None = None
    n_gpus_per_node: int = 1
    nnodes: int = 1
    inference: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TeacherConfig:
    """Teacher pass settings.

    Attributes:
        source: which weights score the teacher rows (``verl_sdar.teacher_sources``): ``self``, the
            actor at its pre-update weights (the paper's; no extra memory); ``reference``, the
            frozen initial policy on verl's reference worker group (needs it: KL loss or KL in
            reward on; one more no-grad pass on the reference workers); or ``model``, a separate
            (e.g. larger) model with the student's tokenizer, ``sdar.teacher.model``, on inference
            replicas of its own resource pool (extra GPUs; one prompt-log-prob request per row).
        max_prompt_length: token budget of a teacher prompt (student prompt + privileged block);
            null = no limit. Over budget, the oldest context after the block is removed (never the
            block, never the response) and the row is counted in ``sdar/teacher_rows_truncated``.
        model: the teacher model of ``source=model`` (unused by the other sources).
    """

    source: str = "self"
    max_prompt_length: int | None = None
    model: TeacherModelConfig = field(default_factory=TeacherModelConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, TeacherModelConfig):
            return
        raw = dict(self.model or {})
        known = {f.name for f in dataclasses.fields(TeacherModelConfig)}
        for key in raw:
            if key not in known:
                raise SDARConfigError(f"sdar.teacher.model.{key}: unknown key; known keys are {sorted(known)}")
        raw["inference"] = dict(raw.get("inference") or {})
        object.__setattr__(self, "model", TeacherModelConfig(**raw))


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
class FaultsConfig:
    """Stop rule for env faults (``verl_sdar.faults``): each training step logs
    ``episode/env_error_rate``, the share of its episodes hit by an env fault (ended by an env error
    or timeout; Search: a failed retrieval), and ``episode/env_errors/<kind>``. A run whose rate
    stays above ``max_env_error_rate`` for ``patience_steps`` training steps in a row stops with an
    error naming these settings and the recent rates, instead of training on failed episodes. (A
    step where every episode failed before generating anything stops the run at once, whatever
    these say: there is nothing to train on.)

    Attributes:
        max_env_error_rate: the highest tolerated ``episode/env_error_rate`` (a share in [0, 1]);
            1.0 or null: the run never stops for env faults (they are still counted).
        patience_steps: how many training steps in a row the rate must stay above
            ``max_env_error_rate`` before the run stops; 0 or null: never stop.
    """

    max_env_error_rate: float | None = 0.5
    patience_steps: int | None = 3

    @property
    def enabled(self) -> bool:
        """Whether the stop rule can trip."""
        return (self.max_env_error_rate is not None and self.max_env_error_rate < 1.0
                and self.patience_steps is not None and self.patience_steps > 0)


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
        invalid_action_penalty: where a row's invalid-action penalty (``env.invalid_action_penalty_coef``,
            written by the agent loops) is applied. ``reward`` (the reference's): subtracted from the
            row's reward before the group statistics; with ``norm_adv_by_std_in_grpo`` it is then
            the only variance of a group whose episodes all failed, and is scaled up to about one
            standard deviation (8 failed rows, one of them invalid: -2.47 on it, +0.35 on the other
            seven: "reinforce whatever you did"). ``advantage`` (ours): subtracted from the row's
            advantage after the group statistics, which then see outcomes only (that group: -0.1 on
            the invalid row, 0 elsewhere).
        student_prompt: Skill-GRPO (``algorithm=skill_grpo``): the agent loops put each row's
            privileged text (from ``privileged.source``; ``skills`` with a stateless strategy) into
            the student's own rollout prompt, as ``"[Privileged Skill Information]\\n{text}\\n\\n"``
            in front of the user message, in training and validation; validation runs a second
            time without it (metrics ``val_no_skill/*``, the first pass also as ``val_with_skill/*``).
        student_skills: with ``student_prompt`` and ``privileged.source=skills``, when the student's
            skills are chosen: ``per_turn`` (the reference's Skill-GRPO) every turn, from the keyword
            substrings of that turn's whole user message (``keyword_substring``; the skills follow the
            observation; ``skills.strategy`` is not used); ``per_episode`` (ours) once per episode with
            ``skills.strategy`` (a stateless one) on the task text.
        privileged: where the teacher's privileged text comes from and how it is inserted.
        skills: skill retrieval, with ``privileged.source=skills``.
        teacher: teacher pass settings (prompt budget).
        rlsd: RLSD settings (used only with ``objective=rlsd``).
        faults: when env faults stop the run (``episode/env_error_rate``).
    """

    objective: str = "sdar"
    coef: float = 0.01
    beta: float = 5.0
    gate: str = "gap"
    divergence: str = "reverse_kl"
    invalid_action_penalty: str = "reward"
    student_prompt: bool = False
    student_skills: str = "per_turn"
    privileged: PrivilegedConfig = field(default_factory=PrivilegedConfig)
    skills: SkillsConfig = field(default_factory=SkillsConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    rlsd: RLSDConfig = field(default_factory=RLSDConfig)
    faults: FaultsConfig = field(default_factory=FaultsConfig)

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
        if self.invalid_action_penalty not in PENALTY_PLACEMENTS:
            raise SDARConfigError(
                f"sdar.invalid_action_penalty must be one of {PENALTY_PLACEMENTS}, got {self.invalid_action_penalty!r}"
            )
        if self.privileged.source not in ("column", "skills"):
            raise SDARConfigError(
                f"sdar.privileged.source must be 'column' or 'skills', got {self.privileged.source!r}"
            )
        uses_privileged = self.needs_teacher or self.student_prompt
        if not isinstance(self.student_prompt, bool):
            raise SDARConfigError(f"sdar.student_prompt must be true or false, got {self.student_prompt!r}")
        from ..privileged import STUDENT_SKILLS

        if self.student_skills not in STUDENT_SKILLS:
            raise SDARConfigError(f"sdar.student_skills must be one of {STUDENT_SKILLS}, got {self.student_skills!r}")
        if uses_privileged and self.privileged.source == "skills":
            from ..skills import STATELESS_STRATEGIES, STRATEGIES

            if not self.skills.library:
                raise SDARConfigError(
                    "sdar.skills.library: privileged.source=skills needs a skill library (builtin:<name> or a folder)"
                )
            if self.skills.strategy not in STRATEGIES:
                raise SDARConfigError(
                    f"sdar.skills.strategy: unknown strategy {self.skills.strategy!r}; expected one of {STRATEGIES}"
                )
            per_episode = self.student_prompt and self.student_skills == "per_episode"
            if per_episode and self.skills.strategy not in STATELESS_STRATEGIES:
                raise SDARConfigError(
                    f"sdar.skills.strategy={self.skills.strategy!r} cannot fill the student's prompt "
                    f"(sdar.student_prompt, sdar.student_skills=per_episode): use one of {STATELESS_STRATEGIES}"
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
        if self.teacher.source not in TEACHER_SOURCES:
            raise SDARConfigError(
                f"sdar.teacher.source: unknown source {self.teacher.source!r}; expected one of {TEACHER_SOURCES}"
            )
        if self.teacher.source == "model":
            model = self.teacher.model
            if not model.path:
                raise SDARConfigError("sdar.teacher.source=model needs sdar.teacher.model.path (the teacher's weights)")
            for key in ("n_gpus_per_node", "nnodes"):
                value = getattr(model, key)
                if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                    raise SDARConfigError(f"sdar.teacher.model.{key} must be a positive integer, got {value!r}")
        budget = self.teacher.max_prompt_length
        if budget is not None and not (isinstance(budget, int) and budget > 0):
            raise SDARConfigError(f"sdar.teacher.max_prompt_length must be a positive integer or null, got {budget!r}")
        if not 0.0 <= self.rlsd.mix <= 1.0:
            raise SDARConfigError(f"sdar.rlsd.mix must be in [0, 1], got {self.rlsd.mix!r}")
        if self.rlsd.clip_eps < 0:
            raise SDARConfigError(f"sdar.rlsd.clip_eps must be >= 0, got {self.rlsd.clip_eps!r}")
        if self.rlsd.decay_steps < 0:
            raise SDARConfigError(f"sdar.rlsd.decay_steps must be >= 0, got {self.rlsd.decay_steps!r}")
        rate = self.faults.max_env_error_rate
        if rate is not None and not (
            isinstance(rate, (int, float)) and not isinstance(rate, bool) and 0.0 <= rate <= 1.0
        ):
            raise SDARConfigError(f"sdar.faults.max_env_error_rate must be a share in [0, 1] or null, got {rate!r}")
        patience = self.faults.patience_steps
        if patience is not None and not (
            isinstance(patience, int) and not isinstance(patience, bool) and patience >= 0
        ):
            raise SDARConfigError(f"sdar.faults.patience_steps must be an integer >= 0 or null, got {patience!r}")

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
            "faults": FaultsConfig,
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
        if sdar.needs_teacher and sdar.teacher.source == "reference" and not (
            OmegaConf.select(config, "algorithm.use_kl_in_reward", default=False)
            or OmegaConf.select(config, "actor_rollout_ref.actor.use_kl_loss", default=False)
        ):
            raise SDARConfigError(
                "sdar.teacher.source=reference scores the teacher rows with verl's reference policy, which "
                "verl only builds with the KL loss or KL in reward: set actor_rollout_ref.actor.use_kl_loss=true "
                "(the paper's setting) or use sdar.teacher.source=self"
            )
        if sdar.needs_teacher and sdar.teacher.source == "model":
            temperature = OmegaConf.select(config, "actor_rollout_ref.rollout.temperature", default=1.0)
            if temperature != 1.0:
                raise SDARConfigError(
                    "sdar.teacher.source=model: the teacher servers return untempered prompt log-probs "
                    f"(temperature 1), but actor_rollout_ref.rollout.temperature={temperature} tempers the "
                    "student's old_log_probs; use temperature 1.0 or sdar.teacher.source=self"
                )
            if OmegaConf.select(config, "distillation.enabled", default=False):
                raise SDARConfigError(
                    "sdar.teacher.source=model builds its own teacher servers; distillation.enabled=true "
                    "would add verl's distillation loss and per-rollout teacher queries on top: "
                    "set distillation.enabled=false"
                )
        if not OmegaConf.select(config, "trainer.use_v1", default=True):
            raise SDARConfigError("trainer.use_v1: the SDAR trainer is a V1 trainer; set trainer.use_v1=true")
        return sdar


def check_datasets(config: DictConfig, sdar: SDARConfig | None):
    """Check the rows of ``data.train_files`` / ``data.val_files`` against the env contract for the
    agent loop that plays them (``verl_sdar.envs.row_check``); with a teacher (or Skill-GRPO) that
    reads a column, training rows must carry ``extra_info[sdar.privileged.key]``. Raises
    ``DatasetRowError`` naming file, row and field; returns the report."""
    from ..envs.row_check import check_data_files

    reads_column = sdar is not None and (sdar.needs_teacher or sdar.student_prompt) and (
        sdar.privileged.source == "column")
    return check_data_files(
        OmegaConf.select(config, "data.train_files", default=None),
        OmegaConf.select(config, "data.val_files", default=None),
        default_agent_loop=OmegaConf.select(config, "actor_rollout_ref.rollout.agent.default_agent_loop", default=None),
        privileged_key=sdar.privileged.key if reads_column else None,
    )


def _vocab_fingerprint(vocab: dict[str, int]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for token, index in sorted(vocab.items(), key=lambda item: item[1]):
        digest.update(f"{index}\t{token}\n".encode())
    return digest.hexdigest()[:12]


def check_teacher_tokenizer(config: DictConfig, sdar: SDARConfig | None) -> None:
    """With ``sdar.teacher.source=model``: the teacher scores the student's token ids, so both models
    must have the same tokenizer. Loads both tokenizers and compares their vocabularies (token ->
    id); raises ``SDARConfigError`` naming both model paths when they differ. A no-op otherwise."""
    if sdar is None or not sdar.needs_teacher or sdar.teacher.source != "model":
        return
    from transformers import AutoTokenizer

    model = OmegaConf.select(config, "actor_rollout_ref.model", default=None) or {}
    student_path = model.get("tokenizer_path") or model.get("path")
    teacher_path = sdar.teacher.model.path
    trust = bool(model.get("trust_remote_code", False))
    vocabs = {}
    for who, path in (("student", student_path), ("teacher", teacher_path)):
        try:
            vocabs[who] = AutoTokenizer.from_pretrained(path, trust_remote_code=trust).get_vocab()
        except Exception as exc:  # noqa: BLE001 - reported with the key that names the path
            key = "actor_rollout_ref.model.path" if who == "student" else "sdar.teacher.model.path"
            raise SDARConfigError(f"sdar.teacher.source=model: cannot load the {who} tokenizer from {key}={path!r}: "
                                  f"{exc}") from exc
    if vocabs["student"] != vocabs["teacher"]:
        student, teacher = vocabs["student"], vocabs["teacher"]
        raise SDARConfigError(
            "sdar.teacher.source=model needs the student's tokenizer: the teacher scores the student's token ids, "
            f"but the vocabularies differ: student {student_path!r} has {len(student)} tokens "
            f"(sha {_vocab_fingerprint(student)}), teacher sdar.teacher.model.path={teacher_path!r} has "
            f"{len(teacher)} tokens (sha {_vocab_fingerprint(teacher)}); "
            f"{len(set(student.items()) ^ set(teacher.items()))} (token, id) pairs are not shared"
        )


def check_retriever(config: DictConfig) -> str | None:
    """When ``env.retriever.url`` is set (a Search-R1 server), send it one probe search (timeout
    ``env.retriever.timeout_s``, at most 10 s) so that a server that is down or answers in another
    shape stops the run at start-up rather than failing every episode's searches. Raises
    ``SDARConfigError`` naming ``env.retriever.url``; returns the url checked (``None`` when there
    is none, or ``env.retriever.health_check=false``, e.g. a host only the cluster's workers reach)."""
    url = OmegaConf.select(config, "env.retriever.url", default=None)
    if not url or not OmegaConf.select(config, "env.retriever.health_check", default=True):
        return None
    from ..envs.search.retrieval import RetrievalError, health_check

    timeout_s = min(float(OmegaConf.select(config, "env.retriever.timeout_s", default=None) or 10.0), 10.0)
    try:
        health_check(str(url), timeout_s=timeout_s)
    except (RetrievalError, ValueError) as exc:
        raise SDARConfigError(
            f"env.retriever.url={url!r} does not answer a search ({exc}); start the retrieval server, fix the "
            "url, or set env.retriever.health_check=false if only the cluster's workers can reach it"
        ) from exc
    return str(url)


class ValidateOnJobStart(Callback):
    """Hydra callback (``hydra.callbacks``): validate ``sdar.*``, the dataset rows
    (:func:`check_datasets`) and the Search retriever (:func:`check_retriever`) before the job
    starts Ray.

    Hydra 1.3 turns an exception raised in a callback into a warning and runs the job anyway, so a
    bad value is reported as ``SystemExit`` (which Hydra lets through): the job stops, exit status 1,
    with the message naming the key (or the file, row and field).
    """

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from ..envs.row_check import DatasetRowError

        try:
            sdar = SDARConfig.from_config(config)
        except SDARConfigError as exc:
            raise SystemExit(f"verl-sdar: invalid configuration: {exc}") from exc
        try:
            check_teacher_tokenizer(config, sdar)
            if check_retriever(config):
                print(f"[verl-sdar] retriever answered: {config.env.retriever.url}", flush=True)
        except SDARConfigError as exc:
            raise SystemExit(f"verl-sdar: invalid configuration: {exc}") from exc
        try:
            report = check_datasets(config, sdar)
        except DatasetRowError as exc:
            raise SystemExit(str(exc)) from exc
        if report.checked:
            rows = ", ".join(f"{path} ({n} rows)" for path, n in report.checked.items())
            print(f"[verl-sdar] dataset rows checked: {rows}", flush=True)
