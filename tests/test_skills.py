"""Skill libraries (loading, validation) and the retrieval strategies (verl_sdar.skills)."""

import json
import math
from pathlib import Path

import pytest

from verl_sdar.skills import (
    STRATEGIES,
    Retrieval,
    SkillLibrary,
    SkillLibraryError,
    UCBRetriever,
    compose,
    make_retriever,
)

REPO = Path(__file__).resolve().parents[1]

MAPPING = """\
task_types:
  color: color.md
  animal: animal.md
  fruit: fruit.md
keywords:
  color: color
  colour: color
  animal: animal
  fruit: fruit
  red wine: fruit
  red: color
"""


def write_library(root: Path, mapping: str = MAPPING, general=None, task_types=None) -> Path:
    if general is None:
        general = {"01-answer-format.md": "Answer with one word.", "02-check.md": "Check the list first."}
    task_types = (
        {"color.md": "Colors are basic.", "animal.md": "Animals are singular.", "fruit.md": "Fruits are singular."}
        if task_types is None
        else task_types
    )
    (root / "general").mkdir(parents=True, exist_ok=True)
    (root / "task_types").mkdir(parents=True, exist_ok=True)
    for name, text in general.items():
        (root / "general" / name).write_text(text)
    for name, text in task_types.items():
        (root / "task_types" / name).write_text(text)
    (root / "mapping.yaml").write_text(mapping)
    return root


@pytest.fixture
def library(tmp_path) -> SkillLibrary:
    return SkillLibrary.load(write_library(tmp_path / "lib"))


GENERAL_IDS = ("general/01-answer-format.md", "general/02-check.md")


# ---------------------------------------------------------------------------------------- loading
def test_load_reads_general_skills_in_file_name_order_and_the_mapping(library):
    assert [s.skill_id for s in library.general] == list(GENERAL_IDS)
    assert [s.name for s in library.general] == ["answer format", "check"]
    assert library.task_skills["color"].text == "Colors are basic."
    assert [s.skill_id for s in library.arms] == ["task_types/animal.md", "task_types/color.md", "task_types/fruit.md"]
    assert library.keywords["red wine"] == "fruit"


def test_composed_text_is_one_section_per_skill_joined_by_blank_lines(library):
    r = make_retriever("task_type", library).retrieve(task_type="color")
    assert r.text == (
        "## answer format\nAnswer with one word.\n\n## check\nCheck the list first.\n\n## color\nColors are basic."
    )
    assert r.text == compose([library.skill(i) for i in r.skill_ids])


def test_shared_task_type_file_is_one_arm(tmp_path):
    mapping = "task_types:\n  color: shared.md\n  colour: shared.md\n  fruit: fruit.md\n"
    lib = SkillLibrary.load(write_library(tmp_path, mapping, task_types={"shared.md": "x", "fruit.md": "y"}))
    assert [s.skill_id for s in lib.arms] == ["task_types/fruit.md", "task_types/shared.md"]
    assert lib.task_skills["color"] is lib.task_skills["colour"]


def test_library_without_general_folder_or_keywords_loads(tmp_path):
    root = tmp_path / "lib"
    (root / "task_types").mkdir(parents=True)
    (root / "task_types" / "a.md").write_text("skill a")
    (root / "mapping.yaml").write_text("task_types:\n  a: a.md\n")
    lib = SkillLibrary.load(root)
    assert lib.general == () and lib.keywords == {}
    assert lib.infer_task_type("anything a") is None
    assert make_retriever("task_type", lib).retrieve(task_type="a").text == "## a\nskill a"


def test_shipped_codeword_library_infers_the_task_type_of_every_codeword_prompt():
    from verl_sdar.tasks.codeword import WORDS, make_rows

    lib = SkillLibrary.load(REPO / "envs" / "codeword" / "skills")
    assert sorted(lib.task_skills) == sorted(WORDS)
    assert lib.general
    retriever = make_retriever("keyword", lib)
    for row in make_rows(30, seed=0, split="train"):
        r = retriever.retrieve(prompt=row["prompt"][0]["content"])
        assert r.task_type == row["extra_info"]["task_type"]
        assert r.skill_ids[-1] == f"task_types/{r.task_type}.md"
    assert not retriever.unknown


