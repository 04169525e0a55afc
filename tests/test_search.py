"""Search-QA: corpus and questions, BM25 and HTTP retrieval, exact match, the agent loop in both
modes (single row per episode: oracle, masking, invalid turns; one row per turn: rows, history,
turn cap, per-row penalty, prompt budget), the reference's task-type rule and its skills, and SDAR
steps through verl's real main_ppo."""

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
from verl_sdar.envs.search.dataset import (
    make_row,
    question_from_search_r1,
    question_type,
    rows_from_qa,
    rows_from_search_r1,
)
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


def _flaky_server(answers: list[str], bm25):
    """A Search-R1 server whose n-th request gets ``answers[n]``: ``"ok"`` (BM25 answer), ``"500"``,
    ``"drop"`` (connection closed without a response), ``"hang"`` (no answer for 5 s)."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    calls = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            what = answers[min(len(calls), len(answers) - 1)]
            calls.append(what)
            if what == "drop":
                self.close_connection = True
                return
            if what == "hang":
                time.sleep(5)
            if what == "500":
                self.send_error(500, "index not loaded")
                return
            body = json.dumps({"result": bm25.search(request["queries"], request["topk"])}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/retrieve", calls


def test_http_retriever_retries_and_times_out(bm25):
    """A failed request (HTTP 500, a dropped connection) is retried; a server that hangs costs at
    most ``timeout_s`` per try; when every try fails the error names the url and the try count."""
    expected = bm25.search(["capital of Peru"], 3)
    server, url, calls = _flaky_server(["500", "drop", "ok"], bm25)
    try:
        assert HTTPRetriever(url, timeout_s=5, retries=2).search(["capital of Peru"], 3) == expected
        assert calls == ["500", "drop", "ok"]
    finally:
        server.shutdown()
    server, url, calls = _flaky_server(["500", "ok"], bm25)
    try:
        with pytest.raises(RetrievalError, match=r"retriever http://127\.0\.0\.1:\d+/retrieve failed after 1 attempts"):
            HTTPRetriever(url, timeout_s=5, retries=0).search(["x"], 3)
    finally:
        server.shutdown()
    server, url, calls = _flaky_server(["hang"], bm25)
    try:
        start = time.perf_counter()
        with pytest.raises(RetrievalError, match="failed after 2 attempts"):
            HTTPRetriever(url, timeout_s=0.5, retries=1).search(["x"], 3)
        assert time.perf_counter() - start < 4.0  # two 0.5 s tries and the back-off, not the 5 s hangs
    finally:
        server.shutdown()
    with pytest.raises(ValueError, match="timeout_s must be > 0"):
        HTTPRetriever(url, timeout_s=0)


def test_loop_search_timeout_covers_every_try():
    from verl_sdar.envs.search.loop_common import DEFAULTS, open_retriever

    settings = {"retriever": {**DEFAULTS["retriever"], "url": "http://127.0.0.1:9/retrieve", "timeout_s": 2.0,
                              "retries": 2}}
    retriever, topk, timeout_s = open_retriever(settings)
    assert (retriever.timeout_s, retriever.retries, topk) == (2.0, 2, 3)
    assert timeout_s == pytest.approx(3 * 2.0 + 0.2 + 0.4 + 0.6)


def test_retriever_health_check_names_the_key(bm25):
    """The start-up probe (``verl_sdar.config.check_retriever``): a live server passes, a dead url
    or one answering another protocol stops the run naming ``env.retriever.url``."""
    from omegaconf import OmegaConf

    from verl_sdar.config import SDARConfigError, check_retriever
    from verl_sdar.envs.search.server import serve_in_thread

    server, url = serve_in_thread(bm25)
    try:
        assert check_retriever(OmegaConf.create({"env": {"retriever": {"url": url, "timeout_s": 5}}})) == url
    finally:
        server.shutdown()
    dead = OmegaConf.create({"env": {"retriever": {"url": url, "timeout_s": 1}}})
    with pytest.raises(SDARConfigError, match=r"env\.retriever\.url='http://127.*' does not answer a search"):
        check_retriever(dead)
    dead.env.retriever.health_check = False
    assert check_retriever(dead) is None
    assert check_retriever(OmegaConf.create({"env": {"retriever": {"url": None, "corpus_path": "c.jsonl"}}})) is None
    assert check_retriever(OmegaConf.create({})) is None
    wrong = OmegaConf.create({"env": {"retriever": {"url": "localhost:8000"}}})
    with pytest.raises(SDARConfigError, match="must start with http"):
        check_retriever(wrong)


def test_main_ppo_stops_when_the_retriever_does_not_answer(tmp_path):
    """The real entry point with the Search recipe and a retriever url nothing listens on: the job
    stops at start-up (Hydra callback), naming env.retriever.url; Ray never starts."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as s:  # a free port, closed again: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, HYDRA_FULL_ERROR="1", RAY_ADDRESS="", VERL_SDAR_WORK=str(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "verl.trainer.main_ppo", f"--config-path={REPO / 'recipes' / 'search'}",
         "--config-name=tiny_cpu_sdar", f"env.retriever.url=http://127.0.0.1:{port}/retrieve",
         f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert f"env.retriever.url='http://127.0.0.1:{port}/retrieve' does not answer a search" in proc.stderr, \
        proc.stderr[-3000:]
    assert "ray init kwargs" not in proc.stdout and "Started a local Ray instance" not in proc.stdout + proc.stderr


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
def test_parse_action_with_our_rules():
    a = parse_action("<think>x</think><search> capital  of Peru </search> and then <answer>Lima</answer>", "ours")
    assert a.kind == "search" and a.content == "capital of Peru" and a.valid  # ours: several blocks are fine
    assert a.end == len("<think>x</think><search> capital  of Peru </search>")
    assert parse_action("<answer> Lima </answer>", "ours").content == "Lima"
    assert parse_action("I think it is Lima", "ours").kind == "invalid"
    assert parse_action("<answer>   </answer>", "ours").reason == "empty <answer> block"
    assert information_block("Doc 1") == "\n\n<information>Doc 1</information>\n\n"


