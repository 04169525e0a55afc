"""Privileged (teacher) sequences, built at token level.

The teacher is the student policy with privileged text ``c+`` in its prompt. For each training row
we take the student's prompt ids, insert the pre-tokenised privileged block, and keep the response
ids byte-identical, so the teacher scores exactly the tokens the student sampled. No prompt is
decoded or re-encoded; each distinct privileged text is tokenised once (cached).

Block (``format``):

* ``chat_turn`` (default): one chat turn (``role``: system or user) holding ``header + text``,
  rendered by the tokenizer's own chat template. Placement:

  * ``start``: first turn (after a leading BOS token). For a template that adds a *default system
    turn* to a conversation without one (Qwen2.5: "You are Qwen, created by Alibaba Cloud..."),
    what the template renders for ``[block, *messages]`` is used: a ``system`` block *replaces*
    the student prompt's default system turn (the template drops its default when the first
    message is a system message), a ``user`` block goes right after it. Templates without a
    default system turn (Qwen3, ChatML) simply get the block first. A student prompt that opens
    with its own system turn keeps it, after the block.
  * ``before_last_user``: right before the last user turn, so a template's default system prompt
    and earlier turns stay first.

  Both equal what the chat template renders for the same messages with the block inserted there
  (tested, with Qwen2.5- and Qwen3-shaped templates too).
* ``raw_prefix``: the SDAR reference's format, ``"[Privileged Skill Information]\n{text}\n\n"``
  as raw text in front of the prompt's text (no chat turn; ``header`` and ``role`` do not apply;
  ``start`` placement only), i.e. at index 0, or 1 after a leading BOS token. The reference
  decodes the prompt, prefixes this text and re-tokenises; here the prefix is tokenised once and
  spliced. That equals the reference's tokens whenever the prompt's text starts with a special
  token (every chat-template prompt: ``<|im_start|>``), since no merge crosses a special token.
  Caveat: a prompt whose text started with ordinary text could merge across the boundary in the
  reference (the prefix ends in ``"\n\n"``: a prompt starting with whitespace joins that newline
  run); the splice then differs from the reference by that merge, while the decoded text is the
  same (tested). The reference puts its text before a BOS token too; we keep BOS first.

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
    "FORMATS",
    "PLACEMENTS",
    "RAW_PREFIX_HEADER",
    "PrivilegedBlocks",
    "TeacherBuilder",
    "TeacherRows",
    "build_teacher_rows",
    "privileged_texts",
    "raw_prefix_text",
    "strip_left_padding",
]

FORMATS = ("chat_turn", "raw_prefix")
"""How the privileged block is written (``sdar.privileged.format``)."""

RAW_PREFIX_HEADER = "[Privileged Skill Information]\n"
"""The SDAR reference's header line of the privileged text (``raw_prefix``, the student's Skill-GRPO prompt)."""


def raw_prefix_text(text: str) -> str:
    """The reference's privileged block as text, ``"[Privileged Skill Information]\\n{text}\\n\\n"``;
    ``""`` for an empty text."""
    return f"{RAW_PREFIX_HEADER}{text}\n\n" if text else ""


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
        header: text placed before the privileged text inside the block (``chat_turn``).
        role: chat role of the block, ``system`` or ``user`` (``chat_turn``).
        placement: one of ``PLACEMENTS`` (``raw_prefix``: ``start`` only).
        format: one of ``FORMATS``.
        chat_template_kwargs: extra arguments of every ``apply_chat_template`` call, as the agent
            loops render prompts (verl's ``data.apply_chat_template_kwargs``, e.g. Qwen3's
            ``enable_thinking: false``, which changes the generation prompt's tail).

    Attributes:
        default_turn: ids of the template's default system turn (``[]`` if it adds none).
        replaces_default: ``chat_turn`` with ``start``: the block takes the default system turn's
            place (a ``system`` block); otherwise it goes after it.
    """

    def __init__(self, tokenizer, header: str = "", role: str = "system", placement: str = "start",
                 format: str = "chat_turn", chat_template_kwargs: dict | None = None):
        if placement not in PLACEMENTS:
            raise ValueError(f"unknown placement {placement!r}; expected one of {PLACEMENTS}")
        if role not in ("system", "user"):
            raise ValueError(f"role must be 'system' or 'user', got {role!r}")
        if format not in FORMATS:
            raise ValueError(f"unknown privileged format {format!r}; expected one of {FORMATS}")
        if format == "raw_prefix" and placement != "start":
            raise ValueError("format 'raw_prefix' goes in front of the prompt's text: placement must be 'start'")
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("the tokenizer has no chat template; privileged blocks are rendered as a chat turn")
        self.tokenizer = tokenizer
        self.chat_template_kwargs = dict(chat_template_kwargs or {})
        self.header = header
        self.role = role
        self.placement = placement
        self.format = format
        self.bos_token_id: int | None = getattr(tokenizer, "bos_token_id", None)
        self._cache: dict[str, list[int]] = {"": []}
        self._user_header_text = self._turn_header_text("user")
        self._user_header = self._encode(self._user_header_text)
        if not self._user_header:
            raise ValueError("could not find how this chat template opens a 'user' turn")
        self.tail_length = self._generation_tail_length()
        self._default_text = self._before_user_turn([])
        self.default_turn: list[int] = self._encode(self._default_text)
        self.replaces_default = False
        if format == "chat_turn" and self.default_turn:
            probe = self._before_user_turn([{"role": role, "content": "x"}])
            self.replaces_default = not probe.startswith(self._default_text)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False)) if text else []

    def _render(self, messages: list[dict], **kwargs) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, **self.chat_template_kwargs, **kwargs)

    def _strip_bos_text(self, text: str) -> str:
        bos = getattr(self.tokenizer, "bos_token", None)
        if self.bos_token_id is not None and bos and text.startswith(bos):
            return text[len(bos) :]
        return text

    def _before_user_turn(self, messages: list[dict]) -> str:
        """What the template renders for ``messages + [user turn]`` before that user turn (BOS
        removed): for no messages, the default system turn (``""`` if the template adds none)."""
        text = self._render(messages + [{"role": "user", "content": _SENTINEL}])
        end = text.rfind(self._user_header_text + _SENTINEL)
        if end < 0:
            raise ValueError("cannot locate the user turn in this chat template's rendering")
        return self._strip_bos_text(text[:end])

    def __call__(self, text: str) -> list[int]:
        ids = self._cache.get(text)
        if ids is None:
            if self.format == "raw_prefix":
                ids = self._encode(raw_prefix_text(text))
            else:
                block = self._before_user_turn([{"role": self.role, "content": self.header + text}])
                keeps_default = bool(self._default_text) and block.startswith(self._default_text)
                if keeps_default:
                    block = block[len(self._default_text) :]  # the prompt already has the default turn
                if self.default_turn and keeps_default == self.replaces_default:
                    raise ValueError(f"privileged text {text[:40]!r}: the chat template treats it unlike other texts")
                ids = self._encode(block)
            if not ids:
                raise ValueError(f"privileged text {text[:40]!r} tokenised to nothing")
            self._cache[text] = ids
        return ids

    def _turn_header_text(self, role: str) -> str:
        """Text that opens a ``role`` turn after an earlier turn (e.g. ``<|im_start|>user\\n``).

        Found by rendering one conversation and the same conversation plus a ``role`` turn: the
        header is what the second adds before its content (so BOS or a default system prompt,
        which both renderings share, is not part of it).
        """
        first = [{"role": "user", "content": "a"}]
        one = self._render(first)
        two = self._render(first + [{"role": role, "content": _SENTINEL}])
        if not two.startswith(one) or _SENTINEL not in two:
            raise ValueError(f"cannot locate {role!r} turns in this chat template (renderings are not incremental)")
        return two[len(one) :].split(_SENTINEL)[0]

    def _generation_tail_length(self) -> int:
        """Tokens after a user message's content up to the generation prompt (end-of-turn + assistant header)."""
        text = self._render([{"role": "user", "content": _SENTINEL}], add_generation_prompt=True)
        return len(self.tokenizer.encode(text.split(_SENTINEL)[-1], add_special_tokens=False))

    def _after_bos(self, prompt: list[int]) -> int:
        return 1 if (self.bos_token_id is not None and prompt[:1] == [self.bos_token_id]) else 0

    def _has_default_at(self, prompt: list[int], index: int) -> bool:
        n = len(self.default_turn)
        return n > 0 and prompt[index : index + n] == self.default_turn

    def insertion_index(self, prompt: list[int]) -> int:
        """Where the block goes in ``prompt`` (a list of ids without padding)."""
        if self.placement == "start":
            k = self._after_bos(prompt)
            if self.format == "chat_turn" and not self.replaces_default and self._has_default_at(prompt, k):
                k += len(self.default_turn)  # a user block goes after the template's default system turn
            return k
        index = _find_last(prompt, self._user_header)
        if index < 0:
            raise ValueError("placement 'before_last_user': the prompt has no user turn for this chat template")
        return index

    def replaced_length(self, prompt: list[int], insert_at: int) -> int:
        """How many prompt tokens from ``insert_at`` on the block replaces: the default system turn
        for a ``system`` block at ``start`` when the template has one and the prompt opens with it,
        else 0."""
        if self.placement == "start" and self.replaces_default and self._has_default_at(prompt, insert_at):
            return len(self.default_turn)
        return 0

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
    replaced_tokens: list[int] = field(default_factory=list)

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
    replace: Sequence[int] | None = None,
) -> TeacherRows:
    """Row i becomes ``prompt[:k] + block + prompt[k + s:c] + prompt[c + r:] + response``.

    ``k = insert_at[i]``, ``s = replace[i]`` (default 0: the ``s`` tokens the block takes the place
    of, ``PrivilegedBlocks.replaced_length``), ``c = cut_from[i]`` (default ``k``; ``c >= k + s``),
    and ``r`` is 0 unless the
    teacher prompt would exceed ``max_prompt_length``, in which case the ``r`` tokens from ``c`` on
    are removed (see module docstring); the last ``keep_tail`` prompt tokens (end of turn and the
    generation prompt, ``PrivilegedBlocks.tail_length``) are never removed. Left padding (given by
    ``prompt_attention_masks``) is stripped
    first; ``insert_at``/``cut_from`` index the stripped prompt. Position ids run 0..n-1.
    """
    if replace is None:
        replace = [0] * len(insert_at)
    if cut_from is None:
        cut_from = [k + r for k, r in zip(insert_at, replace, strict=True)]
    if not (len(prompts) == len(responses) == len(blocks) == len(insert_at) == len(cut_from) == len(replace)):
        raise ValueError(
            f"row counts differ: {len(prompts)} prompts, {len(responses)} responses, "
            f"{len(blocks)} blocks, {len(insert_at)} insertion points, {len(replace)} replaced lengths"
        )
    out = TeacherRows()
    block_tensors: dict[int, torch.Tensor] = {}
    rows = zip(prompts, responses, blocks, insert_at, cut_from, replace, strict=True)
    for i, (prompt, response, block, k, c, skip) in enumerate(rows):
        mask = prompt_attention_masks[i] if prompt_attention_masks is not None else None
        prompt = strip_left_padding(prompt, mask).to(torch.int64)
        removed = 0
        if not len(block):
            skip = 0
        if len(block):
            b = block_tensors.get(id(block))
            if b is None:
                b = block_tensors[id(block)] = torch.as_tensor(list(block), dtype=torch.int64)
            if not (0 <= k and 0 <= skip and k + skip <= c <= prompt.numel()):
                raise ValueError(
                    f"row {i}: need 0 <= insert_at ({k}), insert_at + replaced ({k} + {skip}) <= cut_from ({c}) "
                    f"<= prompt length ({prompt.numel()})"
                )
            if max_prompt_length is not None:
                excess = prompt.numel() - skip + b.numel() - max_prompt_length
                if excess > 0:
                    removable = max(0, prompt.numel() - keep_tail - c)
                    if excess > removable:
                        raise ValueError(
                            f"row {i}: the privileged block ({b.numel()} tokens) does not fit the teacher prompt "
                            f"budget sdar.teacher.max_prompt_length={max_prompt_length} even after removing all "
                            f"{removable} removable context tokens; raise the budget or shorten the skill"
                        )
                    removed = excess
            new_prompt = torch.cat([prompt[:k], b, prompt[k + skip : c], prompt[c + removed :]])
        else:
            new_prompt = prompt
        ids = torch.cat([new_prompt, response.reshape(-1).to(torch.int64)])
        out.prompts.append(new_prompt)
        out.input_ids.append(ids)
        out.attention_mask.append(torch.ones_like(ids))
        out.position_ids.append(torch.arange(ids.numel(), dtype=torch.int64))
        out.inserted_tokens.append(len(block))
        out.removed_context_tokens.append(removed)
        out.replaced_tokens.append(skip)
    return out