# ------------------------------------------------------------------------------------- validation
def test_missing_folder(tmp_path):
    with pytest.raises(SkillLibraryError, match="nope: skill library folder does not exist"):
        SkillLibrary.load(tmp_path / "nope")


def test_missing_mapping_file(tmp_path):
    root = write_library(tmp_path)
    (root / "mapping.yaml").unlink()
    with pytest.raises(SkillLibraryError, match=r"mapping\.yaml: mapping file is missing"):
        SkillLibrary.load(root)


def test_mapping_pointing_to_a_missing_file(tmp_path):
    root = write_library(tmp_path, MAPPING.replace("fruit: fruit.md", "fruit: fruits.md"))
    match = r"task_types\.fruit: skill file .*task_types/fruits\.md does not exist"
    with pytest.raises(SkillLibraryError, match=match):
        SkillLibrary.load(root)


def test_keyword_mapping_to_an_undefined_task_type(tmp_path):
    root = write_library(tmp_path, MAPPING + "  plant: vegetable\n")
    match = r"mapping\.yaml: keywords\.plant maps to task type 'vegetable', which is not in task_types"
    with pytest.raises(SkillLibraryError, match=match):
        SkillLibrary.load(root)


@pytest.mark.parametrize("folder,name", [("general", "02-check.md"), ("task_types", "animal.md")])
def test_whitespace_only_skill_file(tmp_path, folder, name):
    root = write_library(tmp_path)
    (root / folder / name).write_text("  \n\t\n")
    with pytest.raises(SkillLibraryError, match=rf"{folder}/{name}: skill file is empty"):
        SkillLibrary.load(root)


def test_unknown_top_level_key(tmp_path):
    root = write_library(tmp_path, MAPPING + "keyword:\n  x: color\n")
    with pytest.raises(SkillLibraryError, match=r"mapping\.yaml: unknown top-level keys \['keyword'\]"):
        SkillLibrary.load(root)


def test_duplicate_mapping_keys_are_rejected(tmp_path):
    root = write_library(tmp_path, MAPPING + "  animal: fruit\n")
    with pytest.raises(SkillLibraryError, match=r"mapping\.yaml: not valid YAML .*duplicate key 'animal'"):
        SkillLibrary.load(root)


def test_stray_files_are_rejected(tmp_path):
    root = write_library(tmp_path)
    (root / "task_types" / "plant.md").write_text("not mapped")
    with pytest.raises(SkillLibraryError, match=r"task_types/plant\.md: not named by any entry of task_types"):
        SkillLibrary.load(root)
    (root / "task_types" / "plant.md").unlink()
    (root / "general" / "notes.txt").write_text("not a skill")
    with pytest.raises(SkillLibraryError, match=r"general/notes\.txt: general/ holds only skill files named \*\.md"):
        SkillLibrary.load(root)
    (root / "general" / "notes.txt").unlink()
    (root / "general" / ".gitkeep").write_text("")
    SkillLibrary.load(root)  # hidden files are ignored


def test_yaml_boolean_keyword_and_case_duplicates_are_rejected(tmp_path):
    root = write_library(tmp_path, MAPPING + "  yes: color\n")
    with pytest.raises(SkillLibraryError, match="keyword True must be a non-empty string"):
        SkillLibrary.load(root)
    write_library(tmp_path, MAPPING + "  Fruit: color\n")
    with pytest.raises(SkillLibraryError, match="'fruit' and 'Fruit' are the same keyword"):
        SkillLibrary.load(tmp_path)


# ------------------------------------------------------------------------------------- strategies
def test_task_type_strategy_uses_the_given_task_type_and_counts_unknown(library):
    r = make_retriever("task_type", library)
    got = r.retrieve(task_type="animal", prompt="a color question")
    assert got.skill_ids == (*GENERAL_IDS, "task_types/animal.md") and got.task_type == "animal"
    for unknown in ("plant", None, "plant"):
        got = r.retrieve(task_type=unknown)
        assert got.skill_ids == GENERAL_IDS and got.task_type is None
    assert r.rows == 4 and r.unknown == {"plant": 2, None: 1}
    r.reset_counts()
    assert r.rows == 0 and not r.unknown


