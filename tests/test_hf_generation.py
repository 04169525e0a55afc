"""Token-in/token-out generation behind the hf rollout (verl_sdar.cpu.hf_generation), no Ray."""

import pytest
import torch
import verl  # noqa: F401  (first, so the plugin entry point registers verl_sdar.cpu in order)

from verl_sdar.cpu.hf_generation import HFGenerator, parse_sampling_params, sample_next_tokens
from verl_sdar.tiny_model import build_tiny_model

LENGTHS = {"prompt_length": 64, "response_length": 12, "max_model_len": 2048}
PROMPTS = [[1, 87, 388, 201, 462, 2, 1], [5, 6, 7], [9] * 10]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    path = build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)
    return AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa").eval()


@pytest.fixture
def generator(model):
    return HFGenerator(model, eos_token_ids=[model.config.eos_token_id], pad_token_id=0)


def spec(params, prompt_len=7, **lengths):
    return parse_sampling_params(params, prompt_len, **{**LENGTHS, **lengths})


def test_parse_sampling_params_defaults_and_budget():
    s = spec({"temperature": 0, "top_k": -1, "top_p": 1.0, "logprobs": True})
    assert s.greedy and s.logprobs and s.max_tokens == 12 and s.prompt_logprobs is None
    # without max_tokens: min(response_length, prompt_length + response_length - prompt_len)
    assert spec({}, prompt_len=70).max_tokens == 6
    assert spec({"max_tokens": 100}).max_tokens == 100
    assert spec({"max_new_tokens": 3}).max_tokens == 3
    assert spec({"max_tokens": 100}, prompt_len=2040).max_tokens == 8  # room left in the context
    assert not spec({"logprobs": 0}).logprobs  # vLLM semantics: logprobs=0 means none
    with pytest.raises(ValueError, match="no room"):
        spec({}, prompt_len=2048)
    assert spec({"temperature": 0.7}).batch_key != spec({"temperature": 0.8}).batch_key
    assert spec({"max_tokens": 1}).batch_key == spec({"max_tokens": 5}).batch_key


def test_greedy_batch_matches_single_requests_and_transformers_generate(model, generator):
    s = spec({"temperature": 0, "logprobs": True})
    batch = generator.generate(PROMPTS, [s] * len(PROMPTS))
    for prompt, result in zip(PROMPTS, batch, strict=True):
        single = generator.generate([prompt], [s])[0]
        assert result.token_ids == single.token_ids
        assert torch.allclose(torch.tensor(result.log_probs), torch.tensor(single.log_probs), atol=1e-4)
        reference = model.generate(
            torch.tensor([prompt]),
            max_new_tokens=12,
            do_sample=False,
            eos_token_id=model.config.eos_token_id,
            pad_token_id=0,
            output_scores=True,
            return_dict_in_generate=True,
        )
        tokens = reference.sequences[0, len(prompt) :].tolist()
        assert result.token_ids == tokens
        expected = [
            torch.log_softmax(score[0].float(), -1)[t].item() for score, t in zip(reference.scores, tokens, strict=True)
        ]
        assert torch.allclose(torch.tensor(result.log_probs), torch.tensor(expected), atol=1e-4)
        assert result.finish_reason in ("stop", "length")


def test_sampled_log_probs_are_those_of_the_processed_distribution(model, generator):
    torch.manual_seed(0)
    s = spec({"temperature": 0.7, "top_k": 40, "top_p": 0.9, "logprobs": True, "max_tokens": 6})
    result = generator.generate([PROMPTS[1]], [s])[0]
    sequence = torch.tensor([PROMPTS[1] + result.token_ids])
    logits = model(sequence).logits[0, len(PROMPTS[1]) - 1 : -1]
    recomputed = []
    for row, token in zip(logits, result.token_ids, strict=True):
        filtered = row.float() / 0.7
        kth = torch.topk(filtered, 40).values[-1]
        filtered = filtered.masked_fill(filtered < kth, float("-inf"))
        probs = torch.softmax(filtered, -1)
        order = torch.argsort(probs, descending=True)
        keep = torch.cumsum(probs[order], 0) - probs[order] < 0.9
        mask = torch.full_like(probs, float("-inf"))
        mask[order[keep]] = 0
        recomputed.append(torch.log_softmax(filtered + mask, -1)[token].item())
    assert torch.allclose(torch.tensor(result.log_probs), torch.tensor(recomputed), atol=1e-4)


