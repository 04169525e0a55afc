"""What both Search-QA agent loops share: settings, the retriever cache, one search call, the
token cut after an action, and the switch between the two modes (``env.turn_rows``)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from typing import Any, NamedTuple

from verl_sdar.envs.common import env_settings, locked_cache
from verl_sdar.envs.contract import error_kind
from verl_sdar.envs.search.retrieval import Retriever, format_hits, make_retriever

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "WARN"))

DEFAULTS: dict[str, Any] = {
    "turn_rows": False,  # true: one training row per turn (SearchTurnAgentLoop)
    "max_steps": 4,
    "history_length": 4,
    "invalid_action_penalty_coef": 0.01,
    "use_invalid_action_penalty": True,
    # which responses are invalid, and whether the turn-row loop cuts after the action
    # (verl_sdar.envs.search.prompts: "reference", the authors' rules, or "ours")
    "action_rules": "reference",
    # timeout_s: per HTTP request (or BM25 search); retries: of a failed HTTP request;
    # health_check: probe url when the run starts (verl_sdar.config.check_retriever)
    "retriever": {"url": None, "corpus_path": None, "topk": 3, "timeout_s": 30.0, "retries": 2, "health_check": True},
}


@locked_cache
def get_retriever(url: str | None, corpus_path: str | None, timeout_s: float = 30.0, retries: int = 2) -> Retriever:
    """One retriever per (url, corpus, timeout, retries) per process (the BM25 index is built once)."""
    return make_retriever(url=url, corpus_path=corpus_path, timeout_s=timeout_s, retries=retries)


class Retrieved(NamedTuple):
    """One search call's outcome."""

    text: str
    """the results as the agent reads them (``Search failed (<error type>).`` on failure)"""
    error: str
    """the error message, ``""`` when the search worked"""
    seconds: float
    kind: str = ""
    """the ``error_kind`` (``retrieval_error`` / ``retrieval_timeout``), ``""`` when it worked"""


async def retrieve(retriever: Retriever, query: str, topk: int, timeout_s: float) -> Retrieved:
    """Search ``query`` in a worker thread: ``(results as the agent reads them, error or "", seconds, kind)``.

    A failed search (server down, timeout, bad response) comes back as the text
    ``Search failed (<error type>).``, the error message and its kind; it never raises.
    """
    loop = asyncio.get_running_loop()
    t0 = time.perf_counter()
    try:
        hits = await asyncio.wait_for(
            loop.run_in_executor(None, functools.partial(retriever.search, [query], topk)), timeout_s
        )
        return Retrieved(format_hits(hits[0]), "", time.perf_counter() - t0)
    except Exception as e:  # noqa: BLE001 - a failed search is an observation, never a crash
        logger.warning("search: retrieval failed for %r: %s", query, e)
        error = f"retrieval failed: {type(e).__name__}: {e}"
        return Retrieved(f"Search failed ({type(e).__name__}).", error, time.perf_counter() - t0,
                         error_kind("retrieval", e))


def open_retriever(settings: dict[str, Any]) -> tuple[Retriever, int, float]:
    """``(retriever, topk, search timeout)`` from the loop's ``env.retriever`` settings (retriever
    cached per process). ``timeout_s`` limits one HTTP request (or one in-process BM25 search); a
    search call against a server waits for all ``retries + 1`` requests."""
    retriever = settings["retriever"]
    timeout_s = float(retriever["timeout_s"])
    opened = get_retriever(retriever.get("url"), retriever.get("corpus_path"), timeout_s, int(retriever["retries"]))
    # the search call waits for every try of the HTTP client and its back-off
    return opened, int(retriever["topk"]), getattr(opened, "max_wait_s", timeout_s)


def action_rules(settings: dict[str, Any]) -> str:
    """``env.action_rules``, checked (``verl_sdar.envs.search.prompts.ACTION_RULES``)."""
    from verl_sdar.envs.search.prompts import ACTION_RULES

    rules = settings["action_rules"]
    if rules not in ACTION_RULES:
        raise ValueError(f"env.action_rules must be one of {ACTION_RULES}, got {rules!r}")
    return rules


def turn_rows_selected(kwargs: dict[str, Any]) -> bool:
    """Whether an agent-loop construction asks for the turn-row mode: ``turn_rows`` in the
    agent-loop config entry (a constructor keyword), else ``env.turn_rows`` of the trainer config."""
    if kwargs.get("turn_rows") is not None:
        return bool(kwargs["turn_rows"])
    wrap = kwargs.get("trainer_config")
    config = getattr(wrap, "config", wrap)
    return bool(env_settings({"turn_rows": False}, config, {})["turn_rows"])


def cut_after(decode, ids: list[int], end_char: int, text_len: int) -> int:
    """Smallest ``k`` with ``len(decode(ids[:k])) >= end_char`` (the prefix holds the action).

    ``decode`` of a prefix is monotone in length for a byte-level tokenizer; binary search.
    """
    if end_char >= text_len:
        return len(ids)
    lo, hi = 1, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= end_char:
            hi = mid
        else:
            lo = mid + 1
    return lo
