"""Offline Search-QA set: passages and questions built from the ``countryinfo`` package.

Two passages per country (``geography``: region, capital, area, neighbours; ``people``:
population, demonym, languages, currency, calling code), so some questions need one retrieval
and some need two. Question types (the teacher's skills are keyed by them):

* ``direct_lookup`` -- one fact from one passage: "What is the capital of Peru?"
* ``multi_hop``     -- a bridge entity: "What are the people of the country whose capital is
  Lima called?" (geography passage gives the country, its people passage the demonym)
* ``comparison``    -- two entities: "Which country has the larger population, Peru or Chile?"

Every question records the passage ids that support it (``support``), so retrieval recall can
be measured. Countries without a capital, region, population, area or demonym are skipped, and
facts shared by several countries (a capital name, a demonym, a calling code) are never used
as a bridge, so each question has one answer.

    python -m verl_sdar.envs.search.corpus OUT_DIR [--n-train 512] [--n-test 128] [--seed 0]

writes ``corpus.jsonl`` (``{"id", "title", "contents"}``; ``contents`` = title line + text, the
Search-R1 corpus format), ``train.jsonl`` / ``test.jsonl`` (``{"id", "question", "golden_answers",
"task_type", "support"}``) and ``stats.json``.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

TASK_TYPES = ("direct_lookup", "multi_hop", "comparison")


@dataclass(frozen=True)
class Country:
    name: str
    alpha3: str
    capital: str
    region: str
    subregion: str
    area: int
    population: int
    demonym: str
    languages: tuple[str, ...]
    currencies: tuple[str, ...]
    calling_code: str
    borders: tuple[str, ...]


def load_countries() -> list[Country]:
    """The countries of ``countryinfo`` with every field the passages need, sorted by name."""
    from countryinfo import all_countries

    countries = []
    for entry in all_countries():
        info = entry.info()
        needed = ("name", "capital", "region", "area", "population", "demonym")
        if not all(info.get(k) for k in needed):
            continue
        countries.append(
            Country(
                name=str(info["name"]),
                alpha3=str((info.get("ISO") or {}).get("alpha3", "")),
                capital=str(info["capital"]),
                region=str(info["region"]),
                subregion=str(info.get("subregion") or info["region"]),
                area=int(info["area"]),
                population=int(info["population"]),
                demonym=str(info["demonym"]),
                languages=tuple(info.get("languages") or ()),
                currencies=tuple(info.get("currencies") or ()),
                calling_code=str((info.get("callingCodes") or [""])[0]),
                borders=tuple(info.get("borders") or ()),
            )
        )
    countries.sort(key=lambda c: c.name)
    return countries


def _join(names: list[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


def passages(countries: list[Country]) -> list[dict]:
    """Two passages per country, ids ``<alpha3-or-index>-geo`` / ``-people``."""
    by_code = {c.alpha3: c.name for c in countries if c.alpha3}
    out = []
    for i, c in enumerate(countries):
        key = c.alpha3 or f"C{i:03d}"
        neighbours = [by_code[b] for b in c.borders if b in by_code]
        border_text = (
            f"It shares land borders with {_join(neighbours)}." if neighbours else "It has no land borders."
        )
        geo = (
            f"{c.name} is a country in {c.subregion} ({c.region}). Its capital city is {c.capital}. "
            f"{c.name} covers an area of {c.area:,} square kilometres. {border_text}"
        )
        languages = f"Language codes spoken: {', '.join(c.languages)}. " if c.languages else ""
        currency = f"Its currency code is {', '.join(c.currencies)}. " if c.currencies else ""
        calling = f"The international calling code of {c.name} is +{c.calling_code}." if c.calling_code else ""
        people = (
            f"{c.name} has a population of about {c.population:,} people. People from {c.name} are called "
            f"{c.demonym}. {languages}{currency}{calling}"
        ).strip()
        for suffix, title, text in ((
            "geo", f"{c.name} (geography)", geo), ("people", f"{c.name} (people)", people)):
            out.append({"id": f"{key}-{suffix}", "title": title, "contents": f"{title}\n{text}"})
    return out


def _unique(values: list[str]) -> set[str]:
    counts = Counter(v.lower() for v in values)
    return {v for v in values if counts[v.lower()] == 1}


def questions(countries: list[Country], seed: int) -> list[dict]:
    """Every question the templates give (each with one answer), shuffled deterministically."""
    keys = {c.name: (c.alpha3 or f"C{i:03d}") for i, c in enumerate(countries)}
    unique_capitals = _unique([c.capital for c in countries])
    unique_demonyms = _unique([c.demonym for c in countries])
    out: list[dict] = []

    def add(question: str, answers: list[str], task_type: str, support: list[str]) -> None:
        out.append({"question": question, "golden_answers": answers, "task_type": task_type, "support": support})

    for c in countries:
        geo, people = f"{keys[c.name]}-geo", f"{keys[c.name]}-people"
        add(f"What is the capital of {c.name}?", [c.capital], "direct_lookup", [geo])
        add(f"What are people from {c.name} called?", [c.demonym], "direct_lookup", [people])
        if c.currencies:
            add(f"What is the currency code of {c.name}?", [c.currencies[0]], "direct_lookup", [people])
        if c.capital in unique_capitals:
            add(f"What are the people of the country whose capital is {c.capital} called?", [c.demonym],
                "multi_hop", [geo, people])
            if c.calling_code:
                add(f"What is the international calling code of the country whose capital is {c.capital}?",
                    [c.calling_code, f"+{c.calling_code}"], "multi_hop", [geo, people])
        if c.demonym in unique_demonyms:
            add(f"What is the capital of the country whose people are called {c.demonym}?", [c.capital],
                "multi_hop", [people, geo])
    rng = random.Random(seed)
    for _ in range(len(countries)):
        a, b = rng.sample(countries, 2)
        if a.population == b.population or a.area == b.area:
            continue
        if rng.random() < 0.5:
            winner = a if a.population > b.population else b
            add(f"Which country has the larger population, {a.name} or {b.name}?", [winner.name], "comparison",
                [f"{keys[a.name]}-people", f"{keys[b.name]}-people"])
        else:
            winner = a if a.area > b.area else b
            add(f"Which country is larger by area, {a.name} or {b.name}?", [winner.name], "comparison",
                [f"{keys[a.name]}-geo", f"{keys[b.name]}-geo"])
    rng.shuffle(out)
    return out


def build(out_dir: str | Path, n_train: int = 512, n_test: int = 128, seed: int = 0) -> dict:
    """Write the corpus and the QA splits (test questions never repeat a train question)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    countries = load_countries()
    corpus = passages(countries)
    qa = questions(countries, seed)
    if n_train + n_test > len(qa):
        raise ValueError(f"asked for {n_train + n_test} questions, the templates give {len(qa)}")
    splits = {"train": qa[:n_train], "test": qa[n_train : n_train + n_test]}
    with open(out / "corpus.jsonl", "w") as f:
        for doc in corpus:
            f.write(json.dumps(doc) + "\n")
    for split, rows in splits.items():
        with open(out / f"{split}.jsonl", "w") as f:
            for i, row in enumerate(rows):
                f.write(json.dumps({"id": f"{split}_{i}", **row}) + "\n")
    stats = {
        "countries": len(countries),
        "passages": len(corpus),
        "questions_available": len(qa),
        **{f"{split}_questions": len(rows) for split, rows in splits.items()},
        **{
            f"{split}_by_type": dict(sorted(Counter(r["task_type"] for r in rows).items()))
            for split, rows in splits.items()
        },
        "seed": seed,
    }
    (out / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
    return stats


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.search.corpus", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--n-train", type=int, default=512)
    p.add_argument("--n-test", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    print(json.dumps(build(args.out_dir, args.n_train, args.n_test, args.seed), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
