"""The offline tiny Qwen2 model and tokenizer (verl_sdar.tiny_model)."""

import hashlib

import pytest

from verl_sdar.tiny_model import IM_END, PAD_TOKEN, build_tiny_model


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("tiny"), seed=0)


def test_build_is_deterministic_and_seeded(tiny, tmp_path):
    assert _digest(build_tiny_model(tmp_path / "same", seed=0)) == _digest(tiny)
    other = _digest(build_tiny_model(tmp_path / "other", seed=1))
    assert other["model.safetensors"] != _digest(tiny)["model.safetensors"]
    assert other["tokenizer.json"] == _digest(tiny)["tokenizer.json"]


def test_loads_with_auto_classes_and_chat_template(tiny):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == IM_END and tokenizer.pad_token == PAD_TOKEN
    assert model.config.eos_token_id == tokenizer.eos_token_id

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+3?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    )
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.convert_ids_to_tokens(ids[0]) == "<|im_start|>"
    # transformers loads the folder as Qwen2Tokenizer; its pipeline must match the trained tokenizer.json
    raw = Tokenizer.from_file(str(tiny / "tokenizer.json"))
    for sample in ["Hello wörld, 123 + 456 = 579! #### 579", "go to countertop 1.\n  take mug 2"]:
        assert raw.encode(sample).ids == tokenizer.encode(sample)
        assert tokenizer.decode(tokenizer.encode(sample)) == sample


def test_cli(tmp_path):
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "verl_sdar.tiny_model", str(tmp_path / "m"), "--seed", "3", "--hidden-size", "32"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().endswith("m")
    assert (tmp_path / "m" / "model.safetensors").exists()
    assert '"hidden_size": 32' in (tmp_path / "m" / "config.json").read_text()