def test_keyword_strategy_first_occurrence_wins(library):
    r = make_retriever("keyword", library)
    assert r.retrieve(prompt="Name an ANIMAL, not a colour.").task_type == "animal"
    assert r.retrieve(prompt="Name a colour, not an animal.").task_type == "color"
    # whole words only: "fruitful" / "colors" are not keywords here
    assert r.retrieve(prompt="A fruitful talk about colors; then pick an animal").task_type == "animal"
    # at the same position the longer phrase wins; whitespace inside a phrase is flexible
    assert r.retrieve(prompt="Red  \n wine or red paint?").task_type == "fruit"
    assert r.retrieve(prompt="red paint or red wine?").task_type == "color"
    none = r.retrieve(prompt="no keyword at all", task_type="animal")  # the given task type is ignored
    assert none.skill_ids == GENERAL_IDS and none.task_type is None
    assert r.unknown == {None: 1}
    with pytest.raises(TypeError, match="needs the row's prompt text"):
        r.retrieve(task_type="animal")


def test_full_strategy_gives_everything_to_every_row(library):
    r = make_retriever("full", library)
    got = r.retrieve(task_type="color")
    assert got.skill_ids == (*GENERAL_IDS, "task_types/animal.md", "task_types/color.md", "task_types/fruit.md")
    assert got.task_type is None
    assert r.retrieve(prompt="x").text is got.text  # same composition, same string object


def test_random_strategy_is_uniform_and_deterministic_given_the_seed(library):
    def draws(seed, n=300):
        r = make_retriever("random", library, seed=seed)
        return [r.retrieve(task_type="color").skill_ids[-1] for _ in range(n)]

    first = draws(0)
    assert first == draws(0)
    assert first != draws(1)
    counts = {arm: first.count(arm) for arm in set(first)}
    assert set(counts) == {s.skill_id for s in library.arms}
    assert all(70 <= c <= 130 for c in counts.values()), counts


def test_random_state_dict_continues_the_sequence(library):
    a = make_retriever("random", library, seed=3)
    for _ in range(5):
        a.retrieve()
    state = json.loads(json.dumps(a.state_dict()))
    b = make_retriever("random", library, seed=99)
    b.load_state_dict(state)
    assert [a.retrieve().skill_ids for _ in range(20)] == [b.retrieve().skill_ids for _ in range(20)]


def two_arm_library(tmp_path) -> SkillLibrary:
    mapping = "task_types:\n  a: a.md\n  b: b.md\n"
    return SkillLibrary.load(write_library(tmp_path, mapping, general={}, task_types={"a.md": "A", "b.md": "B"}))


def test_ucb_tries_untried_arms_first_mapped_skill_first(library):
    r = make_retriever("ucb", library)
    first = r.retrieve(task_type="fruit")
    assert first.skill_ids[-1] == "task_types/fruit.md" and first.task_type == "fruit"
    # no update yet: the same arm again (statistics change only on update)
    assert r.retrieve(task_type="fruit").skill_ids == first.skill_ids
    seen = []
    for _ in range(3):
        got = r.retrieve(task_type="fruit")
        seen.append(got.skill_ids[-1])
        r.update(got, 0.0)
    # each arm once, the mapped one first, then library order
    assert seen == ["task_types/fruit.md", "task_types/animal.md", "task_types/color.md"]


def test_ucb_prefers_the_better_rewarded_skill(tmp_path):
    lib = two_arm_library(tmp_path)
    r = make_retriever("ucb", lib, ucb_c=math.sqrt(2.0))
    picks = []
    for _ in range(100):
        got = r.retrieve(task_type="a")
        picks.append(got.skill_ids[-1])
        r.update(got, 1.0 if got.skill_ids[-1] == "task_types/b.md" else 0.0)
    # the mapped arm "a" is tried first, but it is the bad one: UCB moves to "b"
    assert picks[0] == "task_types/a.md" and picks[1] == "task_types/b.md"
    assert picks[20:].count("task_types/b.md") >= 65, picks
    scores = r.scores("a")
    assert scores["task_types/b.md"] > scores["task_types/a.md"]
    # bandits are per task type: "b" is untouched and starts at its own mapped skill
    assert r.retrieve(task_type="b").skill_ids == ("task_types/b.md",)