class TeacherBuilder:
    """Turns (prompts, responses, privileged texts) into teacher rows in one call.

    Each text is rendered once into a privileged block (:class:`PrivilegedBlocks`, cached), spliced
    into its row's prompt ids at the configured placement, and the prompt is cut to
    ``max_prompt_length`` if needed (:func:`build_teacher_rows`); rows whose text is empty keep
    the student's prompt. The response ids are never changed.

    Args:
        tokenizer: a Hugging Face tokenizer with a chat template.
        header, role, placement, format, chat_template_kwargs: as in :class:`PrivilegedBlocks`.
        max_prompt_length: token budget of a teacher prompt; None = no limit.
    """

    def __init__(self, tokenizer, *, header: str = "", role: str = "system", placement: str = "start",
                 max_prompt_length: int | None = None, format: str = "chat_turn",
                 chat_template_kwargs: dict | None = None):
        self.blocks = PrivilegedBlocks(tokenizer, header=header, role=role, placement=placement, format=format,
                                       chat_template_kwargs=chat_template_kwargs)
        self.max_prompt_length = max_prompt_length

    def build(
        self, prompts: Sequence[torch.Tensor], responses: Sequence[torch.Tensor], texts: Sequence[str]
    ) -> TeacherRows:
        blocks = [self.blocks(text) for text in texts]
        insert_at, cut_from, replace = [], [], []
        for prompt, block in zip(prompts, blocks, strict=True):
            if block:
                ids = prompt.tolist()
                k = self.blocks.insertion_index(ids)
                insert_at.append(k)
                replace.append(self.blocks.replaced_length(ids, k))
                cut_from.append(max(self.blocks.cut_index(ids, k), k + replace[-1]))
            else:
                insert_at.append(0)
                cut_from.append(0)
                replace.append(0)
        return build_teacher_rows(
            prompts,
            responses,
            blocks,
            insert_at,
            cut_from=cut_from,
            max_prompt_length=self.max_prompt_length,
            keep_tail=self.blocks.tail_length,
            replace=replace,
        )
