"""Build a tiny Qwen2-architecture causal LM with a local tokenizer, offline, in seconds.

No pretrained model can be downloaded here, so tests and the CPU demo use this one: randomly
initialised (deterministic from the seed), a byte-level BPE tokenizer trained on a small built-in
corpus, special tokens ``<|endoftext|>`` (padding), ``<|im_start|>``, ``<|im_end|>`` (end of turn
and EOS), and a Qwen-style ChatML chat template. Everything is written with ``save_pretrained``, so
``AutoTokenizer`` / ``AutoModelForCausalLM`` (and verl) load the directory like any HF model.

    python -m verl_sdar.tiny_model OUT [--seed 0] [--vocab-size 1024] [--hidden-size 64]
        [--num-layers 2] [--max-position-embeddings 2048] [--head-dim 16]

``--head-dim 32`` (2 heads, 1 KV head at the default width) is the variant vLLM's CPU attention
accepts (it rejects head dimension 16); the default model keeps head dimension 16.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
"""ChatML as in Qwen's template (without the default system message): one block per message."""

_CORPUS = (
    "You are a helpful assistant. Please reason step by step, and put your final answer after ####.",
    "What is 2 + 3? The answer is 5. #### 5",
    "Natalia sold 48 clips in April and half as many in May. 48 / 2 = 24. 48 + 24 = 72. #### 72",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 20 30 40 50 100 1000 + - * / = < > ( ) . , : ; ! ? ' \"",
    "Reply with the secret code word. The secret code word is one word from the list.",
    "red green blue yellow black white orange purple brown pink gray",
    "cat dog bird fish horse mouse cow sheep lion tiger bear",
    "apple pear plum grape lemon melon banana orange cherry peach",
    "You are in the middle of a room. Looking quickly around you, you see a cabinet, a countertop,"
    " a drawer, a fridge, a microwave, a sinkbasin, a stoveburner, a shelf and a garbagecan.",
    "Your task is to: put a clean mug in the coffeemachine. Think, then act.",
    "go to countertop 1. take mug 1 from countertop 1. clean mug 1 with sinkbasin 1.",
    "open fridge 1. close fridge 1. heat egg 1 with microwave 1. cool apple 1 with fridge 1.",
    "put mug 1 in/on coffeemachine 1. use desklamp 1. examine book 2. look. inventory.",
    "Nothing happens. You arrive at the countertop. You pick up the mug. The fridge is open.",
    "search for the capital of the country, then answer with the name of the city.",
    "the a an is are was were be of to in on at for with from by as and or not this that it",
    "question answer reason think action observation reward success failure task goal step",
    "system user assistant tool message content role",
)


def _train_tokenizer(vocab_size: int, extra_corpus: Iterable[str] = ()):
    """Byte-level BPE trained on the built-in corpus plus ``extra_corpus`` (deterministic)."""
    return train_tokenizer(list(_CORPUS) * 4 + list(extra_corpus), vocab_size)


def train_tokenizer(corpus: Iterable[str], vocab_size: int):
    """A byte-level BPE trained on ``corpus``, with the ChatML template, wrapped for transformers.

    The normalizer and pre-tokenizer are Qwen2's (NFC, Qwen's split regex, byte-level), because
    ``AutoTokenizer`` loads a ``qwen2`` model directory with ``Qwen2Tokenizer``, which installs them.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer)
    hf_tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=IM_END,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
    )
    hf_tokenizer.chat_template = CHAT_TEMPLATE
    return hf_tokenizer


def build_tiny_model(
    out_dir: str | Path,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    max_position_embeddings: int = 2048,
    extra_corpus: Iterable[str] = (),
    head_dim: int = 16,
) -> Path:
    """Write a tiny Qwen2 causal LM, its tokenizer and chat template to ``out_dir``; return the path.

    Args:
        out_dir: output directory (created; existing files are overwritten).
        seed: seed of the weight initialisation (same seed, same weights).
        vocab_size: target size of the BPE vocabulary (the model's vocabulary is the tokenizer's
            actual size, which the small corpus may keep below this).
        hidden_size: model width; must be a multiple of ``head_dim``.
        num_layers: number of decoder layers.
        max_position_embeddings: context length.
        extra_corpus: more texts for the tokenizer (e.g. the prompts of a task, so they tokenise short).
        head_dim: dimension of one attention head (``hidden_size // head_dim`` heads, half as many
            KV heads when that is even). vLLM's CPU attention runs ``head_dim=32``; ``head_dim=16``
            fails there with "Unsupported CPU attention configuration: head_dim=16".
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if head_dim <= 0 or hidden_size % head_dim:
        raise ValueError(f"hidden_size must be a multiple of head_dim={head_dim}, got {hidden_size}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = _train_tokenizer(vocab_size, extra_corpus)
    tokenizer.model_max_length = max_position_embeddings
    tokenizer.save_pretrained(out)

    num_heads = hidden_size // head_dim
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads // 2 if num_heads % 2 == 0 else num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", help="output directory")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    parser.add_argument("--max-position-embeddings", type=int, default=2048)
    parser.add_argument("--head-dim", type=int, default=16, help="attention head dimension (vLLM on CPU: 32)")
    parser.add_argument("--corpus", default=None, help="a text file whose lines are added to the tokenizer corpus")
    args = parser.parse_args(argv)
    extra = Path(args.corpus).read_text(encoding="utf-8").splitlines() if args.corpus else ()
    path = build_tiny_model(
        args.out,
        seed=args.seed,
        vocab_size=args.vocab_size,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        max_position_embeddings=args.max_position_embeddings,
        extra_corpus=extra,
        head_dim=args.head_dim,
    )
    print(path)


if __name__ == "__main__":
    main()