def test_ucb_unknown_task_types_share_the_fallback_bandit_and_are_counted(library):
    r = make_retriever("ucb", library)
    got = r.retrieve(task_type="plant")
    assert got.task_type is None and got.skill_ids[-1] == "task_types/animal.md"  # library order
    r.update(got, 1.0)
    assert r.state_dict()["fallback"]["pulls"] == [1, 0, 0]
    assert r.unknown == {"plant": 1}


def test_ucb_state_dict_round_trip_continues_identically(library):
    a = make_retriever("ucb", library, ucb_c=0.5)
    rewards = {"task_types/animal.md": 0.2, "task_types/color.md": 0.9, "task_types/fruit.md": 0.5}
    types = ["color", "animal", "fruit", None]
    for i in range(40):
        got = a.retrieve(task_type=types[i % 4])
        a.update(got, rewards[got.skill_ids[-1]] + (0.1 if i % 3 else 0.0))
    state = a.state_dict()
    assert json.loads(json.dumps(state)) == state
    b = make_retriever("ucb", library, ucb_c=0.5)
    b.load_state_dict(json.loads(json.dumps(state)))
    assert b.state_dict() == state
    for i in range(40):
        ga, gb = a.retrieve(task_type=types[i % 4]), b.retrieve(task_type=types[i % 4])
        assert ga == gb
        reward = rewards[ga.skill_ids[-1]] * (i % 2)
        a.update(ga, reward)
        b.update(gb, reward)
    assert a.state_dict() == b.state_dict()


def test_ucb_state_with_other_arms_or_task_types_is_rejected(library, tmp_path):
    state = make_retriever("ucb", library).state_dict()
    other = two_arm_library(tmp_path / "other")
    with pytest.raises(SkillLibraryError, match="ucb state does not match the skill library .* saved arms"):
        make_retriever("ucb", other).load_state_dict(state)
    extra = json.loads(json.dumps(state))
    extra["bandits"]["plant"] = extra["bandits"]["color"]
    with pytest.raises(SkillLibraryError, match=r"bandits for task types \['plant'\]"):
        make_retriever("ucb", library).load_state_dict(extra)
    short = json.loads(json.dumps(state))
    short["bandits"]["color"]["pulls"] = [1, 2]
    with pytest.raises(SkillLibraryError, match=r"bandits\.color\.pulls / reward_sum must be lists of 3 numbers"):
        make_retriever("ucb", library).load_state_dict(short)
    with pytest.raises(SkillLibraryError, match="state is for strategy 'random', this retriever is 'ucb'"):
        make_retriever("ucb", library).load_state_dict(make_retriever("random", library).state_dict())


def test_ucb_update_rejects_foreign_retrievals_and_bad_rewards(library):
    r = make_retriever("ucb", library)
    with pytest.raises(ValueError, match="did not come from this UCB retriever"):
        r.update(make_retriever("full", library).retrieve(), 1.0)
    with pytest.raises(ValueError, match="finite"):
        r.update(r.retrieve(task_type="color"), float("nan"))


def test_make_retriever_covers_every_strategy_and_rejects_unknown_names(library, tmp_path):
    for strategy in STRATEGIES:
        r = make_retriever(strategy, library)
        assert r.strategy == strategy
        assert isinstance(r.retrieve(prompt="a color", task_type="color"), Retrieval)
    with pytest.raises(ValueError, match="unknown skill retrieval strategy 'bm25'"):
        make_retriever("bm25", library)
    no_arms = tmp_path / "no-arms"
    (no_arms / "general").mkdir(parents=True)
    (no_arms / "general" / "g.md").write_text("general")
    (no_arms / "mapping.yaml").write_text("task_types: {}\n")
    lib = SkillLibrary.load(no_arms)
    assert make_retriever("full", lib).retrieve().text == "## g\ngeneral"
    for strategy in ("random", "ucb"):
        with pytest.raises(SkillLibraryError, match=f"strategy '{strategy}' needs at least one task-type skill"):
            make_retriever(strategy, lib)
    assert isinstance(make_retriever("ucb", library), UCBRetriever)


