"""Search-QA: corpus and questions, BM25 and HTTP retrieval, exact match, the agent loop (oracle,
masking, invalid turns) and one SDAR step through verl's real main_ppo."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import torch
from agent_loop_helpers import FakeServer, make_agent_loop, run_episode
from main_ppo_runner import by_step, run_main_ppo

from verl_sdar.envs.search.corpus import build, read_jsonl
from verl_sdar.envs.search.dataset import make_row, question_from_search_r1, rows_from_qa, rows_from_search_r1
from verl_sdar.envs.search.prompts import information_block, parse_action
from verl_sdar.envs.search.retrieval import BM25Retriever, HTTPRetriever, RetrievalError, format_hits
from verl_sdar.envs.search.reward import compute_score, exact_match, normalize_answer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def qa_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("search-qa")
    build(out, n_train=512, n_test=128, seed=0)
    return out


@pytest.fixture(scope="module")
def bm25(qa_dir):
    return BM25Retriever.from_jsonl(str(qa_dir / "corpus.jsonl"))


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


# ----------------------------------------------------------------------------- corpus and questions
def test_corpus_and_questions_are_deterministic_and_consistent(qa_dir, tmp_path):
    stats = json.loads((qa_dir / "stats.json").read_text())
    assert stats["passages"] == 2 * stats["countries"] >= 400
    assert set(stats["test_by_type"]) == {"direct_lookup", "multi_hop", "comparison"}
    build(tmp_path, n_train=512, n_test=128, seed=0)
    for name in ("corpus.jsonl", "train.jsonl", "test.jsonl"):
        assert (tmp_path / name).read_bytes() == (qa_dir / name).read_bytes(), name
    corpus = {d["id"]: d["contents"] for d in read_jsonl(qa_dir / "corpus.jsonl")}
    train = read_jsonl(qa_dir / "train.jsonl")
    test = read_jsonl(qa_dir / "test.jsonl")
    assert not {q["question"] for q in train} & {q["question"] for q in test}
    for q in train + test:
        support = " ".join(corpus[s] for s in q["support"])  # the answer is in the supporting passages
        if q["task_type"] != "comparison":
            assert any(a in support for a in q["golden_answers"]), q
        if q["task_type"] == "multi_hop":
            assert len(q["support"]) == 2


def test_retrieval_recall_at_3_of_the_built_set(qa_dir, bm25, capsys):
    """Recall@3 with the question itself as the query (what a one-shot agent would get)."""
    test = read_jsonl(qa_dir / "test.jsonl")
    hits = bm25.search([q["question"] for q in test], 3)
    by_type: dict[str, list[tuple[bool, bool]]] = {}
    for q, h in zip(test, hits, strict=True):
        ids = {x["document"]["id"] for x in h}
        by_type.setdefault(q["task_type"], []).append(
            (all(s in ids for s in q["support"]), any(s in ids for s in q["support"])))
    all_ = [x for v in by_type.values() for x in v]
    recall_all = sum(a for a, _ in all_) / len(all_)
    recall_any = sum(b for _, b in all_) / len(all_)
    with capsys.disabled():
        print(f"\n[search] recall@3 (question as query, {len(all_)} test questions): all supporting passages "
              f"{recall_all:.3f}, at least one {recall_any:.3f}; by type (all): "
              + ", ".join(f"{t} {sum(a for a, _ in v) / len(v):.3f}" for t, v in sorted(by_type.items())))
    # direct lookups name their entity: the one supporting passage must be found
    direct = by_type["direct_lookup"]
    assert sum(a for a, _ in direct) / len(direct) > 0.9
    assert recall_any > 0.9


def test_bm25_top_hit_and_no_match(bm25):
    top = bm25.search(["capital of Peru"], 3)[0]
    assert top[0]["document"]["id"] == "PER-geo" and top[0]["score"] > top[-1]["score"] > 0
    assert bm25.search(["zzzyyyxxx"], 3) == [[]]
    assert format_hits([]) == "No documents found."
    assert format_hits(top[:1]).startswith("Doc 1 (Title: Peru (geography)) Peru is a country")
    with pytest.raises(ValueError, match="topk"):
        bm25.search(["x"], 0)


# ----------------------------------------------------------------------------- HTTP retriever
def test_http_retriever_against_a_local_search_r1_server(bm25):
    from verl_sdar.envs.search.server import serve_in_thread

    server, url = serve_in_thread(bm25)
    try:
        client = HTTPRetriever(url, timeout_s=5, retries=0)
        remote = client.search(["capital of Peru", "people of Chile called"], 3)
        assert remote == bm25.search(["capital of Peru", "people of Chile called"], 3)
        # return_scores=false (bare documents) is understood too
        import urllib.request

        body = json.dumps({"queries": ["capital of Peru"], "topk": 2, "return_scores": False}).encode()
        with urllib.request.urlopen(urllib.request.Request(url, data=body)) as r:
            bare = json.loads(r.read())["result"][0]
        assert [d["id"] for d in bare] == ["PER-geo", "PER-people"][: len(bare)]
        # a bad request gets a 400 with a message
        with pytest.raises(Exception, match="400"):
            urllib.request.urlopen(urllib.request.Request(url, data=b'{"queries": 3}'))
    finally:
        server.shutdown()
    with pytest.raises(RetrievalError, match="failed after 1 attempts"):
        HTTPRetriever(url, timeout_s=1, retries=0).search(["x"], 3)  # server gone
    with pytest.raises(ValueError, match="http"):
        HTTPRetriever("localhost:8000")


# ----------------------------------------------------------------------------- exact match
@pytest.mark.parametrize(
    "prediction, answers, em",
    [
        ("Paris", ["paris"], 1.0),
        ("  The Paris. ", ["Paris"], 1.0),          # article, punctuation, spaces
        ("an  apple", ["Apple"], 1.0),
        ("Lima, Peru", ["Lima"], 0.0),               # exact, not containment
        ("+51", ["51", "+51"], 1.0),
        ("United-States", ["United States"], 0.0),   # punctuation is removed, not replaced by a space
        (None, ["x"], 0.0),
    ],
)
def test_exact_match_normalisation(prediction, answers, em):
    assert exact_match(prediction, answers) == em


def test_normalize_answer_hand_cases():
    assert normalize_answer("The  Quick, Brown fox!") == "quick brown fox"
    assert normalize_answer("a theory") == "theory"  # 'a' dropped, 'the' inside a word kept


def test_reward_from_extra_fields():
    gt = {"target": ["Lima"]}
    assert compute_score("countryinfo", "", gt, {"answer": "lima"})["score"] == 1.0
    r = compute_score("countryinfo", "", gt,
                      {"answer": "Quito", "invalid_action_penalty": 0.02, "task_type": "multi_hop"})
    # the penalty is not in the reward: the SDAR trainer subtracts it (verl_sdar.advantages), once
    assert r["score"] == 0.0 and r["success"] == 0.0 and r["task_type"] == "multi_hop"
    assert compute_score("countryinfo", "", gt, {})["answered"] == 0.0


# ----------------------------------------------------------------------------- parsing
def test_parse_action():
    a = parse_action("<think>x</think><search> capital  of Peru </search> and then <answer>Lima</answer>")
    assert a.kind == "search" and a.content == "capital of Peru"
    assert a.end == len("<think>x</think><search> capital  of Peru </search>")
    assert parse_action("<answer> Lima </answer>").content == "Lima"
    assert parse_action("I think it is Lima").kind == "invalid"
    assert parse_action("<answer>   </answer>").reason == "empty <answer> block"
    assert information_block("Doc 1") == "\n\n<information>Doc 1</information>\n\n"


# ----------------------------------------------------------------------------- agent loop
def make_search_loop(tokenizer, server, qa_dir, max_steps=4, response_length=512, **env):
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop

    env = {"max_steps": max_steps, "history_length": 4,
           "retriever": {"corpus_path": str(qa_dir / "corpus.jsonl"), "topk": 3}, **env}
    return make_agent_loop(SearchAgentLoop, tokenizer, server, env, response_length=response_length)


def kwargs_of(question: dict) -> dict:
    row = make_row(question["question"], question["golden_answers"], question["task_type"], "countryinfo", "test", 0)
    return {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}


def oracle(question: dict, corpus: dict[str, str]):
    """Searches the title of each supporting passage, then answers from the information shown."""
    script = [f"<think>look up {s}</think><search> {corpus[s].split(chr(10))[0]} </search>"
              for s in question["support"]]

    def answer(prompt_text: str) -> str:
        shown = re.findall(r"\n\n<information>(.*?)</information>", prompt_text, re.DOTALL)
        assert len(shown) == len(question["support"])
        gold = question["golden_answers"][0]
        assert gold in " ".join(shown) or question["task_type"] == "comparison"
        return f"<think>found it</think><answer> {gold} </answer> trailing text the loop drops"

    return script + [answer]


def test_oracle_policy_wins_every_question_type_and_info_is_masked(tokenizer, qa_dir):
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop  # noqa: F401  (registration)

    corpus = {d["id"]: d["contents"] for d in read_jsonl(qa_dir / "corpus.jsonl")}
    test = read_jsonl(qa_dir / "test.jsonl")
    per_type = {}
    for q in test:
        per_type.setdefault(q["task_type"], q)
    t0 = time.perf_counter()
    episodes = 0
    for task_type, q in sorted(per_type.items()):
        server = FakeServer(tokenizer, oracle(q, corpus))
        out = run_episode(lambda server=server: make_search_loop(tokenizer, server, qa_dir, response_length=2048),
                          **kwargs_of(q))
        episodes += 1
        f = out.extra_fields
        assert f["won"] and f["answer"] == q["golden_answers"][0] and f["searches"] == len(q["support"]), f
        assert f["invalid_turns"] == 0 and f["invalid_action_penalty"] == 0.0 and f["task_type"] == task_type
        score = compute_score("countryinfo", "", {"target": q["golden_answers"]}, {**kwargs_of(q)["extra_info"], **f})
        assert score["score"] == 1.0
        # masking: exactly the information blocks are 0; generated turns are 1
        assert len(out.response_ids) == len(out.response_mask) == len(out.response_logprobs)
        masked = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m == 0])
        generated = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m == 1])
        assert masked.count("<information>") == len(q["support"]) and "<search>" not in masked
        assert "<information>" not in generated and generated.count("<search>") == len(q["support"])
        assert generated.rstrip().endswith("</answer>")  # text after the closing tag was cut
        assert all(lp == 0.0 for lp, m in zip(out.response_logprobs, out.response_mask, strict=True) if m == 0)
        # each turn's prompt is the previous prompt + response so far (one growing sequence)
        assert server.prompts[-1] == out.prompt_ids + out.response_ids[: len(server.prompts[-1]) - len(out.prompt_ids)]
        assert server.sampling_params[0]["max_tokens"] == 2048
    print(f"\n[search] oracle: {episodes}/{episodes} won, {episodes / (time.perf_counter() - t0):.1f} episodes/s")


def test_invalid_turns_are_flagged_penalised_and_bounded_by_max_steps(tokenizer, qa_dir):
    q = read_jsonl(qa_dir / "test.jsonl")[0]
    server = FakeServer(tokenizer, ["I do not know", "<answer></answer>", "still nothing", "nope"])
    out = run_episode(lambda: make_search_loop(tokenizer, server, qa_dir), **kwargs_of(q))
    f = out.extra_fields
    assert len(server.prompts) == 4 and f["invalid_turns"] == 4 and not f["won"] and f["answer"] is None
    assert f["invalid_action_penalty"] == pytest.approx(0.04)
    assert "no <search> or <answer> block" in f["invalid_reason"] and "empty <answer> block" in f["invalid_reason"]
    score = compute_score("countryinfo", "", {"target": q["golden_answers"]}, {**kwargs_of(q)["extra_info"], **f})
    # the reward the trainer trains on: the score with the row's penalty subtracted (the one place it is)
    from verl_sdar.advantages import penalise_rewards, row_penalties

    trained = penalise_rewards([torch.tensor([0.0, score["score"]])], row_penalties([f]))[0]
    assert score["score"] == 0.0 and float(trained.sum()) == pytest.approx(-0.04)
    masked = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m == 0])
    assert masked.count("Invalid action") == 3  # a hint after each invalid turn but the last


def test_response_budget_is_respected(tokenizer, qa_dir):
    q = read_jsonl(qa_dir / "test.jsonl")[0]
    server = FakeServer(tokenizer, ["<search> capital </search>"] * 4)
    out = run_episode(lambda: make_search_loop(tokenizer, server, qa_dir, response_length=40), **kwargs_of(q))
    assert len(out.response_ids) <= 40 and len(out.response_mask) == len(out.response_ids)
    assert all(p["max_tokens"] >= 1 for p in server.sampling_params)


def test_history_shorter_than_max_steps_is_an_error(tokenizer, qa_dir):
    with pytest.raises(ValueError, match="history_length"):
        make_search_loop(tokenizer, FakeServer(tokenizer, []), qa_dir, history_length=2)


def test_retrieval_failure_is_an_observation_not_a_crash(tokenizer, qa_dir):
    from verl_sdar.envs.search import agent_loop as al

    class Down:
        def search(self, queries, topk):
            raise RetrievalError("server down")

    q = read_jsonl(qa_dir / "test.jsonl")[0]
    server = FakeServer(tokenizer, ["<search> x </search>", f"<answer>{q['golden_answers'][0]}</answer>"])

    def make():  # built inside the running event loop, then its retriever replaced
        loop = make_search_loop(tokenizer, server, qa_dir)
        loop.retriever = Down()
        return loop

    out = run_episode(make, **kwargs_of(q))
    assert out.extra_fields["won"]
    assert "Search failed (RetrievalError)" in tokenizer.decode(out.response_ids)
    assert al.DEFAULTS["retriever"]["topk"] == 3


# ----------------------------------------------------------------------------- datasets
def test_dataset_rows_and_search_r1_loader(qa_dir, tmp_path):
    import pandas as pd

    rows = rows_from_qa(qa_dir / "test.jsonl", "test", limit=5)
    assert len(rows) == 5 and all(r["agent_name"] == "search" for r in rows)
    assert rows[0]["reward_model"]["ground_truth"]["target"] and rows[0]["extra_info"]["question"]
    # Search-R1's nq_search.py layout: an instruction prompt ending in "Question: ...", targets in reward_model
    r1 = pd.DataFrame([
        {"data_source": "hotpotqa", "question": "Which is older, A or B?",
         "prompt": [{"role": "user", "content": "Answer the given question. ... Question: Which is older, A or B?\n"}],
         "ability": "fact-reasoning", "reward_model": {"style": "rule", "ground_truth": {"target": ["A"]}}},
        {"data_source": "nq", "question": None,
         "prompt": [{"role": "user", "content": "Answer ... Question: who wrote hamlet?\n"}],
         "ability": "fact-reasoning", "reward_model": {"style": "rule", "ground_truth": {"target": ["Shakespeare"]}}},
    ])
    r1.to_parquet(tmp_path / "r1.parquet")
    loaded = rows_from_search_r1(tmp_path / "r1.parquet", "train")
    assert [r["extra_info"]["question"] for r in loaded] == ["Which is older, A or B?", "who wrote hamlet?"]
    assert [r["extra_info"]["task_type"] for r in loaded] == ["comparison", "direct_lookup"]
    assert loaded[1]["reward_model"]["ground_truth"]["target"] == ["Shakespeare"]
    with pytest.raises(ValueError, match="Question:"):
        question_from_search_r1({"prompt": [{"role": "user", "content": "no marker"}]})


def test_skill_library_covers_every_question_type():
    from verl_sdar.envs.search.corpus import TASK_TYPES
    from verl_sdar.skills import SkillLibrary

    library = SkillLibrary.load(REPO / "envs" / "search" / "skills")
    assert set(library.task_skills) == set(TASK_TYPES)
    question = "What is the capital of the country whose people are called Peruvian?"
    assert library.infer_task_type(question) == "multi_hop"


# ----------------------------------------------------------------------------- main_ppo on CPU
def test_one_sdar_step_through_main_ppo(tmp_path, qa_dir):
    """One SDAR step (validation before it) of verl's real main_ppo on CPU: tiny model, BM25 search,
    skills retrieved by question type as the teacher's privileged context."""

    from verl_sdar.envs.search.dataset import write
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    (tmp_path / "search-qa").symlink_to(qa_dir)
    write({"train": rows_from_qa(qa_dir / "train.jsonl", "train", 8),
           "val": rows_from_qa(qa_dir / "test.jsonl", "test", 6)},
          tmp_path / "search")
    records = run_main_ppo(
        tmp_path, "search/tiny_cpu_sdar",
        "trainer.total_training_steps=1", "trainer.val_before_train=true", "data.shuffle=false",
        "data.max_response_length=96", "env.max_steps=2", "env.history_length=2",
        "sdar.privileged.source=skills", f"sdar.skills.library={REPO / 'envs' / 'search' / 'skills'}",
        timeout=420,
    )
    merged = by_step(records)
    val, step = merged[0], merged[1]
    assert any(k.startswith("val-core/countryinfo/success/") for k in val), sorted(val)
    assert step["episode/episodes"] == 4 and 0.0 <= step["episode/success_rate"] <= 1.0
    assert step["sdar/rows_with_privileged"] == 1.0 and step["sdar/gate_mean"] == step["sdar/gate_mean"]
    assert step["sdar/skills/unknown_task_type_rows"] == 0.0
    assert any(k.startswith("sdar/task_type/") for k in step)