@pytest.mark.parametrize("text, kind, content, valid, reason", [
    # one block of either kind: valid (an empty block too)
    ("<think>x</think><search> capital  of Peru </search>", "search", "capital  of Peru", True, ""),
    ("<answer> Lima </answer>", "answer", "Lima", True, ""),
    ("<ANSWER>Lima</Answer>", "answer", "Lima", True, ""),
    ("<answer>   </answer>", "answer", "", True, ""),
    # both tags: invalid, but the <search> block (first by the reference's order) still runs
    ("<answer>Lima</answer> <search>Peru</search>", "search", "Peru", False, "both <search> and <answer> tags"),
    ("<search> a </search> then <answer>Lima</answer>", "search", "a", False, "both <search> and <answer> tags"),
    ("<search><answer>Lima</answer></search>", "search", "<answer>Lima</answer>", False,
     "both <search> and <answer> tags"),
    # two of one tag: invalid; the first block runs
    ("<search>a</search><search>b</search>", "search", "a", False, "more than one <search> or <answer> tag"),
    ("<answer>Lima</answer><answer>Quito</answer>", "answer", "Lima", False,
     "more than one <search> or <answer> tag"),
    # no complete block: invalid, nothing runs
    ("I think it is Lima", "invalid", "", False, "no <search> or <answer> block"),
    ("<search>unclosed", "invalid", "", False, "no <search> or <answer> block"),
])
def test_parse_action_with_the_references_rules(text, kind, content, valid, reason):
    """verl-agent's ``search_projection`` (the authors' code): cut after the first ``</search>``, else
    ``</answer>``; the first search block, else the first answer block; invalid with no block, both
    tags, or more than one of either."""
    a = parse_action(text)  # the default rules are the reference's
    assert (a.kind, a.content, a.valid, a.reason) == (kind, content, valid, reason)
    if kind != "invalid":
        assert text[: a.end].lower().endswith(f"</{kind}>")


def test_unknown_action_rules_are_refused():
    with pytest.raises(ValueError, match="env.action_rules"):
        parse_action("<answer>x</answer>", "strict")