def test_shipped_alfworld_library_covers_the_six_task_types_and_infers_from_goals():
    from pathlib import Path

    lib = SkillLibrary.load(Path(__file__).resolve().parents[1] / "envs" / "alfworld" / "skills")
    assert set(lib.task_skills) == {
        "pick_and_place_simple", "look_at_obj_in_light", "pick_clean_then_place_in_recep",
        "pick_heat_then_place_in_recep", "pick_cool_then_place_in_recep", "pick_two_obj_and_place",
    }
    goals = {
        "Your task is to: examine the book with the desklamp.": "look_at_obj_in_light",
        "Your task is to: put a clean egg in microwave.": "pick_clean_then_place_in_recep",
        "Your task is to: put a hot mug in countertop.": "pick_heat_then_place_in_recep",
        "Your task is to: put a cool winebottle in countertop.": "pick_cool_then_place_in_recep",
        "Your task is to: find two tissuebox and put them in drawer.": "pick_two_obj_and_place",
        "Your task is to: put some basketball on desk.": None,
    }
    for goal, task_type in goals.items():
        assert lib.infer_task_type(goal) == task_type, goal


# ----------------------------------------------------------------------------- keyword_any
def test_keyword_any_gives_every_matched_task_types_skill_in_mapping_order(library):
    r = make_retriever("keyword_any", library)
    got = r.retrieve(prompt="A fruit, then an ANIMAL.", task_type="color")  # the given task type is ignored
    assert got.skill_ids == (*GENERAL_IDS, "task_types/animal.md", "task_types/fruit.md")
    assert got.task_types == ("animal", "fruit") and got.task_type is None
    assert got.text == compose([library.skill(i) for i in got.skill_ids])
    one = r.retrieve(prompt="name a colour")
    assert one.task_types == ("color",) and one.task_type == "color"
    assert r.retrieve(prompt="fruitful talk").skill_ids == GENERAL_IDS  # whole words only
    assert r.unknown == {None: 1}
    with pytest.raises(TypeError, match="needs the row's prompt text"):
        r.retrieve(task_type="color")


def test_keyword_any_lists_a_shared_skill_file_once(tmp_path):
    mapping = "task_types:\n  color: shared.md\n  colour: shared.md\n  fruit: fruit.md\n" + (
        "keywords:\n  red: color\n  blue: colour\n  apple: fruit\n"
    )
    lib = SkillLibrary.load(write_library(tmp_path, mapping, task_types={"shared.md": "x", "fruit.md": "y"}))
    got = make_retriever("keyword_any", lib).retrieve(prompt="red, blue and an apple")
    assert got.task_types == ("color", "colour", "fruit")
    assert got.skill_ids == (*GENERAL_IDS, "task_types/shared.md", "task_types/fruit.md")


def test_shipped_webshop_library_keyword_any_finds_exactly_each_goals_category(tmp_path):
    """The reference's WebShop rule on our generated goals: every category with a keyword in the goal
    contributes its skill; our keywords are the product types, so each goal gets its own category."""
    from verl_sdar.envs.webshop.catalogue import build

    build(tmp_path, n_products=3000, n_train=500, n_test=100, seed=0)
    lib = SkillLibrary.load(REPO / "envs" / "webshop" / "skills")
    r = make_retriever("keyword_any", lib)
    goals = [json.loads(line) for name in ("goals_train.jsonl", "goals_test.jsonl")
             for line in (tmp_path / name).read_text().splitlines()]
    assert len(goals) == 600
    for goal in goals:
        got = r.retrieve(prompt=goal["instruction_text"])
        assert got.task_types == (goal["category"],), goal["instruction_text"]
        assert got.skill_ids[-1] == lib.task_skills[goal["category"]].skill_id
    assert not r.unknown


