"""Privileged (teacher) sequences, built at token level.

The teacher is the student policy with privileged text ``c+`` in its prompt. For each training row
we take the student's prompt ids, insert the pre-tokenised privileged block, and keep the response
ids byte-identical, so the teacher scores exactly the tokens the student sampled. No prompt is
decoded or re-encoded; each distinct privileged text is tokenised once (cached).

Block: one chat turn (``role``: system or user) holding ``header + text``, rendered by the
tokenizer's own chat template. Placement:

* ``start``: at the very start of the prompt (after a leading BOS token);
* ``before_last_user``: right before the last user turn, so a template's default system prompt
  and earlier turns stay first. Both equal what the chat template renders for the same messages
  with the block inserted there (tested).

Length policy (never silent): the privileged block is never dropped or cut, nor is the response.
When a teacher prompt exceeds ``max_prompt_length``, the oldest tokens of the user message that
follows the block are removed (right after that turn's header, so the chat stays well-formed; in
the verl-agent prompt layout that is where the oldest context sits), and the row is counted as
truncated. A block that does not fit even then is an error.
An empty privileged text inserts nothing: the teacher sequence equals the student's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .names import PLACEMENTS

__all__ = [
    "PLACEMENTS",
    "PrivilegedBlocks",
    "TeacherBuilder",
    "TeacherRows",
    "build_teacher_rows",
    "privileged_texts",
    "strip_left_padding",
]

_SENTINEL = "\u2063SDAR-SENTINEL\u2063"


def privileged_texts(extra_infos: Sequence[Any], key: str) -> list[str]:
    """The privileged text of each row, read from ``extra_info[key]``.

    A row whose ``extra_info`` lacks the key is an error (a silent "no context" would make the
    teacher equal the student without anyone noticing); an empty string or None means no context.
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


def _chat_ids(tokenizer, messages: list[dict], **kwargs) -> list[int]:
    ids = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    if hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def _find_last(haystack: list[int], needle: list[int]) -> int:
    n = len(needle)
    for start in range(len(haystack) - n, -1, -1):
        if haystack[start : start + n] == needle:
            return start
    return -1


class PrivilegedBlocks:
    """Token ids of the privileged block for a text (cached) and where to insert it in a prompt.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        header: text placed before the privileged text inside the block.
        role: chat role of the block, ``system`` or ``user``.
        placement: one of ``PLACEMENTS``.
    """

    def __init__(self, tokenizer, header: str = "", role: str = "system", placement: str = "start"):
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
        if role not in ("system", "user"):
            raise ValueError(f"role must be 'system' or 'user', got {role!r}")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; privileged blocks are rendered as a chat turn")
        self.tokenizer = tokenizer
        self.header = header
        self.role = role
        self.placement = placement
        self.bos_token_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self._cache: dict[str, list[int]] = {"": []}
        self._user_header = self._turn_header_ids("user")
        self.tail_length = self._generation_tail_length()

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            ids = _chat_ids(self.tokenizer, [{"role": self.role, "content": self.header + text}])
            if self.bos_token_id is not None and ids and ids[0] == self.bos_token_id:
                ids = ids[1:]  # the prompt already has its BOS; the block goes after it
            if not ids:
                raise ValueError(f"privileged text {text[:40]!r} tokenised to nothing")
            self._cache[text] = ids
        return ids

    def _turn_header_ids(self, role: str) -> list[int]:
        """Ids that open a ``role`` turn after an earlier turn (e.g. ``<|im_start|>user\\n``).

        Found by rendering one conversation and the same conversation plus a ``role`` turn: the
        header is what the second adds before its content (so BOS or a default system prompt,
        which both renderings share, is not part of it).
        """
        first = [{"role": "user", "content": "a"}]
        one = self.tokenizer.apply_chat_template(first, tokenize=False)
        two = self.tokenizer.apply_chat_template(first + [{"role": role, "content": _SENTINEL}], tokenize=False)
        if not two.startswith(one) or _SENTINEL not in two:
            raise ValueError(f"cannot locate {role!r} turns in this chat template (renderings are not incremental)")
        header_text = two[len(one) :].split(_SENTINEL)[0]
        ids = self.tokenizer.encode(header_text, add_special_tokens=False)
        if not ids:
            raise ValueError(f"could not find how this chat template opens a {role!r} turn")
        return ids

    def _generation_tail_length(self) -> int:
        """Tokens after a user message's content up to the generation prompt (end-of-turn + assistant header)."""
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": _SENTINEL}], tokenize=False, add_generation_prompt=True
        )
        return len(self.tokenizer.encode(text.split(_SENTINEL)[-1], add_special_tokens=False))

    def insertion_index(self, prompt: list[int]) -> int:
        """Where the block goes in ``prompt`` (a list of ids without padding)."""
        if self.placement == "start":
            return 1 if (self.bos_token_id is not None and prompt[:1] == [self.bos_token_id]) else 0
        index = _find_last(prompt, self._user_header)
        if index < 0:
            raise ValueError("placement 'before_last_user': the prompt has no user turn for this chat template")
        return index

    def cut_index(self, prompt: list[int], insert_at: int) -> int:
        """Where over-budget context removal starts: after the first user-turn header at or after
        ``insert_at`` (the oldest content of the user message that follows the block)."""
        n = len(self._user_header)
        for start in range(insert_at, len(prompt) - n + 1):
            if prompt[start : start + n] == self._user_header:
                return start + n
        return insert_at