def test_top_k_one_is_greedy_and_max_tokens_and_eos_are_honoured(generator):
    greedy = generator.generate(PROMPTS, [spec({"temperature": 0, "max_tokens": 5})] * 3)
    top1 = generator.generate(PROMPTS, [spec({"temperature": 1.0, "top_k": 1, "max_tokens": 5})] * 3)
    assert [r.token_ids for r in greedy] == [r.token_ids for r in top1]
    assert all(len(r.token_ids) <= 5 and r.log_probs is None for r in greedy)
    # per-row budgets inside one batch
    mixed = generator.generate(PROMPTS[:2], [spec({"temperature": 0, "max_tokens": 2}), spec({"temperature": 0})])
    assert len(mixed[0].token_ids) <= 2
    # a stop token ends the response (and is kept)
    first = greedy[0].token_ids[0]
    stopped = generator.generate([PROMPTS[0]], [spec({"temperature": 0, "stop_token_ids": [first]})])[0]
    assert stopped.token_ids == [first] and stopped.finish_reason == "stop"
    ignored = generator.generate(
        [PROMPTS[0]], [spec({"temperature": 0, "stop_token_ids": [first], "ignore_eos": True, "max_tokens": 4})]
    )[0]
    assert len(ignored.token_ids) == 4


def test_repetition_penalty_changes_the_distribution():
    logits = torch.tensor([[2.0, 1.0, -1.0]])
    seen = torch.tensor([[True, False, True]])
    s = spec({"temperature": 0, "repetition_penalty": 4.0})
    token, log_prob = sample_next_tokens(logits, s, seen)
    assert token.item() == 1  # 2.0 -> 0.5 drops below the unseen 1.0
    assert torch.isclose(log_prob, torch.log_softmax(torch.tensor([0.5, 1.0, -4.0]), -1)[1])


def test_prompt_logprobs(model, generator):
    prompt = PROMPTS[0]
    s0 = spec({"max_tokens": 1, "prompt_logprobs": 0})
    result = generator.generate([prompt], [s0])[0]
    assert len(result.prompt_ids) == len(result.prompt_logprobs) == len(prompt)
    assert [row[0] for row in result.prompt_ids[:-1]] == prompt[1:]
    expected = torch.log_softmax(model(torch.tensor([prompt])).logits[0, :-1].float(), -1)
    expected = expected.gather(-1, torch.tensor(prompt[1:])[:, None]).squeeze(-1)
    assert torch.allclose(torch.tensor([row[0] for row in result.prompt_logprobs[:-1]]), expected, atol=1e-4)
    assert result.prompt_logprobs[-1] == [0.0]
    top3 = generator.generate([prompt], [spec({"max_tokens": 1, "prompt_logprobs": 3})])[0]
    assert all(len(row) == 3 for row in top3.prompt_ids)
    assert all(row[0] >= row[1] >= row[2] for row in top3.prompt_logprobs[:-1])


def test_abort_returns_partial_output(generator):
    calls = iter([False, False, True])
    result = generator.generate([PROMPTS[1]], [spec({"temperature": 0, "ignore_eos": True})], lambda: next(calls))[0]
    assert result.finish_reason == "abort" and len(result.token_ids) == 2


def test_weight_updates(model):
    from transformers import AutoModelForCausalLM

    clone = AutoModelForCausalLM.from_config(model.config).eval()
    generator = HFGenerator(clone, eos_token_ids=[2], pad_token_id=0)
    state = model.state_dict()
    generator.load_weights((name, state[name].double()) for name in state)  # cast on copy
    generator.finish_weight_update()
    assert torch.equal(clone.lm_head.weight, clone.model.embed_tokens.weight)  # tied weights stay tied
    s = spec({"temperature": 0})
    original = HFGenerator(model, eos_token_ids=[2], pad_token_id=0)
    assert [r.token_ids for r in generator.generate(PROMPTS, [s] * 3)] == [
        r.token_ids for r in original.generate(PROMPTS, [s] * 3)
    ]

    generator.load_weights([("model.norm.weight", state["model.norm.weight"])])
    with pytest.raises(RuntimeError, match="stale"):
        generator.finish_weight_update()
    with pytest.raises(KeyError, match="does not have"):
        generator.load_weights([("not.a.weight", torch.zeros(1))])
    with pytest.raises(ValueError, match="shape"):
        generator.load_weights([("model.norm.weight", torch.zeros(3))])