# ------------------------------------------------------------------ the authors' layout (skill_mapping.json)
REF_GENERAL = "  Always read the whole observation first.\nThen act.\n\n"  # stripped when read, like the reference
ALFWORLD_REF = {  # the reference's ALFWorld task-type keys (substrings of ALFWorld game paths)
    "pick_and_place": "Find the object, take it, go to the target, put it.",
    "pick_clean_then_place": "Clean the object in a sinkbasin before placing it.",
    "pick_heat_then_place": "Heat the object with a microwave before placing it.",
    "pick_cool_then_place": "Cool the object with a fridge before placing it.",
    "look_at_obj_in_light": "Take the object to a desklamp and use the lamp.",
    "pick_two_obj": "Place the first object, then find the second one.",
}
WEBSHOP_REF = {t: f"Shopping advice for {t} goods." for t in ("fashion", "beauty", "electronics", "grocery", "home",
                                                             "sports")}
SEARCH_REF = {t: f"Search advice for {t} questions." for t in ("direct_lookup", "multi_hop", "comparison")}


def write_reference_library(root: Path, skills: dict, task_keywords=None, general=REF_GENERAL, extra=None) -> Path:
    """A folder in the authors' layout: skill_mapping.json + one markdown file per skill (made-up texts)."""
    root.mkdir(parents=True, exist_ok=True)
    skill_files, task_to_skill = {}, {}
    if general is not None:
        skill_files["general_skills"] = "general_skills.md"
        (root / "general_skills.md").write_text(general)
    for task_type, text in skills.items():
        name = f"{task_type}_skill"
        skill_files[name] = f"{name}.md"
        (root / f"{name}.md").write_text(text + "\n")
        task_to_skill[task_type] = name
    mapping = {"skill_files": skill_files, "task_to_skill": task_to_skill}
    if task_keywords is not None:
        mapping["task_keywords"] = task_keywords
    mapping.update(extra or {})
    (root / "skill_mapping.json").write_text(json.dumps(mapping, indent=2))
    return root


def reference_text(*skill_texts, general=REF_GENERAL):
    """The reference's composition: "\\n\\n".join([general, *task skills]), texts stripped."""
    return "\n\n".join([general.strip() if general is not None else "", *[t.strip() for t in skill_texts]])


def test_reference_layout_alfworld_our_task_type_names_select_the_references_skill(tmp_path):
    from verl_sdar.envs.alfworld.play import TASK_TYPES

    lib = SkillLibrary.load(write_reference_library(tmp_path / "alfworld", ALFWORLD_REF))
    assert lib.layout == "reference" and [s.name for s in lib.general] == ["general_skills"]
    r = make_retriever("task_type", lib)
    ours_to_ref = {
        "pick_and_place_simple": "pick_and_place",
        "pick_clean_then_place_in_recep": "pick_clean_then_place",
        "pick_heat_then_place_in_recep": "pick_heat_then_place",
        "pick_cool_then_place_in_recep": "pick_cool_then_place",
        "look_at_obj_in_light": "look_at_obj_in_light",
        "pick_two_obj_and_place": "pick_two_obj",
    }
    assert set(ours_to_ref) == set(TASK_TYPES)
    for ours, ref in ours_to_ref.items():
        got = r.retrieve(task_type=ours)
        assert got.text == reference_text(ALFWORLD_REF[ref]), ours
        assert got.task_type == ref
        # a game path holds the task type too, as in the reference's own lookup
        assert lib.resolve_task_type(f"/data/json_2.1.1/train/{ours}-Mug-None-Fridge-1/trial_T1/game.tw-pddl") == ref
    assert r.retrieve(task_type="unknown_type").text == reference_text()
    assert r.unknown == {"unknown_type": 1}


def test_reference_layout_webshop_and_search_task_types(tmp_path):
    for name, skills in (("webshop", WEBSHOP_REF), ("search", SEARCH_REF)):
        lib = SkillLibrary.load(write_reference_library(tmp_path / name, skills))
        r = make_retriever("task_type", lib)
        for task_type, text in skills.items():
            assert r.retrieve(task_type=task_type).text == reference_text(text), (name, task_type)
        assert not r.unknown


