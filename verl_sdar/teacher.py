"""Privileged (teacher) sequences, built at token level.

The teacher is the student policy with privileged text ``c+`` in its prompt. For each training row
we take the student's prompt ids, insert the pre-tokenised privileged block, and keep the response
ids byte-identical, so the teacher scores exactly the tokens the student sampled. No decode /
re-encode of the prompt happens; each distinct privileged text is tokenised once (cached).

Placement (for now): the block is a system turn rendered by the tokenizer's own chat template,
inserted at the very start of the prompt (after a leading BOS token if the template emits one).
An empty privileged text inserts nothing, so the teacher sequence equals the student's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["PrivilegedBlocks", "TeacherRows", "build_teacher_rows", "privileged_texts"]


def privileged_texts(extra_infos: Sequence[Any], key: str) -> list[str]:
    """The privileged text of each row, read from ``extra_info[key]``.

    A row whose ``extra_info`` lacks the key is an error (a silent "no context" would make the
    teacher equal the student without anyone noticing); an empty string is allowed.
    """
    texts = []
    for i, info in enumerate(extra_infos):
        if not isinstance(info, dict) or key not in info:
            raise KeyError(
                f"row {i}: extra_info has no privileged-text field {key!r} (sdar.privileged.key); "
                f"got {sorted(info) if isinstance(info, dict) else type(info).__name__}"
            )
        value = info[key]
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise TypeError(f"row {i}: extra_info[{key!r}] must be a string, got {type(value).__name__}")
        texts.append(value)
    return texts


class PrivilegedBlocks:
    """Token ids of the privileged block for a text, tokenised once per distinct text."""

    def __init__(self, tokenizer, header: str = ""):
        self.tokenizer = tokenizer
        self.header = header
        self.bos_token_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self._cache: dict[str, list[int]] = {"": []}

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = self._render(self.header + text)
            self._cache[text] = ids
        return ids

    def _render(self, content: str) -> list[int]:
        messages = [{"role": "system", "content": content}]
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=False)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
        else:
            ids = self.tokenizer.encode(content + "\n\n", add_special_tokens=False)
        ids = list(ids)
        if not ids:
            raise ValueError(f"privileged text {content[:40]!r} tokenised to nothing")
        return ids


@dataclass
class TeacherRows:
    """Per-row teacher tensors (1-D each) plus bookkeeping."""

    input_ids: list[torch.Tensor]
    prompts: list[torch.Tensor]
    attention_mask: list[torch.Tensor]
    position_ids: list[torch.Tensor]
    inserted_tokens: list[int]


def build_teacher_rows(
    prompts: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    blocks: Sequence[Sequence[int]],
    bos_token_id: int | None = None,
) -> TeacherRows:
    """Insert each row's privileged block into its prompt; responses are kept as they are.

    Row i becomes ``[bos?] + block_i + prompt_i[bos?:] + response_i``. Position ids run 0..n-1
    (plain causal LMs; multimodal rope layouts are rejected by the caller).
    """
    if not (len(prompts) == len(responses) == len(blocks)):
        raise ValueError(f"row counts differ: {len(prompts)} prompts, {len(responses)} responses, {len(blocks)} blocks")
    out = TeacherRows([], [], [], [], [])
    block_cache: dict[int, torch.Tensor] = {}
    for prompt, response, block in zip(prompts, responses, blocks):
        prompt = prompt.reshape(-1).to(torch.int64)
        if len(block):
            key = id(block)
            b = block_cache.get(key)
            if b is None:
                b = block_cache[key] = torch.as_tensor(list(block), dtype=torch.int64)
            if bos_token_id is not None and len(prompt) and int(prompt[0]) == bos_token_id:
                if int(b[0]) == bos_token_id:
                    b = b[1:]
                new_prompt = torch.cat([prompt[:1], b, prompt[1:]])
            else:
                new_prompt = torch.cat([b, prompt])
        else:
            new_prompt = prompt
        ids = torch.cat([new_prompt, response.reshape(-1).to(torch.int64)])
        out.prompts.append(new_prompt)
        out.input_ids.append(ids)
        out.attention_mask.append(torch.ones_like(ids))
        out.position_ids.append(torch.arange(ids.numel(), dtype=torch.int64))
        out.inserted_tokens.append(int(new_prompt.numel() - prompt.numel()))
    return out
