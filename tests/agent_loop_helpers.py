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
                    sdar: dict | None = None):
    """An agent loop of class ``cls`` with a minimal trainer config (``env`` and, if given, ``sdar`` blocks)."""
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create(
        {
            "actor_rollout_ref": {"rollout": {"prompt_length": prompt_length, "response_length": response_length}},
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