def test_reference_layout_keyword_rule_uses_task_keywords(tmp_path):
    keywords = {"fashion": ["t-shirt", "jeans"], "beauty": ["shampoo"], "grocery": ["tea", "coffee"]}
    lib = SkillLibrary.load(write_reference_library(tmp_path / "webshop", WEBSHOP_REF, task_keywords=keywords))
    r = make_retriever("keyword_any", lib)
    # every task type with a keyword in the text, in task_keywords order; general once
    got = r.retrieve(prompt="I want a SHAMPOO and a cotton T-Shirt")
    assert got.text == reference_text(WEBSHOP_REF["fashion"], WEBSHOP_REF["beauty"])
    assert got.task_types == ("fashion", "beauty")
    # the reference's matching: plain substrings of the lower-cased text ("tea" inside "steak")
    assert r.retrieve(prompt="a steak knife").text == reference_text(WEBSHOP_REF["grocery"])
    assert r.retrieve(prompt="a desk lamp").text == reference_text()  # none: general only
    assert lib.infer_task_type("jeans or tea?") == "fashion"  # keyword: the first matching task type
    assert make_retriever("keyword", lib).retrieve(prompt="some coffee").text == reference_text(WEBSHOP_REF["grocery"])


def test_reference_layout_full_and_missing_general(tmp_path):
    lib = SkillLibrary.load(write_reference_library(tmp_path / "a", SEARCH_REF))
    assert make_retriever("full", lib).retrieve().text == reference_text(*SEARCH_REF.values())
    no_general = SkillLibrary.load(write_reference_library(tmp_path / "b", SEARCH_REF, general=None))
    # the reference joins [general_skills or "", skill]: a missing general skill leaves a leading blank line
    got = make_retriever("task_type", no_general).retrieve(task_type="multi_hop")
    assert got.text == "\n\n" + SEARCH_REF["multi_hop"]
    assert make_retriever("task_type", no_general).retrieve(task_type=None).text == ""


def test_reference_layout_ucb_and_random_choose_among_its_skills(tmp_path):
    lib = SkillLibrary.load(write_reference_library(tmp_path, SEARCH_REF))
    assert [s.name for s in lib.arms] == [f"{t}_skill" for t in SEARCH_REF]
    ucb = make_retriever("ucb", lib)
    first = ucb.retrieve(task_type="comparison")
    assert first.text == reference_text(SEARCH_REF["comparison"])
    ucb.update(first, 1.0)
    assert isinstance(make_retriever("random", lib).retrieve(), Retrieval)


def test_reference_layout_validation(tmp_path):
    def load(**kwargs):
        return SkillLibrary.load(write_reference_library(tmp_path / "lib", SEARCH_REF, **kwargs))

    with pytest.raises(SkillLibraryError, match=r"task_keywords\.plant: task type is not in task_to_skill"):
        load(task_keywords={"plant": ["tree"]})
    with pytest.raises(SkillLibraryError, match="expected a list of non-empty strings"):
        load(task_keywords={"comparison": "larger"})
    with pytest.raises(SkillLibraryError, match=r"task_to_skill\.x names skill 'nope'"):
        load(extra={"task_to_skill": {"x": "nope"}})
    with pytest.raises(SkillLibraryError, match="outside the library folder"):
        load(extra={"skill_files": {"general_skills": "../elsewhere.md"}, "task_to_skill": {}})
    with pytest.raises(SkillLibraryError, match="is already the file of skill 'a'"):
        load(extra={"skill_files": {"a": "general_skills.md", "b": "general_skills.md"}, "task_to_skill": {}})
    lib = load(extra={"notes": "ignored, as the reference ignores it"})
    (lib.root / "comparison_skill.md").write_text(" \n")
    with pytest.raises(SkillLibraryError, match="comparison_skill.md: skill file is empty"):
        SkillLibrary.load(lib.root)
    (lib.root / "comparison_skill.md").unlink()
    with pytest.raises(SkillLibraryError, match=r"skill_files\.comparison_skill: skill file .* does not exist"):
        SkillLibrary.load(lib.root)
    both = write_library(tmp_path / "both")
    (both / "skill_mapping.json").write_text("{}")
    with pytest.raises(SkillLibraryError, match="holds both mapping.yaml .* and skill_mapping.json"):
        SkillLibrary.load(both)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "skill_mapping.json").write_text("{not json")
    with pytest.raises(SkillLibraryError, match="not valid JSON"):
        SkillLibrary.load(tmp_path / "bad")