# ----------------------------------------------------------------------------- agent loop
def make_search_loop(tokenizer, server, qa_dir, max_steps=4, response_length=512, prompt_length=4096, **env):
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop

    env = {"max_steps": max_steps, "history_length": 4,
           "retriever": {"corpus_path": str(qa_dir / "corpus.jsonl"), "topk": 3}, **env}
    return make_agent_loop(SearchAgentLoop, tokenizer, server, env, response_length=response_length,
                           prompt_length=prompt_length)


def kwargs_of(question: dict) -> dict:
    row = make_row(question["question"], question["golden_answers"], question["task_type"], "countryinfo", "test", 0)
    return {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}


def oracle(question: dict, corpus: dict[str, str], shown_as=r"\n\n<information>(.*?)</information>"):
    """Searches the title of each supporting passage, then answers from the information shown
    (``shown_as``: how the documents appear in the prompt)."""
    script = [f"<think>look up {s}</think><search> {corpus[s].split(chr(10))[0]} </search>"
              for s in question["support"]]

    def answer(prompt_text: str) -> str:
        shown = re.findall(shown_as, prompt_text, re.DOTALL)
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
    out = run_episode(lambda: make_search_loop(tokenizer, server, qa_dir, action_rules="ours"), **kwargs_of(q))
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


def test_multi_tag_responses_are_penalised_and_still_act_under_the_references_rules(tokenizer, qa_dir):
    """The default ``env.action_rules=reference``: a response with both tags, or with two searches, is
    an invalid turn (penalised) whose first search still runs; a lone answer ends the episode."""
    q = read_jsonl(qa_dir / "test.jsonl")[0]
    responses = ["<search> capital </search> <answer> Lima </answer>", "<search> a </search><search> b </search>",
                 f"<answer> {q['golden_answers'][0]} </answer>"]
    server = FakeServer(tokenizer, responses)
    out = run_episode(lambda: make_search_loop(tokenizer, server, qa_dir), **kwargs_of(q))
    f = out.extra_fields
    assert f["searches"] == 2 and f["invalid_turns"] == 2 and f["won"]
    assert f["invalid_action_penalty"] == pytest.approx(0.02)
    assert "both <search> and <answer> tags" in f["invalid_reason"]
    assert "more than one <search> or <answer> tag" in f["invalid_reason"]
    masked = tokenizer.decode([t for t, m in zip(out.response_ids, out.response_mask, strict=True) if m == 0])
    assert masked.count("<information>") == 2 and "Invalid action" not in masked  # both searches ran


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
    # the reference's rule: hotpotqa is multi-hop whatever the wording; nq direct
    assert [r["extra_info"]["task_type"] for r in loaded] == ["multi_hop", "direct_lookup"]
    assert loaded[1]["reward_model"]["ground_truth"]["target"] == ["Shakespeare"]
    with pytest.raises(ValueError, match="Question:"):
        question_from_search_r1({"prompt": [{"role": "user", "content": "no marker"}]})


def test_skill_library_covers_every_question_type():
    from verl_sdar.envs.search.corpus import TASK_TYPES
    from verl_sdar.skills import SkillLibrary

    library = SkillLibrary.load(REPO / "envs" / "search" / "skills")
    assert set(library.task_skills) == set(TASK_TYPES) | {"entity_attribute"}
    # no keywords, as the reference's Search library: keyword rules find no question type
    question = "What is the capital of the country whose people are called Peruvian?"
    assert not library.keywords and library.infer_task_type(question) is None


