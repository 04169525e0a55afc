"""Search-QA reward: normalised exact match of the ``<answer>`` (the Search-R1 convention).

``normalize_answer`` lower-cases, drops punctuation and the articles a/an/the, and collapses
whitespace; the answer scores 1 when it equals any golden answer after normalisation. The
``search`` agent loop puts the parsed answer and the number of invalid turns in ``extra_fields``;
the score is EM. The invalid-action penalty the loop records is subtracted by the SDAR trainer
(``verl_sdar.advantages.penalise_rewards``), the one place every env's penalty is applied; so
validation scores are plain EM.

    reward.custom_reward_function.path=pkg://verl_sdar.envs.search.reward
    reward.custom_reward_function.name=compute_score
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

from verl_sdar.envs.contract import ANSWER, INVALID_TURNS, SEARCHES, SUCCESS, TASK_TYPE

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def golden_answers(ground_truth) -> list[str]:
    """Golden answers from ``{"target": [...]}`` (Search-R1), a list, or a single string."""
    if isinstance(ground_truth, dict):
        ground_truth = ground_truth.get("target", [])
    if isinstance(ground_truth, str):
        return [ground_truth]
    if hasattr(ground_truth, "tolist"):
        ground_truth = ground_truth.tolist()
    return [str(a) for a in (ground_truth or [])]


def exact_match(prediction: str | None, answers: Iterable[str]) -> float:
    if prediction is None:
        return 0.0
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(a) for a in answers))


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs) -> dict:
    info = extra_info or {}
    em = exact_match(info.get(ANSWER), golden_answers(ground_truth))
    return {
        "score": em,
        SUCCESS: em,
        "answered": float(info.get(ANSWER) is not None),
        SEARCHES: float(info.get(SEARCHES, 0) or 0),
        INVALID_TURNS: float(info.get(INVALID_TURNS, 0) or 0),
        # a string: verl's own statistics skip it; the SDAR trainer reports success per question type
        TASK_TYPE: str(info.get(TASK_TYPE) or "unknown"),
    }