# --------------------------------------------------------------------------- shipped libraries by name
SHIPPED = ["alfworld", "codeword", "search", "webshop"]


def test_shipped_libraries_load_by_builtin_name_from_any_folder(tmp_path, monkeypatch):
    from verl_sdar import resources

    monkeypatch.chdir(tmp_path)  # the name does not depend on the working folder
    assert resources.skill_library_names() == SHIPPED
    for name in SHIPPED:
        lib = SkillLibrary.load(f"builtin:{name}")
        assert lib.root == resources.skill_library_dir(name) == resources.resolve_skill_library(f"builtin:{name}")
        assert lib.root.is_absolute() and lib.general and lib.task_skills
    # in a checkout (these tests run from one) the names are the top-level envs/<name>/skills folders
    assert resources.skill_library_dir("alfworld") == REPO / "envs" / "alfworld" / "skills"


def test_anything_but_a_builtin_name_is_a_folder_path(tmp_path):
    from verl_sdar.resources import resolve_skill_library

    assert resolve_skill_library("envs/alfworld/skills") == Path("envs/alfworld/skills")
    assert resolve_skill_library(tmp_path) == tmp_path
    lib = SkillLibrary.load(write_library(tmp_path / "lib"))  # plain paths keep working
    assert lib.root == tmp_path / "lib"


@pytest.mark.parametrize("spec,error", [
    ("builtin:alfwrld", r"unknown shipped skill library builtin:alfwrld; shipped: builtin:alfworld, "
                        r"builtin:codeword, builtin:search, builtin:webshop \(or give a folder path\)"),
    ("builtin:", r"skill library name '' must be a plain name"),
    ("builtin:../envs/alfworld/skills", r"must be a plain name \(no path separators\)"),
    ("builtin:__pycache__", r"unknown shipped skill library builtin:__pycache__"),
])
def test_a_bad_builtin_name_is_a_skill_library_error_listing_the_shipped_names(spec, error):
    with pytest.raises(SkillLibraryError, match=error):
        SkillLibrary.load(spec)


def test_a_packaged_copy_wins_over_the_checkout(tmp_path, monkeypatch):
    """An installed wheel carries the libraries in verl_sdar/skill_libraries/<name>/ (setup.py)."""
    from verl_sdar import resources

    packaged = tmp_path / "skill_libraries"
    write_library(packaged / "mine")
    monkeypatch.setattr(resources, "_PACKAGED_SKILLS", packaged)
    assert resources.skill_library_names() == ["mine"]
    assert SkillLibrary.load("builtin:mine").root == packaged / "mine"
    with pytest.raises(SkillLibraryError, match=r"shipped: builtin:mine \(or give"):
        SkillLibrary.load("builtin:alfworld")


def test_recipe_folders_and_the_command_line(capsys):
    from verl_sdar import resources

    assert resources.recipe_envs() == ["alfworld", "cpu", "search", "webshop"]
    assert resources.recipes_dir("alfworld") == REPO / "recipes" / "alfworld"
    assert resources.recipe_names("cpu") == ["codeword_sdar", "vault_sdar"]
    assert "gpu_common" not in resources.recipe_names("alfworld") and "sdar" in resources.recipe_names("alfworld")
    with pytest.raises(resources.ResourceNotFoundError, match="available: alfworld, cpu, search, webshop"):
        resources.recipes_dir("alfwrld")
    assert resources.main(["recipes", "alfworld"]) == 0
    assert capsys.readouterr().out.strip() == str(REPO / "recipes" / "alfworld")
    assert resources.main(["skills", "builtin:webshop"]) == 0
    assert capsys.readouterr().out.strip() == str(REPO / "envs" / "webshop" / "skills")
    assert resources.main(["skills", "nope"]) == 2
    assert "shipped: builtin:alfworld" in capsys.readouterr().err
    assert resources.main(["list"]) == 0
    assert "builtin:codeword" in capsys.readouterr().out