# ----------------------------------------------------------------------------- task types (the reference's rule)
@pytest.mark.parametrize(
    "question, source, own, expected",
    [
        # 1-3: the sources decided before the wording (even a "which ... or" question)
        ("What is George Rankin's occupation?", "popqa", None, "entity_attribute"),
        ("Which city was X born in, Rome or Paris?", "PopQA", None, "entity_attribute"),
        ("who wrote hamlet?", "nq", None, "direct_lookup"),
        ("Which planet is bigger, Mars or Venus?", "triviaqa", None, "direct_lookup"),
        ("Which is older, A or B?", "hotpotqa", None, "multi_hop"),
        # 4: "which" and "or" and no "for" (whole words, any case) -> comparison, before 5
        ("Which film came out first, Alpha or Beta?", "2wikimultihopqa", None, "comparison"),
        ("WHICH band formed earlier, X OR Y?", "musique", None, "comparison"),
        ("Which team played for longer, X or Y?", "2wikimultihopqa", None, "multi_hop"),      # "for": no
        ("Which country is Lima in?", "bamboogle", None, "multi_hop"),                         # no "or"
        ("Who was older, X or Y?", "musique", None, "multi_hop"),                             # no "which"
        ("Which world record is the oldest?", "some_set", None, "general"),                   # "or" in "world" only
        ("Which performer sang, X or Y?", "some_set", None, "comparison"),                    # "for" in a word only
        # 5: multi-hop sources
        ("Who is the father of the director of film X?", "2wikimultihopqa", None, "multi_hop"),
        ("When was the founder of X born?", "musique", None, "multi_hop"),
        ("Who was president when X was founded?", "bamboogle", None, "multi_hop"),
        # 6: anything else: the set's own type when it has one, else general only
        ("What is the capital of Peru?", "countryinfo", "direct_lookup", "direct_lookup"),
        ("What are the people of the country whose capital is Lima called?", "countryinfo", "multi_hop", "multi_hop"),
        ("Which country has the larger population, Peru or Chile?", "countryinfo", "comparison", "comparison"),
        ("Which country is larger by area, Peru or Chile?", "countryinfo", "multi_hop", "comparison"),  # rule applies
        ("Who wrote it?", "unknown_source", None, "general"),
    ],
)
def test_task_type_rule_of_the_reference(question, source, own, expected):
    assert question_type(question, source, own) == expected


def test_every_task_type_retrieves_its_skill_and_general_gets_general_skills_only(tmp_path):
    import pandas as pd

    from verl_sdar.skills import SkillLibrary, make_retriever

    r1 = pd.DataFrame([
        {"data_source": source, "question": question, "prompt": [{"role": "user", "content": "Question: x"}],
         "reward_model": {"style": "rule", "ground_truth": {"target": ["a"]}}}
        for source, question in [("popqa", "What is X's occupation?"), ("nq", "who wrote hamlet?"),
                                 ("hotpotqa", "Which is older, A or B?"), ("bamboogle", "Which is older, A or B?"),
                                 ("musique", "Who founded X?"), ("webq", "where is X?")]
    ])
    r1.to_parquet(tmp_path / "r1.parquet")
    rows = rows_from_search_r1(tmp_path / "r1.parquet", "train")
    types = [r["extra_info"]["task_type"] for r in rows]
    assert types == ["entity_attribute", "direct_lookup", "multi_hop", "comparison", "multi_hop", "general"]
    library = SkillLibrary.load(REPO / "envs" / "search" / "skills")
    retriever = make_retriever("task_type", library)
    general = tuple(s.skill_id for s in library.general)
    got = [retriever.retrieve(task_type=t).skill_ids for t in types]
    assert got[0] == (*general, "task_types/entity_attribute.md")
    assert got[1] == (*general, "task_types/direct_lookup.md")
    assert got[2] == got[4] == (*general, "task_types/multi_hop.md")
    assert got[3] == (*general, "task_types/comparison.md")
    assert got[5] == general and dict(retriever.unknown) == {"general": 1}
    assert "occupation" in library.task_skills["entity_attribute"].text


# ----------------------------------------------------------------------------- one row per turn
def make_turn_loop(tokenizer, server, qa_dir, max_steps=4, history_length=4, response_length=512,
                   prompt_length=4096, **env):
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop

    env = {"turn_rows": True, "max_steps": max_steps, "history_length": history_length,
           "retriever": {"corpus_path": str(qa_dir / "corpus.jsonl"), "topk": 3}, **env}
    return make_agent_loop(SearchAgentLoop, tokenizer, server, env, response_length=response_length,
                           prompt_length=prompt_length)


def prompt_texts(tokenizer, server) -> list[str]:
    return [tokenizer.decode(p) for p in server.prompts]


