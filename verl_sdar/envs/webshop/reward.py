"""WebShop's published reward, and the verl reward function of the ``webshop`` agent loop.

For a bought product with chosen options and a goal (Yao et al., 2022, ``web_agent_site/engine/goal.py``)::

    r = r_type * (n_attr_matched + n_option_matched + [price <= price_upper])
               / (n_goal_attributes + n_goal_options + 1)

``r_type`` (type match): ``title_score`` = share of the goal title's nouns found in the bought
product's title (0.2 when the goal title has none); ``r_type = 1``, but 0.5 when neither the search
query, nor at least two levels of the category path, nor ``title_score > 0.2`` match, 0.1 when
``title_score < 0.1`` and 0 when it is 0. An attribute matches when it is among the product's
attributes or appears in its title, bullet points or description; an option matches a chosen option
value (colours normalised to their base colour).

Two documented deviations, forced by working offline: nouns come from the catalogue's own noun
lexicon (brands and product-type words; WebShop runs spaCy's tagger, whose model cannot be
downloaded here), and "fuzzy ratio > 85" is a token-set match (one side's words contain the
other's, i.e. ratio 100), which on the generated closed vocabulary is the same test.

Score (the paper's WebShop metric) = mean reward x 100; Acc = share of episodes with reward 1.

The training score (verl's ``score``), two reward functions of this module:

* :func:`compute_score` (the recipes' default, the reference's): ``10 x [reward == 1]``, 10 for a
  perfect purchase and 0 for anything else, as ALFWorld's success. The authors' verl-agent fork
  trains on this binary reward and only logs the graded one.
* :func:`compute_graded_score`: ``10 x reward``, partial credit for partly right purchases.

Both log the graded reward (``webshop_score`` = 100 x reward, the paper's Score), ``success`` (Acc)
and the training score, whichever trains::

    reward.custom_reward_function.path=pkg://verl_sdar.envs.webshop.reward
    reward.custom_reward_function.name=compute_score          # or compute_graded_score
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from verl_sdar.envs.contract import BOUGHT, EPISODE_STEPS, SUCCESS, TASK_TYPE, WEBSHOP_REWARD

SCALE = 10.0
_TOKEN = re.compile(r"[a-z0-9]+")
BASE_COLORS = ("black", "white", "navy", "red", "gray", "grey", "green", "beige", "blue", "silver", "pink",
               "purple", "orange", "yellow", "brown")


def tokens(text: str) -> list[str]:
    return _TOKEN.findall(str(text).lower())


def token_set_match(a: str, b: str) -> bool:
    """One side's words all appear in the other's (what ``fuzz.token_set_ratio == 100`` tests)."""
    ta, tb = set(tokens(a)), set(tokens(b))
    return bool(ta and tb) and (ta <= tb or tb <= ta)


def normalize_color(value: str) -> str:
    for color in BASE_COLORS:
        if color in str(value).lower():
            return color
    return str(value)


def type_reward(product: Mapping, goal: Mapping, nouns: set[str]) -> dict:
    query_match = product["query"] == goal["query"]
    product_path = {x.strip() for x in product["product_category"].split("›")}
    goal_path = {x.strip() for x in goal["product_category"].split("›")}
    category_match = len(product_path & goal_path) >= 2
    desired = {t for t in tokens(goal["name"]) if t in nouns}
    bought = {t for t in tokens(product["name"]) if t in nouns}
    title_score = 0.2 if not desired else len(desired & bought) / len(desired)
    r_type = 1.0
    if not (query_match or category_match or title_score > 0.2):
        r_type = 0.5
    if title_score < 0.1:
        r_type = 0.1
    if title_score == 0.0:
        r_type = 0.0
    return {"r_type": r_type, "query_match": query_match, "category_match": category_match, "title_score": title_score}


def attribute_matches(product: Mapping, goal_attributes: Iterable[str]) -> int:
    text = " ".join([product["name"], *product.get("BulletPoints", []), product.get("Description", "")]).lower()
    count = 0
    for wanted in goal_attributes:
        if any(token_set_match(have, wanted) for have in product["Attributes"]) or wanted.lower() in text:
            count += 1
    return count


def option_matches(chosen: Iterable[str], goal_options: Iterable[str]) -> int:
    chosen = [normalize_color(c) for c in chosen]
    return sum(any(token_set_match(c, normalize_color(g)) for c in chosen) for g in goal_options)


def webshop_reward(product: Mapping, goal: Mapping, chosen_options: Mapping[str, str], nouns: set[str]) -> dict:
    """The reward and its parts for buying ``product`` with ``chosen_options`` under ``goal``."""
    r_type = type_reward(product, goal, nouns)
    n_attr = attribute_matches(product, goal["attributes"])
    n_opt = option_matches(chosen_options.values(), goal["goal_options"].values())
    r_price = float(product["price"] <= goal["price_upper"])
    denominator = len(goal["attributes"]) + len(goal["goal_options"]) + 1
    reward = r_type["r_type"] * (n_attr + n_opt + r_price) / denominator
    return {"reward": reward, "r_attr": n_attr / max(len(goal["attributes"]), 1),
            "r_option": n_opt / max(len(goal["goal_options"]), 1), "r_price": r_price, **r_type}


def _scores(extra_info, graded: bool) -> dict:
    info = extra_info or {}
    reward = float(info.get(WEBSHOP_REWARD, 0.0) or 0.0)
    success = reward >= 1.0  # WebShop's reward is at most 1: a perfect purchase
    return {
        "score": SCALE * (reward if graded else float(success)),
        "webshop_score": 100.0 * reward,   # the paper's Score (mean over episodes)
        SUCCESS: float(success),           # the paper's Acc
        BOUGHT: float(bool(info.get(BOUGHT, False))),
        EPISODE_STEPS: float(info.get(EPISODE_STEPS, 0) or 0),
        # a string: verl's own statistics skip it; the SDAR trainer reports success per category
        TASK_TYPE: str(info.get(TASK_TYPE) or "unknown"),
    }


def compute_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None, **kwargs) -> dict:
    """The reference's binary training score: ``10`` for a purchase whose WebShop reward is 1, else 0."""
    return _scores(extra_info, graded=False)


def compute_graded_score(data_source=None, solution_str=None, ground_truth=None, extra_info=None,
                         **kwargs) -> dict:
    """The graded training score ``10 x reward`` (partial credit)."""
    return _scores(extra_info, graded=True)
