"""One training row per turn: the verl agent-loop base of the text-game environments (ALFWorld, WebShop).

A subclass names its environment through four hooks (:meth:`TurnRowAgentLoop.open_env`,
:meth:`~TurnRowAgentLoop.reset`, :meth:`~TurnRowAgentLoop.step`, :meth:`~TurnRowAgentLoop.prompt`);
the base plays the episode: for up to ``env.max_steps`` turns it renders the prompt as one user
message through the chat template, asks the rollout server for a response, projects it to a
command (:func:`verl_sdar.envs.turn_prompts.project_action`) and steps the env. It returns one
:class:`AgentLoopOutput` per turn, which verl's V1 agent-loop worker stores as separate rows (keys
``{uid}_{session}_{turn}``) that all carry the dataset row's fields (``extra_info`` with
``task_type`` and the privileged text, so the SDAR teacher pass works per turn).

Reward: the env result travels in ``extra_fields`` (``won`` and the subclass's episode fields);
verl's reward loop scores the last turn and copies that score to every earlier turn row. verl
0.9.1's worker overwrites the earlier rows' score with the final one, so the per-turn
invalid-action penalty cannot ride on the reward score; it is stored per row in
``extra_fields["invalid_action_penalty"]`` (coefficient ``env.invalid_action_penalty_coef``) for the
trainer to subtract (:mod:`verl_sdar.advantages`). Field names: :mod:`verl_sdar.envs.contract`.

Env calls run in a worker thread (``asyncio`` is never blocked); an env error or timeout ends
the episode as failed, logs the reason and is recorded in ``extra_fields["env_error"]`` (the
failed turn's row), ``"episode_error"`` and ``"error_kind"`` (every row: ``reset_error``,
``reset_timeout``, ``step_error`` or ``step_timeout``; counted by the trainer, :mod:`verl_sdar.faults`).

Prompt budget: every prompt fits the rollout's ``prompt_length`` (:meth:`TurnRowAgentLoop.fit_turn_prompt`).
Over budget, the oldest shown (observation, action) pairs are dropped first, then the current
observation is shortened (marked ``[...]``); the role, the task, the admissible actions, the
answer format and a Skill-GRPO prefix are never cut (``ValueError`` if they alone do not fit: a
budget too small for the env). verl's own ``ct_build_initial_tokens`` would instead keep only the
last ``prompt_length`` tokens, losing the rules and the task with only a warning.

A response of zero tokens (a server that returned nothing) becomes one masked filler token, so
the row stays well formed; like any response without an action it is an invalid turn.

Skill-GRPO (``sdar.student_prompt=true``, :func:`verl_sdar.privileged.student_privileged`): every
turn's user message starts with ``"[Privileged Skill Information]\n{text}\n\n"``. With
``sdar.student_skills=per_turn`` (the reference's) the text is chosen every turn from that turn's
whole user message (task, shown history, observation, admissible actions: the keyword substrings
of the message before any over-budget shortening), so it follows the observation; with
``per_episode`` once, after the reset (keyword strategies match the task text the env returned,
else the first observation). Rows flagged ``NO_STUDENT_SKILLS`` (validation without skills) get none.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.utils.profiler import simple_timer

from verl_sdar.envs.common import plain
from verl_sdar.envs.contract import (
    ACTION,
    ENV_ERROR,
    ENV_SECONDS,
    EPISODE_ERROR,
    EPISODE_SECONDS,
    EPISODE_STEPS,
    ERROR_KIND,
    INADMISSIBLE,
    INVALID_ACTION_PENALTY,
    INVALID_REASON,
    NUM_TURNS_TOTAL,
    REWARD_EXTRA_INFO,
    TASK_TYPE,
    TURN,
    VALID,
    VALID_ACTION,
    WON,
    error_kind,
)
from verl_sdar.envs.loop_base import EnvAgentLoop
from verl_sdar.envs.turn_prompts import clip_text, project_action
from verl_sdar.privileged import student_privileged, student_turn_prefix
from verl_sdar.request_identity import request_identity

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

TURN_DEFAULTS: dict[str, Any] = {
    "max_steps": 50,
    "history_length": 2,
    "invalid_action_penalty_coef": 0.1,
    "use_invalid_action_penalty": True,
    # a well-formatted action the env refuses (not admissible on the page): penalised like a
    # malformed one (true), or only flagged (false: the reference's, which penalises format errors only)
    "penalise_inadmissible": False,
    "step_timeout_s": 60.0,
    "reset_timeout_s": 120.0,
}

# Env calls go to one shared worker thread per process: game engines are not known to be
# thread-safe, steps take milliseconds, and this keeps the event loop free. A call that times out
# leaves its thread stuck, so the executor is replaced and later episodes get a fresh thread.
_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _env_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="verl-sdar-env")
        return _executor


def _abandon_executor(stuck: concurrent.futures.ThreadPoolExecutor) -> None:
    global _executor
    with _executor_lock:
        if _executor is stuck:
            _executor = None
    stuck.shutdown(wait=False, cancel_futures=True)


async def call_env(fn, *args, timeout: float | None = None):
    """Run ``fn(*args)`` in the env thread; raise ``TimeoutError`` after ``timeout`` seconds."""
    executor = _env_executor()
    future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
    try:
        return await asyncio.wait_for(future, timeout)
    except TimeoutError:
        _abandon_executor(executor)
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} took more than {timeout}s") from None


class TurnRowAgentLoop(EnvAgentLoop):
    """Plays one episode of a text environment; returns one :class:`AgentLoopOutput` per turn.

    Subclasses set ``ENV_NAME`` and ``DEFAULTS`` (``TURN_DEFAULTS`` plus their own keys) and
    implement the hooks below. Settings and the invalid-action penalty: :class:`EnvAgentLoop`.
    """

    ENV_NAME = "env"
    DEFAULTS: dict[str, Any] = TURN_DEFAULTS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.student_privileged = student_privileged(self.config)  # Skill-GRPO; None when off

    # ------------------------------------------------------------------ hooks
    def open_env(self) -> Any:
        """A fresh environment object for one episode."""
        raise NotImplementedError

    def reset(self, env: Any, extra_info: dict) -> tuple[str, str, list[str]]:
        """Start the episode of this dataset row: ``(task, first observation, admissible actions)``.

        Runs in the env thread; raising fails the episode (never the run)."""
        raise NotImplementedError

    def step(self, env: Any, action: str) -> tuple[str, bool, bool, list[str], dict]:
        """``(next observation, done, won, admissible actions, info)``; runs in the env thread.

        ``info["valid_action"] = False`` marks a well-formatted action the env refused: the row is
        flagged (``inadmissible``), and with ``env.penalise_inadmissible`` also invalid
        (``inadmissible_action``) and penalised like a malformed one."""
        raise NotImplementedError

    def prompt(self, task: str, observation: str, admissible: list[str], history: list[tuple[str, str]],
               history_length: int) -> str:
        """The user message of the turn after ``history`` (``len(history)`` steps taken), showing
        at most the last ``history_length`` (observation, action) pairs (fewer than the setting when
        :meth:`fit_turn_prompt` shortens an over-budget prompt). ``observation`` may come shortened: the
        prompt must then still state ``task``."""
        raise NotImplementedError

    def episode_fields(self, last_info: dict) -> dict[str, Any]:
        """Extra fields written on every turn row once the episode ends (e.g. a graded reward)."""
        return {}

    def close_env(self, env: Any) -> None:
        close = getattr(env, "close", None)
        if close is not None:
            close()

    # ------------------------------------------------------------------ prompt budget
    async def _render(self, text: str) -> list[int]:
        return await self.ct_build_initial_tokens([{"role": "user", "content": text}])

    async def fit_turn_prompt(self, prefix: str, task: str, observation: str, admissible: list[str],
                              history: list[tuple[str, str]]) -> list[int]:
        """The token ids of the turn prompt (``prefix`` + :meth:`prompt`), at most ``prompt_length``.

        Over budget: fewer past (observation, action) pairs are shown, oldest dropped first; with
        none shown, the current observation is shortened to the longest prefix that fits. The
        prefix, role, task, admissible actions and answer format are never cut: ``ValueError`` when
        they alone exceed the budget.
        """
        window = min(max(self.history_length, 0), len(history))

        async def render(obs: str, shown: int) -> list[int]:
            return await self._render_whole(prefix + self.prompt(task, obs, admissible, history, shown))

        for shown in range(window, -1, -1):
            ids = await render(observation, shown)
            if len(ids) <= self.prompt_length:
                return ids
        ids = await self._longest_fit(len(observation), lambda n: render(clip_text(observation, n), 0))
        if ids is None:
            raise ValueError(
                f"{self.ENV_NAME} turn prompt: the role, task, admissible actions and answer format"
                f"{' and the skill prefix' if prefix else ''} alone take more than the prompt budget of "
                f"{self.prompt_length} tokens (data.max_prompt_length, actor_rollout_ref.rollout.prompt_length)"
            )
        return ids

    # ------------------------------------------------------------------ episode
    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> list[AgentLoopOutput]:
        priority = int(priority)
        row = {**kwargs, "priority": priority}
        extra_info = plain(kwargs.get("extra_info")) or {}
        base = self.row_fields(extra_info)

        episode_start = time.perf_counter()
        env = self.open_env()
        outputs: list[AgentLoopOutput] = []
        error = None
        kind = ""
        won = False
        last_info: dict = {}
        try:
            try:
                task, obs, admissible = await call_env(
                    self.reset, env, extra_info, timeout=self.settings["reset_timeout_s"]
                )
            except Exception as e:  # noqa: BLE001 - a broken task fails its episode, never the run
                error = f"reset failed: {type(e).__name__}: {e}"
                logger.warning("%s episode %s: %s", self.ENV_NAME, base, error)
                return [await self._failed_reset_output(
                    error, base, plain(kwargs.get("global_steps")), kind=error_kind("reset", e)
                )]

            episode_text = task or obs  # what per-episode keyword strategies match
            history: list[tuple[str, str]] = []
            env_time = 0.0
            for turn in range(self.max_steps):
                shown = min(max(self.history_length, 0), len(history))
                skill = student_turn_prefix(  # this turn's whole user message, built only when asked for
                    self.student_privileged, row, extra_info, episode_text,
                    lambda o=obs, a=admissible, n=shown: self.prompt(task, o, a, history, n),
                )
                prompt_ids = await self.fit_turn_prompt(skill, task, obs, admissible, history)
                metrics: dict[str, Any] = {}
                with simple_timer("generate_sequences", metrics):
                    identity = request_identity(self.rollout_config, row, turn, prompt_ids)
                    generated = await self.server_manager.generate(
                        request_id=identity.request_id,
                        prompt_ids=prompt_ids,
                        sampling_params=identity.sampling_params(sampling_params),
                        priority=priority,
                    )
                response_ids = list(generated.token_ids)[: self.response_length]
                # an empty list (nothing generated) still means log-probs were asked for: keep a list
                logprobs = list(generated.log_probs)[: len(response_ids)] if generated.log_probs is not None else None
                response_mask = [1] * len(response_ids)
                response_text = await self.loop.run_in_executor(
                    None, lambda ids=response_ids: self.tokenizer.decode(ids, skip_special_tokens=True)
                )
                if not response_ids:  # nothing generated: one masked filler token keeps the row well formed
                    response_ids, response_mask = [self.filler_token_id()], [0]
                    logprobs = [0.0] if logprobs is not None else None
                projection = project_action(response_text)

                step_error = None
                t0 = time.perf_counter()
                try:
                    next_obs, done, won, next_admissible, last_info = await call_env(
                        self.step, env, projection.action, timeout=self.settings["step_timeout_s"]
                    )
                except Exception as e:  # noqa: BLE001
                    step_error = f"step {turn} failed: {type(e).__name__}: {e}"
                    logger.warning("%s episode %s: %s", self.ENV_NAME, base, step_error)
                    error, done, won, next_obs, next_admissible = step_error, True, False, "", []
                    kind = error_kind("step", e)
                env_time += time.perf_counter() - t0
                if turn + 1 >= self.max_steps:
                    done = True
                valid, reason = projection.valid, projection.reason
                refused = step_error is None and last_info.get(VALID_ACTION) is False  # not admissible here
                inadmissible = refused and projection.valid  # well formatted, but refused
                if refused and self.settings["penalise_inadmissible"]:
                    valid, reason = False, ",".join(r for r in (reason, "inadmissible_action") if r)

                metrics["num_preempted"] = generated.num_preempted if generated.num_preempted is not None else -1
                outputs.append(
                    AgentLoopOutput(
                        prompt_ids=prompt_ids,
                        response_ids=response_ids,
                        response_mask=response_mask,
                        response_logprobs=logprobs,
                        num_turns=2,
                        metrics=metrics,
                        extra_fields={
                            # server fields first (min/max_global_steps: weight versions used)
                            **dict(generated.extra_fields or {}),
                            **base,
                            TURN: turn,
                            ACTION: projection.action,
                            VALID: valid,
                            INADMISSIBLE: inadmissible,
                            INVALID_REASON: reason,
                            INVALID_ACTION_PENALTY: 0.0 if valid else self.penalty,
                            WON: won,  # updated on every row below once the episode ends
                            ENV_ERROR: step_error or "",
                        },
                    )
                )
                if done:
                    break
                history.append((obs, projection.action))
                obs, admissible = next_obs, next_admissible
        finally:
            try:
                await call_env(self.close_env, env, timeout=10)
            except Exception as e:  # noqa: BLE001
                logger.warning("%s: closing env failed: %s", self.ENV_NAME, e)

        episode_s = time.perf_counter() - episode_start
        final = self.episode_fields(last_info) if error is None else self.episode_fields({})
        for out in outputs:
            out.extra_fields.update(
                {
                    WON: won,
                    EPISODE_STEPS: len(outputs),
                    EPISODE_ERROR: error or "",
                    ERROR_KIND: kind,
                    ENV_SECONDS: env_time,
                    EPISODE_SECONDS: episode_s,
                    NUM_TURNS_TOTAL: len(outputs),
                    REWARD_EXTRA_INFO: {},
                    **final,
                }
            )
        return outputs

    def row_fields(self, extra_info: dict) -> dict[str, Any]:
        """Fields of the dataset row repeated on every turn row (``task_type`` at least)."""
        return {TASK_TYPE: extra_info.get(TASK_TYPE)}

    async def _failed_reset_output(self, error: str, base: dict, global_steps: Any = None,
                                   kind: str = "") -> AgentLoopOutput:
        """A single zero-weight row for an episode whose task could not be loaded."""
        prompt_ids = await self._render(f"The {self.ENV_NAME} task could not be loaded ({clip_text(error, 300)}).")
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=[self.filler_token_id()],
            response_mask=[0],
            response_logprobs=[0.0] if getattr(self.rollout_config, "calculate_log_probs", False) else None,
            num_turns=2,
            metrics={},
            extra_fields={
                # no generation happened: the weight version is the current step's
                "min_global_steps": global_steps,
                "max_global_steps": global_steps,
                **base,
                TURN: 0,
                ACTION: "",
                VALID: False,
                INVALID_REASON: "env_error",
                INVALID_ACTION_PENALTY: 0.0,
                WON: False,
                ENV_ERROR: error,
                EPISODE_STEPS: 0,
                EPISODE_ERROR: error,
                ERROR_KIND: kind,
                ENV_SECONDS: 0.0,
                EPISODE_SECONDS: 0.0,
                NUM_TURNS_TOTAL: 1,
                REWARD_EXTRA_INFO: {},
                **self.episode_fields({}),
            },
        )
