"""verl agent loop ``alfworld``: one ALFWorld episode, one training row per turn.

Each dataset row names a game (``extra_info.game_path``); the loop resets an
:class:`~verl_sdar.envs.alfworld.play.AlfworldEnv` on it and, for up to ``env.max_steps`` turns,
renders the verl-agent style prompt (:mod:`.prompts`) as one user message through the chat
template, asks the rollout server for a response, projects it to a command and steps the env.
It returns a list of :class:`AgentLoopOutput`, one per turn, which verl's V1 agent loop worker
stores as separate rows (keys ``{uid}_{session}_{turn}``) that all carry the dataset row's fields
(``extra_info`` with ``task_type`` and the privileged text, so the SDAR teacher pass works per turn).

Reward: the env result travels in ``extra_fields`` (``won``); verl's reward loop scores the last
turn with :func:`verl_sdar.envs.alfworld.reward.compute_score` (10 x won) and copies that score
to every earlier turn row. verl 0.9.1's worker overwrites the earlier rows' score with the final
one, so the per-turn invalid-action penalty cannot ride on the reward score; it is stored per row
in ``extra_fields["invalid_action_penalty"]`` (coefficient ``env.invalid_action_penalty_coef``,
default 0.1) for an advantage step to subtract.

Configuration (top-level ``env`` block of the trainer config, verl-agent names): ``max_steps``
(50), ``history_length`` (2), ``invalid_action_penalty_coef`` (0.1), ``use_invalid_action_penalty``
(true), ``step_timeout_s`` (60), ``reset_timeout_s`` (120). Keys given in the agent loop config
file (``actor_rollout_ref.rollout.agent.agent_loop_config_path``) override them.

Env calls run in a worker thread (``asyncio`` is never blocked); an env error or timeout ends
the episode as failed, logs the reason and is recorded in ``extra_fields["env_error"]``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
import time
from typing import Any
from uuid import uuid4

from verl.experimental.agent_loop.agent_loop import AgentLoopBase, AgentLoopOutput, register
from verl.utils.profiler import simple_timer

from verl_sdar.envs.alfworld.prompts import build_prompt, project_action

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

AGENT_NAME = "alfworld"
DEFAULTS = {
    "max_steps": 50,
    "history_length": 2,
    "invalid_action_penalty_coef": 0.1,
    "use_invalid_action_penalty": True,
    "step_timeout_s": 60.0,
    "reset_timeout_s": 120.0,
}
SUCCESS_REWARD = 10.0

# Env calls go to one shared worker thread per process: TextWorld's PDDL backend is not known to be
# thread-safe, steps take milliseconds, and this keeps the event loop free. A call that times out
# leaves its thread stuck, so the executor is replaced and later episodes get a fresh thread.
_executor_lock = threading.Lock()
_executor: concurrent.futures.ThreadPoolExecutor | None = None


def _env_executor() -> concurrent.futures.ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="alfworld-env")
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
    except asyncio.TimeoutError:
        _abandon_executor(executor)
        raise TimeoutError(f"{getattr(fn, '__name__', fn)} took more than {timeout}s") from None


def make_env(max_steps: int):
    """The environment used by the loop (tests may replace this module attribute)."""
    from verl_sdar.envs.alfworld.play import AlfworldEnv

    return AlfworldEnv(max_steps=max_steps)


def _plain(value: Any) -> Any:
    """OmegaConf containers and numpy scalars to plain Python."""
    if hasattr(value, "item") and not isinstance(value, (list, dict, str)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            pass
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(value, (DictConfig, ListConfig)):
            return OmegaConf.to_container(value, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    return value


@register(AGENT_NAME)
class AlfworldAgentLoop(AgentLoopBase):
    """Plays one ALFWorld game; returns one :class:`AgentLoopOutput` per turn."""

    def __init__(self, *args, **kwargs):
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in DEFAULTS}
        kwargs.pop("name", None)
        super().__init__(*args, **kwargs)
        env_cfg = _plain(self.config.get("env", None)) or {}
        self.settings = dict(DEFAULTS)
        self.settings.update({k: env_cfg[k] for k in DEFAULTS if env_cfg.get(k) is not None})
        self.settings.update(overrides)
        self.max_steps = int(self.settings["max_steps"])
        self.history_length = int(self.settings["history_length"])
        self.penalty = (
            float(self.settings["invalid_action_penalty_coef"]) if self.settings["use_invalid_action_penalty"] else 0.0
        )
        self.prompt_length = self.rollout_config.prompt_length
        self.response_length = self.rollout_config.response_length

    async def _render(self, text: str) -> list[int]:
        return await self.ct_build_initial_tokens([{"role": "user", "content": text}])

    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> list[AgentLoopOutput]:
        priority = int(priority)
        extra_info = _plain(kwargs.get("extra_info")) or {}
        game_path = extra_info.get("game_path")
        task_type = extra_info.get("task_type")
        base = {"task_type": task_type, "game_path": game_path}

        episode_start = time.perf_counter()
        env = make_env(self.max_steps)
        outputs: list[AgentLoopOutput] = []
        error = None
        won = False
        try:
            try:
                if not game_path:
                    raise ValueError("row has no extra_info.game_path")
                obs, info = await call_env(env.reset, game_path, timeout=self.settings["reset_timeout_s"])
            except Exception as e:  # noqa: BLE001 - a broken game fails its episode, never the run
                error = f"reset failed: {type(e).__name__}: {e}"
                logger.warning("alfworld episode %s: %s", game_path, error)
                return [await self._failed_reset_output(error, base, _plain(kwargs.get("global_steps")))]

            from verl_sdar.envs.alfworld.play import strip_welcome

            obs = strip_welcome(obs)
            task = info.get("task", "")
            admissible = info["admissible_commands"]
            history: list[tuple[str, str]] = []
            env_time = 0.0
            for turn in range(self.max_steps):
                text = build_prompt(task, obs, admissible, history, self.history_length)
                prompt_ids = await self._render(text)
                metrics: dict[str, Any] = {}
                with simple_timer("generate_sequences", metrics):
                    request_id = (
                        f"det-{priority}-{turn}"
                        if getattr(self.rollout_config, "full_determinism", False)
                        else uuid4().hex
                    )
                    generated = await self.server_manager.generate(
                        request_id=request_id,
                        prompt_ids=prompt_ids,
                        sampling_params=sampling_params,
                        priority=priority,
                    )
                response_ids = list(generated.token_ids)[: self.response_length]
                logprobs = list(generated.log_probs)[: self.response_length] if generated.log_probs else None
                response_text = await self.loop.run_in_executor(
                    None, lambda ids=response_ids: self.tokenizer.decode(ids, skip_special_tokens=True)
                )
                projection = project_action(response_text)

                step_error = None
                t0 = time.perf_counter()
                try:
                    next_obs, _reward, done, info = await call_env(
                        env.step, projection.action, timeout=self.settings["step_timeout_s"]
                    )
                    won = bool(info.get("won", False))
                except Exception as e:  # noqa: BLE001
                    step_error = f"step {turn} failed: {type(e).__name__}: {e}"
                    logger.warning("alfworld episode %s: %s", game_path, step_error)
                    error, done, won, next_obs = step_error, True, False, ""
                env_time += time.perf_counter() - t0
                if turn + 1 >= self.max_steps:
                    done = True

                metrics["num_preempted"] = generated.num_preempted if generated.num_preempted is not None else -1
                outputs.append(
                    AgentLoopOutput(
                        prompt_ids=prompt_ids,
                        response_ids=response_ids,
                        response_mask=[1] * len(response_ids),
                        response_logprobs=logprobs,
                        num_turns=2,
                        metrics=metrics,
                        extra_fields={
                            # server fields first (min/max_global_steps: weight versions used)
                            **dict(generated.extra_fields or {}),
                            **base,
                            "turn": turn,
                            "action": projection.action,
                            "valid": projection.valid,
                            "invalid_reason": projection.reason,
                            "invalid_action_penalty": 0.0 if projection.valid else self.penalty,
                            "won": won,  # updated on every row below once the episode ends
                            "env_error": step_error or "",
                        },
                    )
                )
                if done:
                    break
                history.append((obs, projection.action))
                obs, admissible = next_obs, info["admissible_commands"]
        finally:
            try:
                await call_env(env.close, timeout=10)
            except Exception as e:  # noqa: BLE001
                logger.warning("alfworld: closing env failed: %s", e)

        episode_s = time.perf_counter() - episode_start
        for out in outputs:
            out.extra_fields.update(
                won=won,
                episode_steps=len(outputs),
                episode_error=error or "",
                env_seconds=env_time,
                episode_seconds=episode_s,
                num_turns_total=len(outputs),
                reward_extra_info={},
            )
        return outputs

    async def _failed_reset_output(self, error: str, base: dict, global_steps: Any = None) -> AgentLoopOutput:
        """A single zero-weight row for an episode whose game could not be loaded."""
        prompt_ids = await self._render(f"The ALFWorld game could not be loaded ({error}).")
        eos = self.tokenizer.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        return AgentLoopOutput(
            prompt_ids=prompt_ids,
            response_ids=[eos if eos is not None else 0],
            response_mask=[0],
            response_logprobs=[0.0] if getattr(self.rollout_config, "calculate_log_probs", False) else None,
            num_turns=2,
            metrics={},
            extra_fields={
                # no generation happened: the weight version is the current step's
                "min_global_steps": global_steps,
                "max_global_steps": global_steps,
                **base,
                "turn": 0,
                "action": "",
                "valid": False,
                "invalid_reason": "env_error",
                "invalid_action_penalty": 0.0,
                "won": False,
                "env_error": error,
                "episode_steps": 0,
                "episode_error": error,
                "env_seconds": 0.0,
                "episode_seconds": 0.0,
                "num_turns_total": 1,
                "reward_extra_info": {},
            },
        )
