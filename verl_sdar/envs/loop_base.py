"""The part every verl-sdar agent loop shares: settings, invalid-action penalty, response and prompt
budgets, the uncut rendering of a prompt and the search for the longest text that fits, and the
filler token of a response where nothing was generated.

Subclasses set ``DEFAULTS`` (which must hold ``max_steps``, ``history_length``,
``invalid_action_penalty_coef`` and ``use_invalid_action_penalty``); keys of ``DEFAULTS`` given in
the agent-loop config file arrive as constructor keyword arguments and override the trainer
config's top-level ``env`` block (:func:`verl_sdar.envs.common.env_settings`).
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopBase

from verl_sdar.envs.common import env_settings


class EnvAgentLoop(AgentLoopBase):
    """verl's ``AgentLoopBase`` plus the settings of :mod:`verl_sdar.envs` agent loops.

    Attributes set by the constructor: ``settings`` (all of ``DEFAULTS``, layered), ``max_steps``,
    ``history_length``, ``penalty`` (``env.invalid_action_penalty_coef``, or 0 when
    ``env.use_invalid_action_penalty`` is false), ``response_length`` and ``prompt_length`` (the
    rollout's).
    """

    DEFAULTS: dict[str, Any] = {}

    def __init__(self, *args, **kwargs):
        overrides = {k: kwargs.pop(k) for k in list(kwargs) if k in self.DEFAULTS}
        kwargs.pop("name", None)
        super().__init__(*args, **kwargs)
        self.settings = env_settings(self.DEFAULTS, self.config, overrides)
        self.max_steps = int(self.settings["max_steps"])
        self.history_length = int(self.settings["history_length"])
        self.penalty = (
            float(self.settings["invalid_action_penalty_coef"]) if self.settings["use_invalid_action_penalty"] else 0.0
        )
        self.response_length = self.rollout_config.response_length
        self.prompt_length = self.rollout_config.prompt_length

    # ------------------------------------------------------------------ prompt budget
    async def _render_whole(self, text: str) -> list[int]:
        """The chat-template token ids of one user message, uncut (verl's ``ct_build_initial_tokens``
        silently keeps only the last ``prompt_length`` ids, which drops the instructions first)."""
        messages = [{"role": "user", "content": text}]
        return await self.loop.run_in_executor(
            None, lambda: list(self.continuous_token_builder.build_initial_tokens(messages))
        )

    async def _longest_fit(self, length: int, render) -> list[int] | None:
        """``await render(n)`` for the largest ``n`` in ``[0, length]`` whose ids fit the budget (None if none)."""
        lo, hi, best = 0, length, None
        while lo <= hi:
            mid = (lo + hi) // 2
            ids = await render(mid)
            if len(ids) <= self.prompt_length:
                best, lo = ids, mid + 1
            else:
                hi = mid - 1
        return best

    def filler_token_id(self) -> int:
        """The token of a one-token, fully masked response (no generation happened): the
        tokenizer's (first) EOS id, else 0."""
        eos = self.tokenizer.eos_token_id
        eos = eos[0] if isinstance(eos, list) else eos
        return eos if eos is not None else 0
