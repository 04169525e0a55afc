"""verl RL parquet files for the ``search`` agent loop.

Our offline set (:mod:`.corpus`)::

    python -m verl_sdar.envs.search.dataset OUT_DIR --qa QA_DIR [--limit-train N] [--limit-val N]

writes ``OUT_DIR/train.parquet`` and ``OUT_DIR/val.parquet`` from ``QA_DIR/{train,test}.jsonl``.

Search-R1 data (``nq_search.py``-style parquet: ``data_source``, ``prompt``, ``reward_model``
with ``ground_truth.target``; the ``question`` column when present, else the text after the
last ``Question:`` in the prompt)::

    python -m verl_sdar.envs.search.dataset OUT_DIR --search-r1-train train.parquet --search-r1-val test.parquet

Each row: ``agent_name = "search"``, the question as the user message, ``reward_model.ground_truth
= {"target": [answers]}`` and ``extra_info`` with ``question``, ``task_type`` (the skill key, see
:func:`question_type`), ``split`` and ``privileged`` ("").

Task types follow the reference's keyword rule (the paper's default skill retrieval), by data
source and question wording, first match wins:

1. ``popqa`` -> ``entity_attribute``;
2. ``nq``, ``triviaqa`` -> ``direct_lookup``;
3. ``hotpotqa`` -> ``multi_hop``;
4. a question with the words "which" and "or" and without the word "for" -> ``comparison``;
5. ``2wikimultihopqa``, ``musique``, ``bamboogle`` -> ``multi_hop``;
6. otherwise the row's own type when its set has one (our countryinfo questions), else
   ``general``: a type with no task-type skill, so the teacher gets the general skills only.

Words are matched whole and case-insensitively ("or" does not match inside "world").
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

from verl_sdar.envs.contract import QUESTION, dataset_row
from verl_sdar.envs.search.corpus import read_jsonl
from verl_sdar.envs.search.reward import golden_answers

AGENT_NAME = "search"
DATA_SOURCE = "countryinfo"
# task types (the keys of envs/search/skills/mapping.yaml, except GENERAL)
ENTITY_ATTRIBUTE = "entity_attribute"
DIRECT_LOOKUP = "direct_lookup"
MULTI_HOP = "multi_hop"
COMPARISON = "comparison"
GENERAL = "general"  # no task-type skill: general skills only
# the reference's rule, in its order: sources decided before the question wording is looked at ...
SOURCE_TYPES_FIRST = {"popqa": ENTITY_ATTRIBUTE, "nq": DIRECT_LOOKUP, "triviaqa": DIRECT_LOOKUP, "hotpotqa": MULTI_HOP}
# ... and after it
SOURCE_TYPES_AFTER = {"2wikimultihopqa": MULTI_HOP, "musique": MULTI_HOP, "bamboogle": MULTI_HOP}
_WORD = re.compile(r"[a-z0-9]+")


def is_comparison_question(question: str) -> bool:
    """The words "which" and "or" occur, the word "for" does not (whole words, any case)."""
    words = set(_WORD.findall(question.lower()))
    return "which" in words and "or" in words and "for" not in words


def question_type(question: str, data_source: str, own_type: str | None = None) -> str:
    """The task type of a question (rule: module docstring); ``own_type``: the set's own label."""
    source = str(data_source).strip().lower()
    if source in SOURCE_TYPES_FIRST:
        return SOURCE_TYPES_FIRST[source]
    if is_comparison_question(question):
        return COMPARISON
    if source in SOURCE_TYPES_AFTER:
        return SOURCE_TYPES_AFTER[source]
    return own_type or GENERAL


def make_row(question: str, answers: list[str], task_type: str, data_source: str, split: str, index: int) -> dict:
    if not answers:
        raise ValueError(f"{split} row {index}: no golden answers for {question!r}")
    return dataset_row(
        data_source=data_source,
        agent_name=AGENT_NAME,
        prompt=f"Question: {question}",
        ability="fact-reasoning",
        ground_truth={"target": list(answers)},
        index=index,
        split=split,
        fields={QUESTION: question},
        task_type=task_type,
    )


def rows_from_qa(path: str | Path, split: str, limit: int = 0) -> list[dict]:
    qa = read_jsonl(path)[: limit or None]
    return [
        make_row(q["question"], q["golden_answers"], question_type(q["question"], DATA_SOURCE, q["task_type"]),
                 DATA_SOURCE, split, i)
        for i, q in enumerate(qa)
    ]


def question_from_search_r1(row: dict) -> str:
    question = row.get("question")
    if isinstance(question, str) and question.strip():  # pandas gives NaN for missing values
        return question.strip()
    prompt = row["prompt"]
    content = str(prompt[-1]["content"]) if len(prompt) else ""
    if "Question:" not in content:
        raise ValueError(f"Search-R1 row has no 'question' column and no 'Question:' in its prompt: {content[:120]!r}")
    return content.rsplit("Question:", 1)[1].strip()


def rows_from_search_r1(path: str | Path, split: str, limit: int = 0) -> list[dict]:
    import pandas as pd

    df = pd.read_parquet(path)
    if limit:
        df = df.head(limit)
    rows = []
    for i, record in enumerate(df.to_dict("records")):
        question = question_from_search_r1(record)
        answers = golden_answers((record.get("reward_model") or {}).get("ground_truth"))
        if not answers and record.get("golden_answers") is not None:
            answers = golden_answers(record["golden_answers"])
        source = str(record.get("data_source", "search_r1"))
        rows.append(make_row(question, answers, question_type(question, source), source, split, i))
    return rows


def write(rows: dict[str, list[dict]], out_dir: str | Path) -> dict[str, int]:
    import pandas as pd

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, split_rows in rows.items():
        pd.DataFrame(split_rows).to_parquet(out / f"{name}.parquet")
    return {name: len(split_rows) for name, split_rows in rows.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.search.dataset", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--qa", help="folder written by python -m verl_sdar.envs.search.corpus")
    p.add_argument("--search-r1-train")
    p.add_argument("--search-r1-val")
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-val", type=int, default=0)
    args = p.parse_args(argv)
    if args.qa:
        rows = {"train": rows_from_qa(Path(args.qa) / "train.jsonl", "train", args.limit_train),
                "val": rows_from_qa(Path(args.qa) / "test.jsonl", "test", args.limit_val)}
    elif args.search_r1_train and args.search_r1_val:
        rows = {"train": rows_from_search_r1(args.search_r1_train, "train", args.limit_train),
                "val": rows_from_search_r1(args.search_r1_val, "test", args.limit_val)}
    else:
        p.error("give --qa QA_DIR, or --search-r1-train and --search-r1-val")
    print(json.dumps(write(rows, args.out_dir)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
