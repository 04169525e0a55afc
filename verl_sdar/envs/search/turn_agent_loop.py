"""Search-QA with one training row per turn (verl-agent style): the paper's Search setup.

Selected by ``env.turn_rows: true`` (or ``turn_rows: true`` in the agent-loop config entry) on the
``search`` agent name: constructing :class:`~verl_sdar.envs.search.agent_loop.SearchAgentLoop`
then returns a :class:`SearchTurnAgentLoop`; dataset rows are the same in both modes.

Each turn the prompt is rebuilt from scratch as one user message
(:func:`verl_sdar.envs.search.prompts.turn_prompt`): the rules, the question, where the episode
stands, and the last ``env.history_length`` turns, each with its action and what came back (the
retrieved documents inside ``<information>``). The response is parsed like the single-row loop's
(:func:`~verl_sdar.envs.search.prompts.parse_action`, first block wins):

* ``<search> q </search>``: the retriever's top-k passages become the observation shown in the
  following prompts (not retrieved on the last turn: no prompt would show them);
* ``<answer> a </answer>``: the episode ends; ``a`` is scored by exact match;
* no action: nothing runs; the next prompt shows the invalid-action hint.

An invalid response (``env.action_rules``, :mod:`.prompts`: by default the reference's, no block,
both tags, or more than one of either; ``ours``: no block, an empty or a nested one) carries
``extra_fields["invalid_action_penalty"] = env.invalid_action_penalty_coef`` (0.01), which the
SDAR trainer subtracts from that row's reward (:mod:`verl_sdar.advantages`, the only place); the
episode goes on. With the reference's rules the row's response is the whole generation; with
``ours`` the tokens after the action's closing tag are cut (Search-R1 stops generation there). A
response longer than the rollout's ``response_length`` is cut to it.

One :class:`AgentLoopOutput` per turn (at most ``env.max_steps``): prompt = that turn's prompt
(never longer than the rollout's ``prompt_length``: the oldest shown turns are dropped first, then
the latest observation and finally the question are shortened; a skill prefix is never cut),
response = that turn's generation, ``response_mask`` all 1. The student's prompt holds no skills
unless :meth:`SearchTurnAgentLoop.student_prefix` (the Skill-GRPO hook) returns some. Every row
carries ``won`` and the episode's ``answer``, ``searches``, ``invalid_turns``; the reward function
scores the last row (EM) and verl 0.9.1 copies that score to every earlier turn row of the
episode (:mod:`verl_sdar.envs.turn_loop`). Train with ``algorithm.adv_estimator=turn_row_grpo`` (GRPO
statistics over every turn row of a group, as verl-agent does).

Configuration: as the single-row loop (``max_steps`` 4, ``history_length`` 4,
``invalid_action_penalty_coef`` 0.01, ``use_invalid_action_penalty``, ``action_rules``
``reference``, ``retriever``); any
``history_length`` >= 0 is allowed here.
"""

from __future__ import annotations

import time
from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput
from verl.utils.profiler import simple_timer

from verl_sdar.envs.common import plain
from verl_sdar.envs.contract import (
    ACTION,
    ANSWER,
    ENV_ERROR,
    ENV_SECONDS,
    EPISODE_ERROR,
    EPISODE_SECONDS,
    EPISODE_STEPS,
    ERROR_KIND,
    INVALID_ACTION_PENALTY,
    INVALID_REASON,
    INVALID_TURNS,
    NUM_TURNS_TOTAL,
    QUESTION,
    RETRIEVAL_SECONDS,
    REWARD_EXTRA_INFO,
    SEARCHES,
    TURN,
    VALID,
    WON,
)
from verl_sdar.envs.search.loop_common import DEFAULTS as EPISODE_DEFAULTS
from verl_sdar.envs.search.loop_common import action_rules, cut_after, open_retriever, retrieve
from verl_sdar.envs.search.prompts import (
    Turn,
    clip_text,
    clip_turn,
    invalid_turn,
    parse_action,
    search_turn,
    turn_prompt,
)
from verl_sdar.envs.search.reward import exact_match, golden_answers
from verl_sdar.envs.turn_loop import TurnRowAgentLoop
from verl_sdar.privileged import student_turn_prefix
from verl_sdar.request_identity import request_identity