def test_turn_rows_are_selected_by_env_turn_rows_or_the_agent_loop_entry(tokenizer, qa_dir):
    """verl instantiates the `search` entry with hydra; the key picks the class, rows stay `search`."""
    import hydra
    from omegaconf import OmegaConf
    from verl.experimental.agent_loop.agent_loop import DictConfigWrap
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from verl_sdar.envs.hydra_callback import AGENT_LOOPS
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop
    from verl_sdar.envs.search.turn_agent_loop import SearchTurnAgentLoop

    entry = next(e for e in AGENT_LOOPS if e["name"] == "search")

    async def build(env: dict, **extra):
        config = OmegaConf.create({"actor_rollout_ref": {"rollout": {"prompt_length": 4096, "response_length": 512}},
                                   "data": {}, "env": {"retriever": {"corpus_path": str(qa_dir / "corpus.jsonl")},
                                                       **env}})
        return hydra.utils.instantiate(
            {**entry, **extra}, trainer_config=DictConfigWrap(config), server_manager=None, tokenizer=tokenizer,
            processor=None, dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data))

    import asyncio

    turn = asyncio.run(build({"turn_rows": True}))
    assert type(turn) is SearchTurnAgentLoop and turn.max_steps == 4 and turn.history_length == 4
    assert turn.penalty == 0.01 and turn.prompt_length == 4096
    assert type(asyncio.run(build({}))) is SearchAgentLoop                  # default: one row per episode
    assert type(asyncio.run(build({"turn_rows": False}))) is SearchAgentLoop
    assert type(asyncio.run(build({}, turn_rows=True))) is SearchTurnAgentLoop  # key in the loop's entry
    assert type(asyncio.run(build({"turn_rows": True}, turn_rows=False))) is SearchAgentLoop
    # turn rows show history_length turns: a history shorter than max_steps is allowed there
    assert asyncio.run(build({"turn_rows": True, "history_length": 2})).history_length == 2


def test_turn_rows_oracle_one_row_per_turn_won_on_every_row(tokenizer, qa_dir):
    corpus = {d["id"]: d["contents"] for d in read_jsonl(qa_dir / "corpus.jsonl")}
    per_type = {}
    for q in read_jsonl(qa_dir / "test.jsonl"):
        per_type.setdefault(q["task_type"], q)
    for task_type, q in sorted(per_type.items()):
        server = FakeServer(tokenizer, oracle(q, corpus, shown_as=r"</search>\n<information>(.*?)</information>"))
        rows = run_episode(lambda server=server: make_turn_loop(tokenizer, server, qa_dir, action_rules="ours"),
                           **kwargs_of(q))
        n = len(q["support"]) + 1
        assert isinstance(rows, list) and len(rows) == n == len(server.prompts)
        texts = prompt_texts(tokenizer, server)
        for i, (row, text) in enumerate(zip(rows, texts, strict=True)):
            f = row.extra_fields
            assert f["turn"] == i and f["valid"] and f["invalid_action_penalty"] == 0.0 and f["invalid_reason"] == ""
            assert f["won"] and f["answer"] == q["golden_answers"][0] and f["task_type"] == task_type
            assert f["searches"] == n - 1 and f["invalid_turns"] == 0 and f["episode_steps"] == n
            assert f["reward_extra_info"] == {} and f["env_error"] == ""
            assert row.prompt_ids == server.prompts[i]                   # the row's prompt is what was asked
            assert row.response_mask == [1] * len(row.response_ids) == [1] * len(row.response_logprobs)
            assert q["question"] in text and text.count("\n<information>") == i  # every earlier turn shown
            response = tokenizer.decode(row.response_ids, skip_special_tokens=True)
            assert response.rstrip().endswith("</search>" if i < n - 1 else "</answer>")  # the rest was cut
        assert rows[-1].extra_fields["action"] == f"<answer> {q['golden_answers'][0]} </answer>"
        assert rows[0].extra_fields["action"].startswith("<search> ")
        # verl scores the last row (EM) and copies the score to the earlier ones
        last = {**kwargs_of(q)["extra_info"], **rows[-1].extra_fields}
        assert compute_score("countryinfo", "", {"target": q["golden_answers"]}, last)["score"] == 1.0
        assert "temperature" in server.sampling_params[0]


