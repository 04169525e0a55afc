"""Skill-GRPO's second validation pass: the same validation set, without the student's skills.

The reference validates Skill-GRPO twice (``verl/trainer/main_skill_grpo.py``): with the skills in
the student's prompt (its ``val/*`` metrics, also logged as ``val_with_skill/*``) and without them
(``val_no_skill/*``), so one can tell what the policy learned from what the prompt hands it.

Here the trainer (``sdar.student_prompt=true``) runs verl's validation once more over a view of its
validation dataloader whose batches carry the row field ``NO_STUDENT_SKILLS`` (true on every row);
verl passes a batch's fields to the agent loops as keyword arguments, and the loops then leave the
skill block out (:func:`verl_sdar.privileged.student_privileged_for`). The pass without skills runs
first. With ``trainer.validation_data_dir`` set, verl dumps each pass's samples: the pass with
skills to ``<dir>/<step>.jsonl`` as usual, the pass without to ``<dir>/val_no_skill/<step>.jsonl``.

Metric names: a key ``val/<rest>`` or ``val-<kind>/<rest>`` (verl's ``val-core``, ``val-aux``)
becomes ``val_no_skill/<rest>`` or ``val_no_skill/<kind>/<rest>``; likewise ``val_with_skill``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from omegaconf import open_dict

from .privileged import NO_STUDENT_SKILLS

WITH_SKILL = "val_with_skill"
NO_SKILL = "val_no_skill"


def _batch_size(batch: Mapping[str, Any]) -> int:
    values = batch["raw_prompt"] if "raw_prompt" in batch else next(iter(batch.values()))
    return len(values)


class WithoutStudentSkills:
    """A view of a validation dataloader whose batches (dicts of per-row arrays) also hold
    ``NO_STUDENT_SKILLS = True`` for every row; the loader's own batches are not changed."""

    def __init__(self, loader: Iterable[Mapping[str, Any]]):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            flags = np.ones(_batch_size(batch), dtype=bool).astype(object)
            yield {**batch, NO_STUDENT_SKILLS: flags}


def renamed(key: str, prefix: str) -> str:
    """``val/<rest>`` -> ``<prefix>/<rest>``; ``val-<kind>/<rest>`` -> ``<prefix>/<kind>/<rest>``;
    any other key -> ``<prefix>/<key>``."""
    head, sep, rest = key.partition("/")
    if sep and head == "val":
        return f"{prefix}/{rest}"
    if sep and head.startswith("val-"):
        return f"{prefix}/{head[len('val-'):]}/{rest}"
    return f"{prefix}/{key}"


@contextmanager
def _setting(config: Any, key: str, value: Any) -> Iterator[None]:
    """``config[key] = value`` (an OmegaConf node, struct or not) for the duration."""
    old = config.get(key)
    with open_dict(config):
        config[key] = value
    try:
        yield
    finally:
        with open_dict(config):
            config[key] = old


def validate_with_and_without_skills(trainer: Any, validate: Callable[[], dict[str, float]]) -> dict[str, float]:
    """Run ``validate`` (verl's ``_validate`` of ``trainer``) without the student's skills, then
    with them; return the second pass's metrics plus both passes' under their own prefixes."""
    loader = trainer.val_dataloader
    dump = trainer.config.trainer.get("validation_data_dir")
    trainer.val_dataloader = WithoutStudentSkills(loader)
    try:
        if dump:
            with _setting(trainer.config.trainer, "validation_data_dir", os.path.join(str(dump), NO_SKILL)):
                without = validate()
        else:
            without = validate()
    finally:
        trainer.val_dataloader = loader
    with_skills = validate()
    return {
        **with_skills,
        **{renamed(k, WITH_SKILL): v for k, v in with_skills.items()},
        **{renamed(k, NO_SKILL): v for k, v in without.items()},
    }
