"""Offline Search-QA and WebShop: set sizes, retrieval quality, oracle success, env throughput.

No model is involved: these are the environments' own costs and ceilings.

* Search-QA: builds the countryinfo corpus + questions (seed 0, 512 train / 128 test), indexes it
  with BM25, and measures recall@3 on the test questions with the question itself as the query
  (all supporting passages / at least one, by type), BM25 queries per second (batch of 1, as the
  agent loop calls it), and the oracle: searching each supporting passage's title, then answering
  with the golden answer from the shown text -- exact match.
* WebShop: builds the catalogue (3000 products, seed 0, 500 train / 100 test goals), and plays
  every test goal with the oracle (search the goal product's title, open it, click the goal options,
  buy) and with a random policy over admissible actions (15 steps max), reporting env steps per
  second, Score (mean reward x 100) and Acc (share of reward 1).

    python benchmarks/env_throughput.py [--out docs/env_throughput.md]
"""

from __future__ import annotations

import argparse
import platform
import random
import re
import statistics
import tempfile
import time
from pathlib import Path


def search_qa(work: Path) -> list[str]:
    from verl_sdar.envs.search.corpus import build, read_jsonl
    from verl_sdar.envs.search.prompts import information_block
    from verl_sdar.envs.search.retrieval import BM25Retriever, format_hits
    from verl_sdar.envs.search.reward import exact_match

    t0 = time.perf_counter()
    stats = build(work / "search-qa", n_train=512, n_test=128, seed=0)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    bm25 = BM25Retriever.from_jsonl(str(work / "search-qa" / "corpus.jsonl"))
    index_s = time.perf_counter() - t0
    test = read_jsonl(work / "search-qa" / "test.jsonl")
    corpus = {d["id"]: d["contents"] for d in read_jsonl(work / "search-qa" / "corpus.jsonl")}

    rows = []
    by_type: dict[str, list[tuple[bool, bool]]] = {}
    latencies = []
    for q in test:
        t0 = time.perf_counter()
        hits = bm25.search([q["question"]], 3)[0]
        latencies.append(time.perf_counter() - t0)
        ids = {h["document"]["id"] for h in hits}
        by_type.setdefault(q["task_type"], []).append(
            (all(s in ids for s in q["support"]), any(s in ids for s in q["support"])))
    oracle_em = []
    for q in test:
        shown = ""
        for s in q["support"]:  # oracle query: the supporting passage's title
            shown += information_block(format_hits(bm25.search([corpus[s].split("\n")[0]], 3)[0]))
        gold = q["golden_answers"][0]
        found = gold in shown or q["task_type"] == "comparison"  # comparisons: the answer is a compared name
        oracle_em.append(exact_match(gold if found else None, q["golden_answers"]))
    every = [x for v in by_type.values() for x in v]
    rows.append("## Search-QA (countryinfo corpus, BM25)\n")
    rows.append("| | |\n|---|---|")
    rows.append(f"| countries / passages | {stats['countries']} / {stats['passages']} |")
    rows.append(f"| questions available / train / test | {stats['questions_available']} / 512 / 128 |")
    rows.append(f"| test questions by type | {', '.join(f'{k} {v}' for k, v in stats['test_by_type'].items())} |")
    rows.append(f"| build corpus + questions / BM25 index | {build_s:.2f} s / {index_s:.2f} s |")
    rows.append("| recall@3, question as query: all supporting passages | "
                f"{sum(a for a, _ in every) / len(every):.3f} |")
    rows.append(f"| recall@3, question as query: at least one | {sum(b for _, b in every) / len(every):.3f} |")
    for t, v in sorted(by_type.items()):
        rows.append(f"| recall@3 (all / any), {t} | {sum(a for a, _ in v) / len(v):.3f} / "
                    f"{sum(b for _, b in v) / len(v):.3f} |")
    rows.append(f"| BM25 query latency, median (batch 1) | {statistics.median(latencies) * 1e3:.2f} ms "
                f"({1 / statistics.median(latencies):.0f} queries/s) |")
    rows.append("| oracle (search each supporting title, answer the gold) EM | "
                f"{sum(oracle_em) / len(oracle_em):.3f} |")
    return rows


def webshop(work: Path, seed: int = 0) -> list[str]:
    import json

    from verl_sdar.envs.webshop.catalogue import build
    from verl_sdar.envs.webshop.env import Shop, WebShopEnv

    t0 = time.perf_counter()
    stats = build(work / "webshop", n_products=3000, n_train=500, n_test=100, seed=seed)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    shop = Shop.from_dir(work / "webshop")
    index_s = time.perf_counter() - t0
    goals = [json.loads(line) for line in (work / "webshop" / "goals_test.jsonl").read_text().splitlines()]
    env = WebShopEnv(shop, max_steps=15)

    def play(policy) -> tuple[list[float], int, float]:
        rewards, steps, t0 = [], 0, time.perf_counter()
        for g in goals:
            obs, info = env.reset(g)
            done, reward = False, 0.0
            while not done:
                obs, reward, done, info = env.step(policy(g, info))
                steps += 1
            rewards.append(reward)
        return rewards, steps, time.perf_counter() - t0

    def oracle():
        plan: list[str] = []

        def act(goal, info):
            if not plan or info["admissible_commands"] == ["search[<your query>]"]:
                plan[:] = [f"search[{goal['name']}]", f"click[{goal['asin'].lower()}]",
                           *[f"click[{v}]" for v in goal["goal_options"].values()], "click[buy now]"]
            return plan.pop(0)

        return act

    rng = random.Random(seed)

    def random_policy(goal, info):
        action = rng.choice(info["admissible_commands"])
        if action.startswith("search["):
            words = re.findall(r"[a-z]+", goal["instruction_text"])
            return f"search[{' '.join(rng.sample(words, min(4, len(words))))}]"
        return action

    rows = ["\n## WebShop-style shop (generated catalogue, BM25)\n", "| | |\n|---|---|"]
    rows.append(f"| products / categories / product types | {stats['products']} / {stats['categories']} / "
                f"{stats['product_types']} |")
    rows.append(f"| goals train / test | {stats['goals_train']} / {stats['goals_test']} |")
    rows.append(f"| build catalogue + goals / BM25 index | {build_s:.2f} s / {index_s:.2f} s |")
    for name, policy in (("oracle", oracle()), ("random admissible", random_policy)):
        rewards, steps, seconds = play(policy)
        acc = sum(r >= 1.0 for r in rewards) / len(rewards)
        rows.append(f"| {name}: Score / Acc / steps per episode | {100 * statistics.mean(rewards):.1f} / "
                    f"{100 * acc:.1f} / {steps / len(goals):.1f} |")
        rows.append(f"| {name}: env steps/s (search included) | {steps / seconds:.0f} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/env_throughput.md")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        lines = [
            "# Offline Search-QA and WebShop: sizes, retrieval, oracle, throughput\n",
            f"Generated by `python benchmarks/env_throughput.py` on {platform.platform()}, "
            f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; one process, "
            "no model (the environments' own cost and ceiling). Seeds 0.\n",
            *search_qa(work),
            *webshop(work),
        ]
    text = "\n".join(lines) + "\n"
    print(text)
    Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