def test_turn_rows_under_the_references_rules_keep_the_whole_response_and_penalise_multi_tag_ones(
        tokenizer, qa_dir):
    """The default ``env.action_rules=reference``: the row trains on the whole generation (nothing cut
    after the closing tag); a response with a search and an answer is penalised, its search runs;
    an empty answer is a valid (wrong) answer that ends the episode."""
    q = read_jsonl(qa_dir / "test.jsonl")[0]
    script = ["<search> capital of Peru </search> then more", "<search> Chile </search> <answer> Lima </answer>",
              "<answer>  </answer>", "<answer> never asked </answer>"]
    server = FakeServer(tokenizer, script)
    rows = run_episode(lambda: make_turn_loop(tokenizer, server, qa_dir), **kwargs_of(q))
    assert len(rows) == 3 == len(server.prompts)
    assert [r.extra_fields["valid"] for r in rows] == [True, False, True]
    assert [r.extra_fields["invalid_action_penalty"] for r in rows] == [0.0, 0.01, 0.0]
    assert rows[1].extra_fields["invalid_reason"] == "both <search> and <answer> tags"
    assert "then more" in tokenizer.decode(rows[0].response_ids)  # not cut
    assert "<answer> Lima </answer>" in tokenizer.decode(rows[1].response_ids)
    assert rows[1].extra_fields["action"] == "<search> Chile </search>"
    f = rows[-1].extra_fields
    assert f["searches"] == 2 and f["invalid_turns"] == 1 and f["answer"] == "" and not f["won"]
    texts = prompt_texts(tokenizer, server)
    assert "Turn 2: <search> Chile </search>" in texts[2]  # the invalid response's search ran


def test_turn_rows_invalid_turns_penalised_per_row_and_the_turn_cap(tokenizer, qa_dir):
    from verl_sdar.advantages import penalise_rewards, row_penalties

    q = read_jsonl(qa_dir / "test.jsonl")[0]
    script = ["I do not know", "<think>x</think><search> capital of Peru </search> then more",
              "<answer>  </answer>", "<search> Chile </search>", "<answer> never asked </answer>"]
    server = FakeServer(tokenizer, script)
    rows = run_episode(lambda: make_turn_loop(tokenizer, server, qa_dir, action_rules="ours"), **kwargs_of(q))
    assert len(rows) == 4 == len(server.prompts)                          # env.max_steps turns, no more
    assert [r.extra_fields["valid"] for r in rows] == [False, True, False, True]
    assert [r.extra_fields["invalid_action_penalty"] for r in rows] == [0.01, 0.0, 0.01, 0.0]
    assert rows[0].extra_fields["invalid_reason"] == "no <search> or <answer> block"
    assert rows[2].extra_fields["invalid_reason"] == "empty <answer> block"
    for r in rows:  # episode fields on every row
        f = r.extra_fields
        assert not f["won"] and f["answer"] is None and f["invalid_turns"] == 2 and f["searches"] == 2
    texts = prompt_texts(tokenizer, server)
    assert "Invalid action" in texts[1] and "Turn 1: (no valid action: no <search> or <answer> block)" in texts[1]
    assert "Turn 2: <search> capital of Peru </search>" in texts[2] and "Peru (geography)" in texts[2]
    assert "last turn" in texts[3] and "last turn" not in texts[2]
    assert "then more" not in tokenizer.decode(rows[1].response_ids)      # cut after </search>
    assert "then more" not in texts[2]  # what follows an action is never shown either
    # what the trainer trains on: EM (0, copied to every row) minus each row's own penalty
    score = compute_score("countryinfo", "", {"target": q["golden_answers"]},
                          {**kwargs_of(q)["extra_info"], **rows[-1].extra_fields})["score"]
    trained = penalise_rewards([torch.tensor([0.0, score]) for _ in rows],
                               row_penalties([r.extra_fields for r in rows]))
    assert [round(float(t.sum()), 6) for t in trained] == [-0.01, 0.0, -0.01, 0.0]


