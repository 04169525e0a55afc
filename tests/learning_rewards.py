"""Reward functions of the learning test (tests/test_learning.py), loaded by verl from this path.

``vowel_score``: the share of the response's ASCII letters that are vowels, a dense reward that the
tiny random model's samples spread over about 0.1-0.7 (mean 0.37 at the start), so every GRPO group
has reward variance. ``random_score``: the control, a number in [0, 1) hashed from the response text,
uncorrelated with the vowel share (a response always gets the same value).
"""

from __future__ import annotations

import hashlib

VOWELS = frozenset("aeiou")


def vowel_share(text: str) -> float:
    letters = [c for c in text.lower() if c.isascii() and c.isalpha()]
    return sum(c in VOWELS for c in letters) / len(letters) if letters else 0.0


def vowel_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    return vowel_share(solution_str)


def random_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    digest = hashlib.blake2b(solution_str.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64
