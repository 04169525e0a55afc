"""Test helpers for driving verl-sdar's agent loops without a rollout server."""

from __future__ import annotations

import asyncio


class FakeServer:
    """Stands in for verl's LLM server client: returns scripted responses, tokenised (+ EOS).

    ``responses`` may hold strings or callables ``prompt_text -> str`` (an oracle that reads
    what the loop showed it).
    """

    def __init__(self, tokenizer, responses):
        self.tokenizer = tokenizer
        self.responses = list(responses)
        self.prompts: list[list[int]] = []
        self.sampling_params: list[dict] = []

    async def generate(self, request_id, prompt_ids, sampling_params, **kwargs):
        from verl.workers.rollout.replica import TokenOutput

        self.prompts.append(list(prompt_ids))
        self.sampling_params.append(dict(sampling_params))
        await asyncio.sleep(0)
        response = self.responses.pop(0) if self.responses else "no idea"
        if callable(response):
            response = response(self.tokenizer.decode(prompt_ids))
        ids = self.tokenizer.encode(response, add_special_tokens=False) + [self.tokenizer.eos_token_id]
        return TokenOutput(token_ids=ids, log_probs=[-1.0] * len(ids), num_preempted=0)


def make_agent_loop(cls, tokenizer, server, env: dict, response_length=512, prompt_length=4096,
                    sdar: dict | None = None, rollout: dict | None = None):
    """An agent loop of class ``cls`` with a minimal trainer config (``env`` and, if given, ``sdar``
    blocks; ``rollout``: more ``actor_rollout_ref.rollout`` keys, e.g. ``full_determinism``)."""
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"prompt_length": prompt_length, "response_length": response_length,
                                              **(rollout or {})}},
            "data": {},
            "env": env,
            **({"sdar": sdar} if sdar is not None else {}),
        }
    )
    return cls(
        trainer_config=DictConfigWrap(config),
        server_manager=server,
        tokenizer=tokenizer,
        processor=None,
        dataset_cls=RLHFDataset,
        data_config=DictConfigWrap(config.data),
    )


def run_episode(make, **row_kwargs):
    """Build the agent loop inside a running event loop (verl binds it to the current loop) and play."""

    async def go():
        return await make().run({"temperature": 1.0}, **row_kwargs)

    return asyncio.run(go())


class LocalHFServer:
    """verl's server client in front of an in-process :class:`~verl_sdar.cpu.hf_rollout.HFRolloutServer`
    (the real hf backend, no Ray): forwards what that server takes and records each request's id
    and sampling params."""

    def __init__(self, server):
        self.server = server
        self.request_ids: list[str] = []
        self.sampling_params: list[dict] = []

    async def generate(self, request_id, prompt_ids, sampling_params, priority=0, **_):
        self.request_ids.append(request_id)
        self.sampling_params.append(dict(sampling_params))
        return await self.server.generate(prompt_ids=prompt_ids, sampling_params=dict(sampling_params),
                                          request_id=request_id, priority=priority)


def run_group(make, n: int, **row_kwargs):
    """Play the ``n`` sessions of one dataset row concurrently, as verl's V1 agent-loop worker does
    (``session_id=0..n-1``, no ``priority``); returns each session's outputs (a list per session)."""

    async def go():
        loops = [make() for _ in range(n)]
        outs = await asyncio.gather(*(loop.run({"temperature": 1.0, "top_p": 1.0, "top_k": -1}, session_id=i,
                                               **row_kwargs) for i, loop in enumerate(loops)))
        return [out if isinstance(out, list) else [out] for out in outs]

    return asyncio.run(go())