def test_turn_rows_show_the_last_history_length_turns(tokenizer, qa_dir):
    q = read_jsonl(qa_dir / "test.jsonl")[0]
    queries = ["Peru capital", "Chile capital", "Brazil capital", "France capital", "Japan capital"]
    server = FakeServer(tokenizer, [f"<search> {x} </search>" for x in queries] + ["<answer> Lima </answer>"])
    rows = run_episode(lambda: make_turn_loop(tokenizer, server, qa_dir, max_steps=6), **kwargs_of(q))
    assert len(rows) == 6
    texts = prompt_texts(tokenizer, server)
    # turn 5's prompt: all 4 earlier turns; turn 6's: turns 2-5, turn 1 left out
    assert all(f"Turn {i}: <search> {queries[i - 1]} </search>" in texts[4] for i in range(1, 5))
    assert "Turn 1:" not in texts[5] and "Peru capital" not in texts[5]
    assert all(f"Turn {i}: <search> {queries[i - 1]} </search>" in texts[5] for i in range(2, 6))
    assert texts[5].count("\n<information>") == 4 and "taken 5 turn(s)" in texts[5]
    server2 = FakeServer(tokenizer, [f"<search> {x} </search>" for x in queries[:3]])
    run_episode(lambda: make_turn_loop(tokenizer, server2, qa_dir, history_length=2), **kwargs_of(q))
    last = prompt_texts(tokenizer, server2)[3]
    assert "Turn 1:" not in last and "Turn 2: <search> Chile capital" in last and last.count("\n<information>") == 2


