"""A generated WebShop-style product catalogue and shopping goals (deterministic, offline).

Products carry the fields WebShop's reward reads: ``asin``, ``name`` (the title), ``query`` (the
product type: the search that "found" it), ``product_category`` (``Top › Sub › Type``),
``category`` (the top level, also the skill key), ``Attributes``, ``options`` (option name ->
values), ``price``, ``BulletPoints``, ``Description``. Goals follow WebShop's instructions: a
product picked from the catalogue, 1-3 of its attributes, one value per option, and a price bound
above its price::

    i am looking for a cotton, machine washable t-shirt with size: m, and color: navy,
    and price lower than 30.00 dollars

Many products may satisfy a goal (as in WebShop); the reward (:mod:`.reward`) says how well the
bought one does.

    python -m verl_sdar.envs.webshop.catalogue OUT_DIR [--n-products 3000] [--n-train 500] [--n-test 100] [--seed 0]

writes ``products.jsonl``, ``goals_train.jsonl``, ``goals_test.jsonl`` and ``stats.json``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

SEP = " › "
# top category -> (sub category, product types, attribute pool, {option name: value pool}, price range)
CATEGORIES: dict[str, dict] = {
    "fashion": {
        "sub": "clothing",
        "types": ["t-shirt", "hoodie", "jeans", "sneakers", "jacket", "dress"],
        "attributes": ["cotton", "machine washable", "slim fit", "relaxed fit", "long sleeve",
                       "moisture wicking", "water resistant", "button closure"],
        "options": {"size": ["x-small", "small", "medium", "large", "x-large"],
                    "color": ["black", "white", "navy", "red", "gray", "green", "beige"]},
        "price": (12.0, 90.0),
    },
    "beauty": {
        "sub": "personal care",
        "types": ["shampoo", "face cream", "lipstick", "perfume", "body lotion", "sunscreen"],
        "attributes": ["paraben free", "cruelty free", "long lasting", "natural ingredients",
                       "sensitive skin", "fragrance free", "travel size", "vegan"],
        "options": {"size": ["2 fl oz", "4 fl oz", "8 fl oz", "16 fl oz"],
                    "scent": ["lavender", "rose", "citrus", "vanilla", "unscented"]},
        "price": (5.0, 60.0),
    },
    "electronics": {
        "sub": "accessories",
        "types": ["headphones", "phone case", "charger", "speaker", "usb cable", "power bank"],
        "attributes": ["wireless", "fast charging", "noise cancelling", "water resistant",
                       "bluetooth", "portable", "shockproof", "high speed"],
        "options": {"color": ["black", "white", "blue", "red", "silver"],
                    "length": ["3 ft", "6 ft", "10 ft"]},
        "price": (8.0, 150.0),
    },
    "grocery": {
        "sub": "food",
        "types": ["coffee beans", "green tea", "protein bar", "trail mix", "olive oil", "dark chocolate"],
        "attributes": ["gluten free", "organic", "non gmo", "low sugar", "high protein",
                       "kosher", "sugar free", "keto friendly"],
        "options": {"flavor": ["original", "vanilla", "chocolate", "mint", "salted caramel"],
                    "size": ["pack of 1", "pack of 3", "pack of 6", "pack of 12"]},
        "price": (3.0, 45.0),
    },
    "home": {
        "sub": "furniture and decor",
        "types": ["pillow", "blanket", "desk lamp", "shower curtain", "storage basket", "rug"],
        "attributes": ["easy clean", "machine washable", "non slip", "eco friendly", "space saving",
                       "memory foam", "waterproof", "handmade"],
        "options": {"color": ["gray", "white", "blue", "beige", "green", "pink"],
                    "size": ["twin", "queen", "king", "small", "large"]},
        "price": (10.0, 120.0),
    },
    "sports": {
        "sub": "outdoor and fitness",
        "types": ["yoga mat", "water bottle", "running shorts", "dumbbell", "tent", "backpack"],
        "attributes": ["lightweight", "non slip", "bpa free", "quick dry", "durable",
                       "foldable", "insulated", "adjustable"],
        "options": {"color": ["black", "blue", "purple", "orange", "green"],
                    "size": ["small", "medium", "large"]},
        "price": (9.0, 130.0),
    },
}
BRANDS = ["acme", "northwind", "bluepeak", "solace", "vireo", "kestrel", "amberly", "tidewell", "corvid",
          "lumen", "harbor", "pinecrest", "quanta", "rivulet", "sablewood", "tessel"]
ADJECTIVES = ["classic", "premium", "everyday", "essential", "deluxe", "ultra", "basic", "modern"]


def type_nouns() -> set[str]:
    """Words that name things in titles: brands and product-type words (the reward's noun lexicon).

    WebShop takes the nouns of the titles with spaCy's tagger; the generated titles are built
    from known parts, so their nouns are known without a tagger model (none can be downloaded).
    """
    words = set(BRANDS)
    for spec in CATEGORIES.values():
        for product_type in spec["types"]:
            words.update(product_type.replace("-", " ").split())
    return words


def make_products(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"webshop-products-{seed}")
    categories = sorted(CATEGORIES)
    products = []
    asins: set[str] = set()
    for i in range(n):
        category = categories[i % len(categories)]
        spec = CATEGORIES[category]
        product_type = spec["types"][(i // len(categories)) % len(spec["types"])]
        brand = rng.choice(BRANDS)
        attributes = sorted(rng.sample(spec["attributes"], rng.randint(2, 4)))
        options = {name: sorted(rng.sample(values, rng.randint(2, min(4, len(values)))), key=values.index)
                   for name, values in spec["options"].items()}
        low, high = spec["price"]
        price = round(rng.uniform(low, high), 2)
        title = f"{brand.title()} {rng.choice(ADJECTIVES).title()} {product_type.title()}, {attributes[0].title()}"
        if len(attributes) > 2:
            title += f" and {attributes[1].title()}"
        while True:
            asin = "B0" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ0123456789") for _ in range(8))
            if asin not in asins:
                asins.add(asin)
                break
        bullets = [f"{a.capitalize()}: made to be {a}." for a in attributes]
        products.append(
            {
                "asin": asin,
                "name": title,
                "query": product_type,
                "category": category,
                "product_category": SEP.join([category.title(), spec["sub"].title(), product_type.title()]),
                "Attributes": attributes,
                "options": options,
                "price": price,
                "rating": round(rng.uniform(3.0, 5.0), 1),
                "BulletPoints": bullets,
                "Description": f"The {brand.title()} {product_type} is {', '.join(attributes)}.",
            }
        )
    return products


def instruction_text(product_type: str, attributes: list[str], goal_options: dict[str, str], price_upper: float) -> str:
    text = f"i am looking for a {', '.join(attributes)} {product_type}"
    if goal_options:
        text += " with " + ", and ".join(f"{k}: {v}" for k, v in goal_options.items())
    return text + f", and price lower than {price_upper:.2f} dollars"


def make_goals(products: list[dict], n: int, seed: int, exclude: set[str] = frozenset()) -> list[dict]:
    """``n`` goals from distinct products not in ``exclude`` (their asins)."""
    rng = random.Random(f"webshop-goals-{seed}")
    pool = [p for p in products if p["asin"] not in exclude]
    if n > len(pool):
        raise ValueError(f"asked for {n} goals, only {len(pool)} products are left")
    goals = []
    for product in rng.sample(pool, n):
        attributes = sorted(rng.sample(product["Attributes"], rng.randint(1, min(3, len(product["Attributes"])))))
        goal_options = {name: rng.choice(values) for name, values in product["options"].items()}
        price_upper = float(int(product["price"] * rng.uniform(1.1, 1.6)) + 1)
        goals.append(
            {
                "asin": product["asin"],
                "category": product["category"],
                "query": product["query"],
                "name": product["name"],
                "product_category": product["product_category"],
                "attributes": attributes,
                "goal_options": goal_options,
                "price_upper": price_upper,
                "instruction_text": instruction_text(product["query"], attributes, goal_options, price_upper),
            }
        )
    return goals


def build(out_dir: str | Path, n_products: int = 3000, n_train: int = 500, n_test: int = 100, seed: int = 0) -> dict:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    products = make_products(n_products, seed)
    train = make_goals(products, n_train, seed)
    test = make_goals(products, n_test, seed + 1, exclude={g["asin"] for g in train})
    for name, rows in (("products", products), ("goals_train", train), ("goals_test", test)):
        with open(out / f"{name}.jsonl", "w") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps(row if name == "products" else {"id": f"{name[6:]}_{i}", **row}) + "\n")
    stats = {
        "products": len(products),
        "categories": len(CATEGORIES),
        "product_types": sum(len(s["types"]) for s in CATEGORIES.values()),
        "goals_train": len(train),
        "goals_test": len(test),
        "goals_test_by_category": dict(sorted(Counter(g["category"] for g in test).items())),
        "seed": seed,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.webshop.catalogue", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--n-products", type=int, default=3000)
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--n-test", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(json.dumps(build(a.out_dir, a.n_products, a.n_train, a.n_test, a.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