DEFAULTS: dict[str, Any] = {**EPISODE_DEFAULTS, "turn_rows": True}


class SearchTurnAgentLoop(TurnRowAgentLoop):
    """Answers one question with search calls; returns one :class:`AgentLoopOutput` per turn."""

    ENV_NAME = "search"
    DEFAULTS = DEFAULTS

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.max_steps < 1:
            raise ValueError(f"env.max_steps must be >= 1, got {self.max_steps}")
        self.retriever, self.topk, self.retrieval_timeout = open_retriever(self.settings)
        self.action_rules = action_rules(self.settings)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    # ------------------------------------------------------------------ the student's prompt
    def student_prefix(self, row: dict, extra_info: dict, question: str, history: list[Turn]) -> str:
        """Text put in front of the user message of the turn after ``history`` ("": none, the SDAR
        student's case).

        Skill-GRPO (``sdar.student_prompt=true``): the reference's ``[Privileged Skill Information]``
        block for the row, as in the other turn loops: with ``sdar.student_skills=per_turn`` chosen
        from this turn's whole user message, else from the question (the same every turn). None
        for a row flagged ``NO_STUDENT_SKILLS``. :meth:`fit_prompt` never cuts it.
        """
        return student_turn_prefix(self.student_privileged, row, extra_info, question,
                                   lambda: turn_prompt(question, history, self.max_steps, self.history_length))

    async def fit_prompt(self, question: str, history: list[Turn], prefix: str = "") -> list[int]:
        """The token ids of the turn prompt (``prefix`` + :func:`turn_prompt`), at most
        ``prompt_length`` of them.

        Over budget, the oldest shown turns are dropped one by one; if the latest alone is still too
        long its observation is shortened, then (no turn shown) the question; the prefix and the
        instructions are never cut (``ValueError`` if they alone exceed the budget).
        """
        budget = self.prompt_length

        async def render(q: str, past: list[Turn], shown: int) -> list[int]:
            return await self._render_whole(prefix + turn_prompt(q, past, self.max_steps, self.history_length, shown))

        window = min(max(self.history_length, 0), len(history))
        for shown in range(window, 0, -1):
            ids = await render(question, history, shown)
            if len(ids) <= budget:
                return ids
        if window:
            ids = await self._longest_fit(
                len(history[-1].observation), lambda n: render(question, [*history[:-1], clip_turn(history[-1], n)], 1)
            )
            if ids is not None:
                return ids
        ids = await render(question, history, 0)
        if len(ids) <= budget:
            return ids
        ids = await self._longest_fit(len(question), lambda n: render(clip_text(question, n), history, 0))
        if ids is None:
            raise ValueError(
                f"search turn prompt: the instructions{' and the prefix' if prefix else ''} alone take more "
                f"than the prompt budget of {budget} tokens (data.max_prompt_length)"
            )
        return ids

    # ------------------------------------------------------------------ episode
    async def run(self, sampling_params: dict[str, Any], priority: int = 0, **kwargs) -> list[AgentLoopOutput]:
        priority = int(priority)
        row = {**kwargs, "priority": priority}
        extra_info = plain(kwargs.get("extra_info")) or {}
        reward_model = plain(kwargs.get("reward_model")) or {}
        question = extra_info.get(QUESTION)
        if not question:
            raise ValueError("search agent loop: the row has no extra_info.question")
        answers = golden_answers(reward_model.get("ground_truth"))
        base = self.row_fields(extra_info)

        start = time.perf_counter()
        history: list[Turn] = []
        outputs: list[AgentLoopOutput] = []
        answer = None
        searches = invalid = 0
        retrieval_s = 0.0
        fault = ""  # the kind of the episode's first failed retrieval
        for turn in range(self.max_steps):
            prefix = self.student_prefix(row, extra_info, question, history)
            prompt_ids = await self.fit_prompt(question, history, prefix)
            metrics: dict[str, Any] = {}
            with simple_timer("generate_sequences", metrics):
                identity = request_identity(self.rollout_config, row, turn, prompt_ids)
                generated = await self.server_manager.generate(
                    request_id=identity.request_id, prompt_ids=prompt_ids,
                    sampling_params=identity.sampling_params(sampling_params), priority=priority,
                )
            ids = list(generated.token_ids)[: self.response_length]
            # an empty list (nothing generated) still means log-probs were asked for: keep a list
            logprobs = list(generated.log_probs)[: len(ids)] if generated.log_probs is not None else None
            text = await self.loop.run_in_executor(None, self._decode, ids)
            action = parse_action(text, self.action_rules)
            # ours: drop what follows the action's closing tag (the reference trains on the whole response)
            if self.action_rules == "ours" and action.kind != "invalid":
                keep = await self.loop.run_in_executor(None, cut_after, self._decode, ids, action.end, len(text))
                ids = ids[:keep]
                logprobs = logprobs[:keep] if logprobs is not None else None

            step_error = ""
            entry: Turn | None = None
            if action.kind == "answer":
                answer = action.content
                action_text = f"<answer> {answer} </answer>"
            elif action.kind == "search":
                searches += 1
                action_text = f"<search> {action.content} </search>"
                if turn + 1 < self.max_steps:  # the last turn's results would never be shown
                    results, step_error, seconds, kind = await retrieve(
                        self.retriever, action.content, self.topk, self.retrieval_timeout
                    )
                    retrieval_s += seconds
                    fault = fault or kind
                    entry = search_turn(action.content, results)
            else:
                action_text = ""
                entry = invalid_turn(action.reason)
            if not action.valid:
                invalid += 1

            mask = [1] * len(ids)
            if not ids:  # nothing generated: one masked filler token keeps the row well formed
                ids, mask = [self.filler_token_id()], [0]
                logprobs = [0.0] if logprobs is not None else None
            valid = action.valid
            metrics["num_preempted"] = generated.num_preempted if generated.num_preempted is not None else -1
            outputs.append(
                AgentLoopOutput(
                    prompt_ids=prompt_ids,
                    response_ids=ids,
                    response_mask=mask,
                    response_logprobs=logprobs,
                    num_turns=2,
                    metrics=metrics,
                    extra_fields={
                        # server fields first (min/max_global_steps: weight versions used)
                        **dict(generated.extra_fields or {}),
                        **base,
                        TURN: turn,
                        ACTION: action_text,
                        VALID: valid,
                        INVALID_REASON: "" if valid else action.reason,
                        INVALID_ACTION_PENALTY: 0.0 if valid else self.penalty,
                        WON: False,  # the episode's result, set on every row below
                        ENV_ERROR: step_error,
                    },
                )
            )
            if answer is not None:
                break
            if entry is not None:
                history.append(entry)

        won = answer is not None and exact_match(answer, answers) == 1.0
        episode_s = time.perf_counter() - start
        for out in outputs:
            out.extra_fields.update(
                {
                    WON: won,
                    ANSWER: answer,
                    SEARCHES: searches,
                    INVALID_TURNS: invalid,
                    RETRIEVAL_SECONDS: retrieval_s,
                    EPISODE_STEPS: len(outputs),
                    EPISODE_ERROR: "",
                    ERROR_KIND: fault,
                    ENV_SECONDS: retrieval_s,
                    EPISODE_SECONDS: episode_s,
                    NUM_TURNS_TOTAL: len(outputs),
                    REWARD_EXTRA_INFO: {},
                }
            )
        return outputs