def test_turn_prompt_never_exceeds_the_budget(tokenizer, qa_dir):
    from verl_sdar.envs.search.prompts import search_turn, turn_prompt

    q = read_jsonl(qa_dir / "test.jsonl")[0]
    queries = ["Peru", "Chile", "Brazil"]

    async def length(text):  # a prompt's length through the chat template
        loop = make_turn_loop(tokenizer, FakeServer(tokenizer, []), qa_dir)
        return len(await loop._render_whole(text))

    import asyncio

    bare = asyncio.run(length(turn_prompt(q["question"], [], 4, 4)))
    # turn 4 showing only turn 3 with empty documents, plus room for a fraction of one turn's documents
    budget = asyncio.run(length(turn_prompt(q["question"], [search_turn(x, "") for x in queries], 4, 4, shown=1))) + 40
    server = FakeServer(tokenizer, [f"<search> {x} </search>" for x in queries])
    rows = run_episode(lambda: make_turn_loop(tokenizer, server, qa_dir, prompt_length=budget), **kwargs_of(q))
    assert len(rows) == 4
    texts = prompt_texts(tokenizer, server)
    for row, ids, text in zip(rows, server.prompts, texts, strict=True):
        assert len(ids) <= budget and len(row.prompt_ids) <= budget
        assert q["question"] in text
    # the newest turn is kept (shortened), older ones are dropped first
    assert "Turn 3: <search> Brazil </search>" in texts[3] and "Turn 1:" not in texts[3]
    assert "[...]" in texts[3]
    # a question too long for the budget is shortened; instructions that alone do not fit are an error
    long_q = dict(q, question=q["question"] + " and" * 400)
    server = FakeServer(tokenizer, ["<answer> x </answer>"])
    run_episode(lambda: make_turn_loop(tokenizer, server, qa_dir, prompt_length=budget), **kwargs_of(long_q))
    assert len(server.prompts[0]) <= budget
    with pytest.raises(ValueError, match="prompt budget"):
        run_episode(lambda: make_turn_loop(tokenizer, FakeServer(tokenizer, []), qa_dir, prompt_length=bare // 2),
                    **kwargs_of(q))


def test_single_row_prompt_keeps_the_instructions_when_the_question_is_too_long(tokenizer, qa_dir):
    """The single-row loop's one prompt fits ``prompt_length``: an over-long question is cut at its
    end (the instructions stay in front), and a budget the instructions alone exceed is an error."""
    import asyncio

    from verl_sdar.envs.search.prompts import build_prompt

    q = read_jsonl(qa_dir / "test.jsonl")[0]

    async def length(text):
        loop = make_search_loop(tokenizer, FakeServer(tokenizer, []), qa_dir)
        return len(await loop._render_whole(text))

    budget = asyncio.run(length(build_prompt(q["question"], 4))) + 30
    long_q = dict(q, question=q["question"] + " and" * 400)
    server = FakeServer(tokenizer, [f"<answer>{q['golden_answers'][0]}</answer>"])
    out = run_episode(lambda: make_search_loop(tokenizer, server, qa_dir, prompt_length=budget), **kwargs_of(long_q))
    assert out.extra_fields["won"]
    assert len(server.prompts[0]) <= budget and len(out.prompt_ids) <= budget
    text = tokenizer.decode(server.prompts[0])
    assert build_prompt("", 4).split("{")[0][:40] in text  # the instructions' opening is kept
    assert q["question"] in text and "[...]" in text
    bare = asyncio.run(length(build_prompt("", 4)))
    with pytest.raises(ValueError, match="prompt budget"):
        run_episode(lambda: make_search_loop(tokenizer, FakeServer(tokenizer, []), qa_dir, prompt_length=bare // 2),
                    **kwargs_of(q))


def test_turn_rows_student_prefix_hook_and_retrieval_failure(tokenizer, qa_dir):
    class Down:
        def search(self, queries, topk):
            raise RetrievalError("server down")

    q = read_jsonl(qa_dir / "test.jsonl")[0]
    server = FakeServer(tokenizer, ["<search> x </search>", f"<answer>{q['golden_answers'][0]}</answer>"])

    def make():
        loop = make_turn_loop(tokenizer, server, qa_dir)
        loop.retriever = Down()
        loop.student_prefix = lambda row, extra_info, question, history: f"SKILL FOR {extra_info['task_type']}\n\n"
        return loop

    rows = run_episode(make, **kwargs_of(q))
    texts = prompt_texts(tokenizer, server)
    assert all(f"user\nSKILL FOR {q['task_type']}\n\nYou answer a question" in t for t in texts)
    assert "Search failed (RetrievalError)" in texts[1] and rows[1].extra_fields["won"]
    assert rows[0].extra_fields["env_error"].startswith("retrieval failed: RetrievalError")
    assert rows[1].extra_fields["env_error"] == ""


# ----------------------------------------------------------------------------- main_ppo on CPU
def _main_ppo_data(tmp_path, qa_dir):
    """Tiny model and 8 train / 6 val questions under ``tmp_path`` (the CPU recipe's layout)."""
    from verl_sdar.envs.search.dataset import write
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    (tmp_path / "search-qa").symlink_to(qa_dir)
    write({"train": rows_from_qa(qa_dir / "train.jsonl", "train", 8),
           "val": rows_from_qa(qa_dir / "test.jsonl", "test", 6)},
          tmp_path / "search")


def test_one_sdar_step_through_main_ppo(tmp_path, qa_dir):
    """One SDAR step (validation before it) of verl's real main_ppo on CPU: tiny model, BM25 search,
    skills retrieved by question type as the teacher's privileged context."""

    _main_ppo_data(tmp_path, qa_dir)
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


def test_one_sdar_step_with_turn_rows_through_main_ppo(tmp_path, qa_dir):
    """The paper's setup through verl's real main_ppo on CPU: one row per turn (``env.turn_rows``),
    turn-row GRPO, validation before one SDAR step, skills by the rows' task type."""

    _main_ppo_data(tmp_path, qa_dir)
    records = run_main_ppo(
        tmp_path, "search/tiny_cpu_sdar",
        "trainer.total_training_steps=1", "trainer.val_before_train=true", "data.shuffle=false",
        "++env.turn_rows=true", "algorithm.adv_estimator=turn_row_grpo",
        "data.max_prompt_length=1024", "data.max_response_length=48", "env.max_steps=2", "env.history_length=2",
        "sdar.privileged.source=skills", f"sdar.skills.library={REPO / 'envs' / 'search' / 'skills'}",
        log_name="turn_rows", timeout=420,
    )
    merged = by_step(records)
    val, step = merged[0], merged[1]
    assert any(k.startswith("val-core/countryinfo/success/") for k in val), sorted(val)
    assert step["episode/episodes"] == 4 and 0.0 <= step["episode/success_rate"] <= 1.0
    assert step["sdar/rows_with_privileged"] == 1.0 and step["sdar/gate_mean"] == step["sdar/gate_mean"]
    assert step["sdar/skills/unknown_task_type_rows"] == 0.0
