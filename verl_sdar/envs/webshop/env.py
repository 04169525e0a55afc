"""The WebShop-style shop: pages, actions and BM25 search over the generated catalogue.

Pages and what can be clicked there (WebShop's text mode; observations join fields with ``[SEP]``):

* search page: ``search[<query>]``
* results (10 per page, up to 5 pages): ``click[back to search]``, ``click[next >]``,
  ``click[< prev]``, ``click[<asin>]`` for each listed product
* item page: ``click[back to search]``, ``click[< prev]`` (back to the results), one
  ``click[<value>]`` per option value (selects it for that option), ``click[description]``,
  ``click[features]``, ``click[buy now]``
* description / features page: ``click[< prev]`` (back to the item)

``buy now`` ends the episode with WebShop's reward (:mod:`.reward`); so does running out of steps
(reward 0). An action that is not admissible on the current page changes nothing and is reported
(``info["valid_action"] = False``).
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

from verl_sdar.envs.contract import BOUGHT, VALID_ACTION, WON
from verl_sdar.envs.webshop.catalogue import type_nouns
from verl_sdar.envs.webshop.reward import webshop_reward

RESULTS_PER_PAGE = 10
MAX_PAGES = 5
_ACTION = re.compile(r"^\s*(search|click)\s*\[(.*)\]\s*$", re.DOTALL)


class Shop:
    """The catalogue with its BM25 index (built once, shared by every env of a process)."""

    def __init__(self, products: list[dict]):
        import bm25s

        if not products:
            raise ValueError("the catalogue is empty")
        self.products = products
        self.by_asin = {p["asin"].lower(): p for p in products}
        texts = [" ".join([p["name"], p["query"], *p["Attributes"], p["Description"]]) for p in products]
        self._index = bm25s.BM25()
        self._index.index(bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False),
                          show_progress=False)
        self._vocab = set(self._index.vocab_dict)
        self.nouns = type_nouns()
        self._lock = threading.Lock()

    @classmethod
    def from_dir(cls, folder: str | Path) -> Shop:
        with open(Path(folder) / "products.jsonl") as f:
            return cls([json.loads(line) for line in f if line.strip()])

    def search(self, query: str, k: int = RESULTS_PER_PAGE * MAX_PAGES) -> list[dict]:
        import bm25s

        words = [t for t in bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
                 if t in self._vocab]
        if not words:
            return []
        with self._lock:
            ids, scores = self._index.retrieve([words], k=min(k, len(self.products)), show_progress=False)
        return [self.products[int(i)] for i, s in zip(ids[0], scores[0], strict=True) if float(s) > 0]


class WebShopEnv:
    """One shopping episode: ``reset(goal)``, then ``step(action)`` until ``done``."""

    def __init__(self, shop: Shop, max_steps: int = 15):
        self.shop = shop
        self.max_steps = max_steps
        self.goal: dict | None = None

    # ----------------------------------------------------------------- episode
    def reset(self, goal: dict) -> tuple[str, dict]:
        self.goal = goal
        self.steps = 0
        self.done = False
        self.page = "search"
        self.results: list[dict] = []
        self.result_page = 0
        self.item: dict | None = None
        self.chosen: dict[str, str] = {}
        info = self.info(reward=0.0)
        return self.observation(), info

    def step(self, action: str) -> tuple[str, float, bool, dict]:
        if self.goal is None:
            raise RuntimeError("reset() first")
        if self.done:
            raise RuntimeError("the episode is over")
        self.steps += 1
        valid = self._apply(action.strip())
        reward = 0.0
        parts: dict = {}
        if self.page == "done":
            parts = webshop_reward(self.item, self.goal, self.chosen, self.shop.nouns)
            reward = parts["reward"]
            self.done = True
        elif self.steps >= self.max_steps:
            self.done = True
        parts.pop("reward", None)
        info = self.info(reward=reward, valid=valid, **parts)
        return self.observation(), reward, self.done, info

    def _apply(self, action: str) -> bool:
        match = _ACTION.match(action.lower())
        if match is None or action.lower() not in {a.lower() for a in self.admissible()} and match.group(1) != "search":
            return False
        kind, arg = match.group(1), match.group(2).strip()
        if kind == "search":
            if self.page != "search" or not arg:
                return False
            self.results = self.shop.search(arg)
            self.result_page, self.page = 0, "results"
            return True
        if arg == "back to search":
            self.page, self.item, self.chosen = "search", None, {}
        elif self.page == "results":
            if arg == "next >":
                self.result_page += 1
            elif arg == "< prev":
                self.result_page -= 1
            else:
                self.item, self.chosen, self.page = self.shop.by_asin[arg], {}, "item"
        elif self.page == "item":
            if arg == "< prev":
                self.page, self.item, self.chosen = "results", None, {}
            elif arg in ("description", "features"):
                self.page = arg
            elif arg == "buy now":
                self.page = "done"
            else:
                for name, values in self.item["options"].items():
                    if arg in values:
                        self.chosen[name] = arg
        elif self.page in ("description", "features") and arg == "< prev":
            self.page = "item"
        return True

    # ----------------------------------------------------------------- views
    def _listed(self) -> list[dict]:
        start = self.result_page * RESULTS_PER_PAGE
        return self.results[start : start + RESULTS_PER_PAGE]

    def admissible(self) -> list[str]:
        if self.page == "search":
            return ["search[<your query>]"]
        if self.page == "results":
            actions = ["click[back to search]"]
            if (self.result_page + 1) * RESULTS_PER_PAGE < len(self.results):
                actions.append("click[next >]")
            if self.result_page > 0:
                actions.append("click[< prev]")
            return actions + [f"click[{p['asin'].lower()}]" for p in self._listed()]
        if self.page == "item":
            options = [f"click[{v}]" for values in self.item["options"].values() for v in values]
            return ["click[back to search]", "click[< prev]", *options,
                    "click[description]", "click[features]", "click[buy now]"]
        if self.page in ("description", "features"):
            return ["click[back to search]", "click[< prev]"]
        return []

    def observation(self) -> str:
        goal = f"Instruction: [SEP] {self.goal['instruction_text']}"
        if self.page == "search":
            return f"WebShop [SEP] {goal} [SEP] Search"
        if self.page == "results":
            shown = self._listed()
            parts = ["Back to Search", f"Page {self.result_page + 1} (Total results: {len(self.results)})"]
            if (self.result_page + 1) * RESULTS_PER_PAGE < len(self.results):
                parts.append("Next >")
            for p in shown:
                parts += [p["asin"], p["name"], f"${p['price']:.2f}"]
            if not shown:
                parts.append("No results.")
            return f"{goal} [SEP] " + " [SEP] ".join(parts)
        if self.page == "item":
            p = self.item
            parts = ["Back to Search", "< Prev"]
            for name, values in p["options"].items():
                parts += [name, *values]
            chosen = ", ".join(f"{k}: {v}" for k, v in self.chosen.items()) or "none"
            parts += [p["name"], f"Price: ${p['price']:.2f}", f"Rating: {p['rating']}", f"Selected: {chosen}",
                      "Description", "Features", "Buy Now"]
            return f"{goal} [SEP] " + " [SEP] ".join(parts)
        if self.page == "description":
            return f"{goal} [SEP] Back to Search [SEP] < Prev [SEP] {self.item['Description']}"
        if self.page == "features":
            return f"{goal} [SEP] Back to Search [SEP] < Prev [SEP] " + " [SEP] ".join(self.item["BulletPoints"])
        return f"Thank you for shopping with us! [SEP] Your score (min 0.0, max 1.0) [SEP] {self._last_reward:.2f}"

    def info(self, reward: float, valid: bool = True, **parts) -> dict:
        self._last_reward = reward
        return {
            "admissible_commands": self.admissible(),
            WON: self.done and reward >= 1.0,
            "reward": reward,
            BOUGHT: self.page == "done",
            VALID_ACTION: valid,
            "asin": self.item["asin"] if self.item else None,
            "task": self.goal["instruction_text"],
            **parts,
        }