@dataclass
class TeacherRows:
    """Per-row teacher tensors (1-D each, no padding) plus bookkeeping."""

    input_ids: list[torch.Tensor] = field(default_factory=list)
    prompts: list[torch.Tensor] = field(default_factory=list)
    attention_mask: list[torch.Tensor] = field(default_factory=list)
    position_ids: list[torch.Tensor] = field(default_factory=list)
    inserted_tokens: list[int] = field(default_factory=list)
    removed_context_tokens: list[int] = field(default_factory=list)

    @property
    def truncated(self) -> list[bool]:
        return [n > 0 for n in self.removed_context_tokens]


def strip_left_padding(ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """The real tokens of a (possibly left-padded) 1-D prompt."""
    ids = ids.reshape(-1)
    if attention_mask is None:
        return ids
    return ids[attention_mask.reshape(-1).bool()]


def build_teacher_rows(
    prompts: Sequence[torch.Tensor],
    responses: Sequence[torch.Tensor],
    blocks: Sequence[Sequence[int]],
    insert_at: Sequence[int],
    *,
    cut_from: Sequence[int] | None = None,
    max_prompt_length: int | None = None,
    keep_tail: int = 0,
    prompt_attention_masks: Sequence[torch.Tensor] | None = None,
) -> TeacherRows:
    """Row i becomes ``prompt[:k] + block + prompt[k:c] + prompt[c + r:] + response``.

    ``k = insert_at[i]``, ``c = cut_from[i]`` (default ``k``; ``c >= k``), and ``r`` is 0 unless the
    teacher prompt would exceed ``max_prompt_length``, in which case the ``r`` tokens from ``c`` on
    are removed (see module docstring); the last ``keep_tail`` prompt tokens (end of turn and the
    generation prompt, ``PrivilegedBlocks.tail_length``) are never removed. Left padding (given by
    ``prompt_attention_masks``) is stripped
    first; ``insert_at``/``cut_from`` index the stripped prompt. Position ids run 0..n-1.
    """
    if cut_from is None:
        cut_from = insert_at
    if not (len(prompts) == len(responses) == len(blocks) == len(insert_at) == len(cut_from)):
        raise ValueError(
            f"row counts differ: {len(prompts)} prompts, {len(responses)} responses, "
            f"{len(blocks)} blocks, {len(insert_at)} insertion points"
        )
    out = TeacherRows()
    block_tensors: dict[int, torch.Tensor] = {}
    rows = zip(prompts, responses, blocks, insert_at, cut_from, strict=True)
    for i, (prompt, response, block, k, c) in enumerate(rows):
        mask = prompt_attention_masks[i] if prompt_attention_masks is not None else None
        prompt = strip_left_padding(prompt, mask).to(torch.int64)
        removed = 0
        if len(block):
            b = block_tensors.get(id(block))
            if b is None:
                b = block_tensors[id(block)] = torch.as_tensor(list(block), dtype=torch.int64)
            if not 0 <= k <= c <= prompt.numel():
                raise ValueError(
                    f"row {i}: need 0 <= insert_at ({k}) <= cut_from ({c}) <= prompt length ({prompt.numel()})"
                )
            if max_prompt_length is not None:
                excess = prompt.numel() + b.numel() - max_prompt_length
                if excess > 0:
                    removable = max(0, prompt.numel() - keep_tail - c)
                    if excess > removable:
                        raise ValueError(
                            f"row {i}: the privileged block ({b.numel()} tokens) does not fit the teacher prompt "
                            f"budget sdar.teacher.max_prompt_length={max_prompt_length} even after removing all "
                            f"{removable} removable context tokens; raise the budget or shorten the skill"
                        )
                    removed = excess
            new_prompt = torch.cat([prompt[:k], b, prompt[k:c], prompt[c + removed :]])
        else:
            new_prompt = prompt
        ids = torch.cat([new_prompt, response.reshape(-1).to(torch.int64)])
        out.prompts.append(new_prompt)
        out.input_ids.append(ids)
        out.attention_mask.append(torch.ones_like(ids))
        out.position_ids.append(torch.arange(ids.numel(), dtype=torch.int64))
        out.inserted_tokens.append(len(block))
        out.removed_context_tokens.append(removed)
    return out


class TeacherBuilder:
    """Turns (prompts, responses, privileged texts) into teacher rows in one call.

    Each text is rendered once into a privileged block (:class:`PrivilegedBlocks`, cached), spliced
    into its row's prompt ids at the configured placement, and the prompt is cut to
    ``max_prompt_length`` if needed (:func:`build_teacher_rows`); rows whose text is empty keep
    the student's prompt. The response ids are never changed.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        header, role, placement: as in :class:`PrivilegedBlocks`.
        max_prompt_length: token budget of a teacher prompt; None = no limit.
    """

    def __init__(self, tokenizer, *, header: str = "", role: str = "system", placement: str = "start",
                 max_prompt_length: int | None = None):
        self.blocks = PrivilegedBlocks(tokenizer, header=header, role=role, placement=placement)
        self.max_prompt_length = max_prompt_length

    def build(
        self, prompts: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], texts: Sequence[str]
    ) -> TeacherRows:
        blocks = [self.blocks(text) for text in texts]
        insert_at, cut_from = [], []
        for prompt, block in zip(prompts, blocks, strict=True):
            if block:
                ids = prompt.tolist()
                k = self.blocks.insertion_index(ids)
                insert_at.append(k)
                cut_from.append(self.blocks.cut_index(ids, k))
            else:
                insert_at.append(0)
                cut_from.append(0)
        return build_teacher_rows(
            prompts,
            responses,
            blocks,
            insert_at,
            cut_from=cut_from,
            max_prompt_length=self.max_prompt_length,
            keep_tail=self.blocks.tail_length,
        )
