"""Skill-GRPO: ``algorithm=skill_grpo`` composes and validates, and the agent loops put the row's
skills into the student's own prompt (real ALFWorld and WebShop episodes with a scripted server)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from agent_loop_helpers import FakeServer, make_agent_loop, run_episode
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig, SDARConfigError
from verl_sdar.privileged import (
    NO_STUDENT_SKILLS,
    StudentPrivileged,
    skill_prefix,
    student_privileged,
    student_privileged_for,
)
from verl_sdar.skills import SkillLibrary, make_retriever

REPO = Path(__file__).resolve().parents[1]
ALFWORLD_SKILLS = REPO / "envs" / "alfworld" / "skills"
WEBSHOP_SKILLS = REPO / "envs" / "webshop" / "skills"
HEADER = "[Privileged Skill Information]\n"


# ----------------------------------------------------------------------------- configuration
def composed(*overrides):
    with initialize_config_module("verl.trainer.config", version_base=None):
        return compose("ppo_trainer", overrides=["algorithm=skill_grpo", *overrides])


def test_skill_grpo_composes_and_validates():
    cfg = composed()
    sdar = SDARConfig.from_config(cfg)
    assert sdar.objective == "none" and not sdar.needs_teacher and not sdar.adds_loss_term
    assert sdar.student_prompt and sdar.privileged.source == "column"
    assert cfg.trainer.v1.trainer_mode == "sdar" and cfg.algorithm.adv_estimator == "grpo"
    # what a recipe sets: skills from a library, keyword-matched (WebShop) or by task type (ALFWorld)
    for library, strategy in ((WEBSHOP_SKILLS, "keyword_any"), (ALFWORLD_SKILLS, "task_type")):
        cfg = composed(
            "sdar.privileged.source=skills", f"sdar.skills.library={library}", f"sdar.skills.strategy={strategy}"
        )
        sdar = SDARConfig.from_config(cfg)
        assert sdar.skills.strategy == strategy
        assert student_privileged(cfg) is not None


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["sdar.privileged.source=skills"], "sdar.skills.library: privileged.source=skills needs a skill library"),
        (["sdar.privileged.source=skills", f"sdar.skills.library={WEBSHOP_SKILLS}", "sdar.skills.strategy=ucb",
          "sdar.student_skills=per_episode"],
         "cannot fill the student's prompt"),
        (["sdar.student_skills=sometimes"], "sdar.student_skills must be one of"),
        (["sdar.privileged.source=skills", "sdar.skills.library=/no/such/folder"],
         "skill library folder does not exist"),
        (["sdar.privileged.key=''"], "sdar.privileged.key"),
    ],
)
def test_skill_grpo_misconfigurations_fail_before_ray(overrides, match):
    with pytest.raises(SDARConfigError, match=match):
        SDARConfig.from_config(composed(*overrides))


def test_per_turn_student_skills_are_the_default_and_use_the_references_substring_rule():
    """``algorithm=skill_grpo`` chooses the skills every turn (the reference's rule); the teacher's
    strategy is then not used, so a stateful one (UCB) is no error; ``per_episode`` keeps it."""
    cfg = composed("sdar.privileged.source=skills", f"sdar.skills.library={WEBSHOP_SKILLS}", "sdar.skills.strategy=ucb")
    assert SDARConfig.from_config(cfg).student_skills == "per_turn"
    student = student_privileged(cfg)
    assert student.per_turn and student.strategy == "keyword_substring"
    cfg = composed("sdar.privileged.source=skills", f"sdar.skills.library={WEBSHOP_SKILLS}",
                   "sdar.skills.strategy=task_type", "sdar.student_skills=per_episode")
    student = student_privileged(cfg)
    assert not student.per_turn and student.strategy == "task_type"


def test_a_row_flagged_no_student_skills_gets_no_student_privileged():
    student = StudentPrivileged("column")
    assert student_privileged_for(student, {}) is student
    assert student_privileged_for(student, {NO_STUDENT_SKILLS: False}) is student
    assert student_privileged_for(student, {NO_STUDENT_SKILLS: True}) is None
    assert student_privileged_for(student, {NO_STUDENT_SKILLS: np.bool_(True)}) is None
    assert student_privileged_for(None, {}) is None


def test_validation_without_skills_flags_every_row_and_names_both_passes():
    from verl_sdar.skill_validation import WithoutStudentSkills, renamed, validate_with_and_without_skills

    assert renamed("val/success/clean", "val_no_skill") == "val_no_skill/success/clean"
    assert renamed("val-core/alfworld/reward/mean@1", "val_no_skill") == "val_no_skill/core/alfworld/reward/mean@1"
    assert renamed("other", "val_with_skill") == "val_with_skill/other"

    loader = [{"raw_prompt": np.array(["a", "b"], dtype=object), "index": np.array([0, 1])},
              {"raw_prompt": np.array(["c"], dtype=object), "index": np.array([2])}]
    batches = list(WithoutStudentSkills(loader))
    assert [list(b[NO_STUDENT_SKILLS]) for b in batches] == [[True, True], [True]]
    assert NO_STUDENT_SKILLS not in loader[0] and len(WithoutStudentSkills(loader)) == 2

    class Trainer:  # what the function touches of verl's trainer
        val_dataloader = loader
        config = OmegaConf.create({"trainer": {"validation_data_dir": "/dump"}})

    trainer, seen = Trainer(), []

    def validate():  # verl's _validate reads the loader and the dump folder at call time
        flagged = all(NO_STUDENT_SKILLS in b for b in trainer.val_dataloader)
        seen.append((flagged, trainer.config.trainer.validation_data_dir))
        return {"val-core/x/reward/mean@1": 0.25 if flagged else 0.75, "val/success/all": 0.0 if flagged else 1.0}

    metrics = validate_with_and_without_skills(trainer, validate)
    assert seen == [(True, "/dump/val_no_skill"), (False, "/dump")]  # without first, then with
    assert trainer.val_dataloader is loader and trainer.config.trainer.validation_data_dir == "/dump"
    assert metrics == {
        "val-core/x/reward/mean@1": 0.75, "val/success/all": 1.0,
        "val_with_skill/core/x/reward/mean@1": 0.75, "val_with_skill/success/all": 1.0,
        "val_no_skill/core/x/reward/mean@1": 0.25, "val_no_skill/success/all": 0.0,
    }


def test_teacher_methods_select_the_privileged_format():
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=["algorithm=sdar", "sdar.privileged.format=raw_prefix"])
        assert SDARConfig.from_config(cfg).privileged.format == "raw_prefix"
        assert SDARConfig.from_config(compose("ppo_trainer", overrides=["algorithm=sdar"])).privileged.format == (
            "chat_turn"
        )
        bad = compose("ppo_trainer", overrides=[
            "algorithm=sdar", "sdar.privileged.format=raw_prefix", "sdar.privileged.placement=before_last_user"])
    with pytest.raises(SDARConfigError, match="placement=start"):
        SDARConfig.from_config(bad)


def test_privileged_format_and_student_prompt_keys():
    assert SDARConfig.from_dict({"privileged": {"format": "raw_prefix"}}).privileged.format == "raw_prefix"
    with pytest.raises(SDARConfigError, match="sdar.privileged.format: unknown format 'xml'"):
        SDARConfig.from_dict({"privileged": {"format": "xml"}})
    with pytest.raises(SDARConfigError, match="student_prompt must be true or false"):
        SDARConfig.from_dict({"objective": "none", "student_prompt": "yes"})
    # the teacher methods may combine both (the student and the teacher then both see the text)
    assert SDARConfig.from_dict({"student_prompt": True}).student_prompt


# ----------------------------------------------------------------------------- the student's text
def test_student_privileged_reads_the_trainer_config_and_caches_per_settings():
    assert student_privileged({"sdar": {"objective": "none"}}) is None
    assert student_privileged({}) is None
    config = {"sdar": {"student_prompt": True, "privileged": {"source": "skills"},
                       "skills": {"library": str(WEBSHOP_SKILLS), "strategy": "keyword_any"}}}
    student = student_privileged(config)
    assert student is student_privileged(OmegaConf.create(config))  # one per settings per process
    expected = make_retriever("keyword_any", SkillLibrary.load(WEBSHOP_SKILLS)).retrieve(prompt="a green tea").text
    assert student.text({"task_type": "fashion"}, prompt="a green tea") == expected  # keywords, not the oracle
    assert student.prefix({}, prompt="a green tea") == f"{HEADER}{expected}\n\n"
    by_type = StudentPrivileged("skills", library=str(ALFWORLD_SKILLS), strategy="task_type")
    assert "## heat and place" in by_type.text({"task_type": "pick_heat_then_place_in_recep"})
    column = StudentPrivileged("column", key="privileged")
    assert column.prefix({"privileged": "use the sink"}) == f"{HEADER}use the sink\n\n"
    assert column.prefix({"privileged": ""}) == "" == skill_prefix("")
    with pytest.raises(KeyError, match="no privileged-text field 'privileged'"):
        column.text({"task_type": "x"})
    with pytest.raises(ValueError, match="cannot fill the student's prompt"):
        StudentPrivileged("skills", library=str(WEBSHOP_SKILLS), strategy="random")
    with pytest.raises(TypeError, match="needs the row's prompt text"):
        StudentPrivileged("skills", library=str(WEBSHOP_SKILLS), strategy="keyword").text({})


def test_teacher_source_passes_the_prompt_text_to_keyword_any():
    import torch

    from verl_sdar.privileged import SkillSource, TeacherInputs

    source = SkillSource(str(WEBSHOP_SKILLS), "keyword_any")
    rows = TeacherInputs(
        extra_infos=[{"task_type": "home"}],
        prompts=[torch.tensor([1, 2])],
        raw_prompts=[[{"role": "user", "content": "i need running shorts and a yoga mat"}]],
        scores=None,
        real=[0],
        decode=lambda ids: "",
    )
    (text,) = source.texts(rows)
    assert text.endswith(SkillLibrary.load(WEBSHOP_SKILLS).task_skills["sports"].text)


def test_keyword_substring_finds_hat_in_that(tmp_path):
    """The reference's substring rule on a library whose keyword is "hat": "that" matches it."""
    (tmp_path / "general").mkdir()
    (tmp_path / "general" / "01-read.md").write_text("Read the goal twice.")
    (tmp_path / "task_types").mkdir()
    (tmp_path / "task_types" / "fashion.md").write_text("Check the size option.")
    (tmp_path / "mapping.yaml").write_text("task_types:\n  fashion: fashion.md\nkeywords:\n  hat: fashion\n")
    library = SkillLibrary.load(tmp_path)
    goal = "i want something that is blue"
    substring = make_retriever("keyword_substring", library).retrieve(prompt=goal)
    whole_word = make_retriever("keyword_any", library).retrieve(prompt=goal)
    assert substring.task_types == ("fashion",) and "Check the size option." in substring.text
    assert whole_word.task_types == () and "Check the size option." not in whole_word.text


def test_keyword_substring_reads_the_whole_decoded_prompt_and_matches_substrings():
    """The reference's WebShop rule: keywords are substrings of the lower-cased whole prompt, special
    tokens kept, so "hat" matches "that" (and a category named only outside the last user message
    still counts), while ``keyword_any`` matches whole words of the last user message."""
    import torch

    from verl_sdar.privileged import SkillSource, TeacherInputs
    from verl_sdar.skills import KeywordSubstringRetriever

    library = SkillLibrary.load(WEBSHOP_SKILLS)
    retriever = make_retriever("keyword_substring", library)
    assert isinstance(retriever, KeywordSubstringRetriever)
    # "tea" in "steamer", "tent" in "Content": two categories no whole word names
    assert library.substring_task_types("Content: a Steamer please") == ["grocery", "sports"]
    assert library.matching_task_types("Content: a Steamer please") == []

    decoded = {}

    def decode(ids, keep_special=False):
        decoded.setdefault("keep_special", []).append(keep_special)
        return "<|im_start|>system\nBuy only what matches the goal: content first.<|im_end|>\n" \
               "<|im_start|>user\ni need a blanket<|im_end|>"

    rows = TeacherInputs(
        extra_infos=[{"task_type": "home"}], prompts=[torch.tensor([1, 2])],
        raw_prompts=[[{"role": "user", "content": "i need a blanket"}]], scores=None, real=[0], decode=decode,
    )
    (text,) = SkillSource(str(WEBSHOP_SKILLS), "keyword_substring").texts(rows)
    assert decoded["keep_special"] == [True]  # the whole prompt, special tokens kept
    # "tent" inside "content" (the system turn) adds sports; "blanket" (the user turn) home
    assert library.task_skills["home"].text in text and library.task_skills["sports"].text in text
    (any_text,) = SkillSource(str(WEBSHOP_SKILLS), "keyword_any").texts(rows)
    assert library.task_skills["home"].text in any_text and library.task_skills["sports"].text not in any_text


# ----------------------------------------------------------------------------- agent loops
def make_loop(cls, tokenizer, server, env: dict, sdar: dict | None):
    """An agent loop with a minimal trainer config holding ``env`` and ``sdar`` blocks."""
    return make_agent_loop(cls, tokenizer, server, env, prompt_length=8192, sdar=sdar)


def skills_sdar(library, strategy, when="per_episode"):
    return {"objective": "none", "student_prompt": True, "privileged": {"source": "skills"},
            "skills": {"library": str(library), "strategy": strategy}, "student_skills": when}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from verl_sdar.tiny_model import build_tiny_model

    return AutoTokenizer.from_pretrained(build_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def user_texts(tokenizer, server) -> list[str]:
    """The user message of every prompt the server received (one user turn per prompt)."""
    texts = []
    for ids in server.prompts:
        text = tokenizer.decode(ids)
        assert text.startswith("<|im_start|>user\n") and text.endswith("<|im_end|>\n<|im_start|>assistant\n")
        texts.append(text[len("<|im_start|>user\n") : -len("<|im_end|>\n<|im_start|>assistant\n")])
    return texts


needs_alfworld = pytest.mark.skipif(
    importlib.util.find_spec("alfworld") is None or importlib.util.find_spec("textworld") is None,
    reason="the alfworld extra is not installed",
)


@needs_alfworld
@pytest.mark.parametrize("skill_grpo", [True, False])
def test_alfworld_episode_student_prompt_holds_the_task_types_skill(tokenizer, alfworld_small, skill_grpo):
    from verl_sdar.envs.alfworld.agent_loop import AlfworldAgentLoop
    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import find_games, run_expert, split_dir
    from verl_sdar.envs.turn_prompts import format_response

    game = find_games(split_dir("train", alfworld_small))[0]
    expert = run_expert(game)
    row = make_rows([game], "train")[0]
    kwargs = {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}
    server = FakeServer(tokenizer, [format_response("plan", a) for a in expert.actions])
    sdar = skills_sdar(ALFWORLD_SKILLS, "task_type") if skill_grpo else {"objective": "none"}
    env = {"max_steps": 50, "history_length": 2}
    outputs = run_episode(lambda: make_loop(AlfworldAgentLoop, tokenizer, server, env, sdar), **kwargs)
    assert len(outputs) == expert.steps and all(o.extra_fields["won"] for o in outputs)
    skill = make_retriever("task_type", SkillLibrary.load(ALFWORLD_SKILLS)).retrieve(
        task_type=row["extra_info"]["task_type"]
    ).text
    texts = user_texts(tokenizer, server)
    assert len(texts) == expert.steps
    for turn, (text, out) in enumerate(zip(texts, outputs, strict=True)):
        assert out.prompt_ids == server.prompts[turn]  # the training row's prompt is what the server saw
        if skill_grpo:
            assert text.startswith(f"{HEADER}{skill}\n\n"), turn
            assert "Your task is to:" in text[len(HEADER) + len(skill) :] or turn == 0
        else:
            assert HEADER.strip() not in text and skill not in text


@needs_alfworld
def test_alfworld_per_turn_student_skills_follow_each_turns_observation(tokenizer, alfworld_small):
    """The reference's Skill-GRPO: every turn's block is the keyword-substring retrieval of that
    turn's whole user message, so it changes as the observation does (here: no task-type skill on
    the first turn of a pick-and-place game, then "examine" among the admissible actions brings the
    look-in-light skill); a row flagged ``NO_STUDENT_SKILLS`` (validation without skills) gets none."""
    from verl_sdar.envs.alfworld.agent_loop import AlfworldAgentLoop
    from verl_sdar.envs.alfworld.dataset import make_rows
    from verl_sdar.envs.alfworld.play import find_games, run_expert, split_dir
    from verl_sdar.envs.alfworld.prompts import ROLE
    from verl_sdar.envs.turn_prompts import format_response

    games = find_games(split_dir("train", alfworld_small))
    game = next(g for g in games if make_rows([g], "train")[0]["extra_info"]["task_type"] == "pick_and_place_simple")
    expert = run_expert(game)
    row = make_rows([game], "train")[0]
    kwargs = {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}
    env = {"max_steps": 50, "history_length": 2}
    library = SkillLibrary.load(ALFWORLD_SKILLS)
    rule = make_retriever("keyword_substring", library)
    for flagged in (False, True):
        server = FakeServer(tokenizer, [format_response("plan", a) for a in expert.actions])
        sdar = skills_sdar(ALFWORLD_SKILLS, "task_type", when="per_turn")
        extra = {NO_STUDENT_SKILLS: True} if flagged else {}
        outputs = run_episode(lambda s=server, d=sdar: make_loop(AlfworldAgentLoop, tokenizer, s, env, d),
                              **kwargs, **extra)
        assert len(outputs) == expert.steps and all(o.extra_fields["won"] for o in outputs)
        texts = user_texts(tokenizer, server)
        if flagged:
            assert all(text.startswith(ROLE) and HEADER.strip() not in text for text in texts)
            continue
        blocks = []
        for text in texts:
            block, message = text[: text.index(ROLE)], text[text.index(ROLE) :]
            assert block == skill_prefix(rule.retrieve(prompt=message).text)
            blocks.append(tuple(t for t, skill in library.task_skills.items() if skill.text in block))
        assert blocks[0] == () and ("look_at_obj_in_light",) in blocks[1:], blocks


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    from verl_sdar.envs.webshop.catalogue import build

    out = tmp_path_factory.mktemp("webshop")
    build(out, n_products=3000, n_train=500, n_test=100, seed=0)
    return out


def webshop_episode(tokenizer, catalogue, sdar, goal_index=1):
    from verl_sdar.envs.turn_prompts import format_response
    from verl_sdar.envs.webshop.agent_loop import WebShopAgentLoop
    from verl_sdar.envs.webshop.dataset import make_rows

    goal = json.loads((catalogue / "goals_test.jsonl").read_text().splitlines()[goal_index])
    actions = [f"search[{goal['name']}]", f"click[{goal['asin'].lower()}]",
               *[f"click[{v}]" for v in goal["goal_options"].values()], "click[buy now]"]
    server = FakeServer(tokenizer, [format_response("shop", a) for a in actions])
    row = make_rows([goal], "test")[0]
    kwargs = {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}
    env = {"max_steps": 15, "history_length": 2, "catalogue_dir": str(catalogue)}
    outputs = run_episode(lambda: make_loop(WebShopAgentLoop, tokenizer, server, env, sdar), **kwargs)
    assert len(outputs) == len(actions) and all(o.extra_fields["won"] for o in outputs)
    return goal, user_texts(tokenizer, server)


def test_webshop_episode_student_prompt_holds_the_keyword_matched_skill(tokenizer, catalogue):
    goal, texts = webshop_episode(tokenizer, catalogue, skills_sdar(WEBSHOP_SKILLS, "keyword_any"))
    library = SkillLibrary.load(WEBSHOP_SKILLS)
    skill = make_retriever("keyword_any", library).retrieve(prompt=goal["instruction_text"]).text
    assert library.task_skills[goal["category"]].text in skill and library.general[0].text in skill
    for text in texts:
        assert text.startswith(f"{HEADER}{skill}\n\n") and goal["instruction_text"] in text


def test_webshop_per_turn_student_skills_are_the_substring_matches_of_each_message(tokenizer, catalogue):
    from verl_sdar.envs.webshop.agent_loop import ROLE

    goal, texts = webshop_episode(tokenizer, catalogue, skills_sdar(WEBSHOP_SKILLS, "task_type", when="per_turn"))
    library = SkillLibrary.load(WEBSHOP_SKILLS)
    rule = make_retriever("keyword_substring", library)
    for text in texts:
        block, message = text[: text.index(ROLE)], text[text.index(ROLE) :]
        assert block == skill_prefix(rule.retrieve(prompt=message).text)
        assert library.task_skills[goal["category"]].text in block  # the goal names its category's keywords


def test_webshop_episode_with_an_authors_layout_library_gets_the_references_text(tokenizer, catalogue, tmp_path):
    """A folder in the authors' layout: the student's user message is exactly the reference's
    ``"[Privileged Skill Information]\\n{general}\\n\\n{category skill}\\n\\n" + prompt``."""
    from verl_sdar.envs.webshop.catalogue import CATEGORIES

    goal = json.loads((catalogue / "goals_test.jsonl").read_text().splitlines()[1])
    texts = {c: f"Made-up advice for {c}." for c in CATEGORIES}
    skill_files = {"general_skills": "general_skills.md", **{f"{c}_tips": f"{c}.md" for c in CATEGORIES}}
    (tmp_path / "general_skills.md").write_text("Made-up general advice.\n")
    for c, text in texts.items():
        (tmp_path / f"{c}.md").write_text(text)
    mapping = {"skill_files": skill_files, "task_to_skill": {c: f"{c}_tips" for c in CATEGORIES},
               "task_keywords": {c: CATEGORIES[c]["types"] for c in CATEGORIES}}
    (tmp_path / "skill_mapping.json").write_text(json.dumps(mapping))
    _, prompts = webshop_episode(tokenizer, catalogue, skills_sdar(tmp_path, "keyword_any"))
    want = f"{HEADER}Made-up general advice.\n\n{texts[goal['category']]}\n\n"
    for text in prompts:
        assert text.startswith(want) and not text[len(want) :].startswith(HEADER)


SEARCH_SKILLS = REPO / "envs" / "search" / "skills"


def search_episode(tokenizer, tmp_path, turn_rows, sdar):
    """One scripted Search-QA episode (a search, then the answer) with ``sdar``: the question, its
    row and the server (the prompts it saw)."""
    from verl_sdar.envs.search.agent_loop import SearchAgentLoop
    from verl_sdar.envs.search.corpus import build
    from verl_sdar.envs.search.dataset import make_row

    build(tmp_path, n_train=8, n_test=8, seed=0)
    q = json.loads((tmp_path / "test.jsonl").read_text().splitlines()[0])
    row = make_row(q["question"], q["golden_answers"], q["task_type"], "countryinfo", "test", 0)
    kwargs = {k: row[k] for k in ("data_source", "reward_model", "extra_info", "agent_name")}
    server = FakeServer(tokenizer, ["<search> capital </search>", f"<answer>{q['golden_answers'][0]}</answer>"])
    env = {"turn_rows": turn_rows, "max_steps": 4, "history_length": 4,
           "retriever": {"corpus_path": str(tmp_path / "corpus.jsonl"), "topk": 3}}
    run_episode(lambda: make_loop(SearchAgentLoop, tokenizer, server, env, sdar), **kwargs)
    return q, row, server


@pytest.mark.parametrize("turn_rows", [True, False])
def test_search_episode_student_prompt_holds_the_question_types_skill(tokenizer, tmp_path, turn_rows):
    """Search-QA in both modes (one row per turn, and one row per episode), skills chosen per
    episode by task type: the user message of every prompt the server sees starts with the row's
    skills (general + the question type's)."""
    q, row, server = search_episode(tokenizer, tmp_path, turn_rows, skills_sdar(SEARCH_SKILLS, "task_type"))
    skill = make_retriever("task_type", SkillLibrary.load(SEARCH_SKILLS)).retrieve(
        task_type=row["extra_info"]["task_type"]
    ).text
    assert server.prompts
    for ids in server.prompts:
        text = tokenizer.decode(ids)
        assert text.startswith(f"<|im_start|>user\n{HEADER}{skill}\n\n"), text[:200]
        assert q["question"] in text


@pytest.mark.parametrize("turn_rows", [True, False])
def test_search_per_turn_student_skills_are_the_general_skills_as_the_references(tokenizer, tmp_path, turn_rows):
    """Search's library has no keywords (nor has the reference's), so the per-turn rule gives the
    general skills only, on every prompt of both modes."""
    library = SkillLibrary.load(SEARCH_SKILLS)
    assert not library.keywords
    sdar = skills_sdar(SEARCH_SKILLS, "task_type", when="per_turn")
    q, _, server = search_episode(tokenizer, tmp_path, turn_rows, sdar)
    general = library.compose(library.general)
    assert len(server.prompts) == 2  # one generate call per turn in both modes
    for ids in server.prompts:
        text = tokenizer.decode(ids)
        assert text.startswith(f"<|im_start|>user\n{HEADER}{general}\n\n"), text[:300]
        assert library.task_skills[q["task_type"]].text not in text


@needs_alfworld
@pytest.mark.parametrize("algorithm", ["skill_grpo", "opsd"])
def test_one_alfworld_step_through_main_ppo(tmp_path, alfworld_small, algorithm):
    """One training step of verl's real main_ppo on ALFWorld for Skill-GRPO (skills in the student's
    prompt, no teacher pass) and the paper's OPSD (zeroed advantages + SDAR's gated term)."""
    from main_ppo_runner import by_step, run_main_ppo

    from verl_sdar.envs.alfworld.dataset import build
    from verl_sdar.skill_validation import renamed
    from verl_sdar.tiny_model import build_tiny_model

    build_tiny_model(tmp_path / "tiny-model", seed=0)
    build(alfworld_small, tmp_path / "alfworld", limit_val=4)
    dump = tmp_path / "val_dump"
    # Skill-GRPO validates before training: twice, without and with the student's skills
    validation = ["trainer.val_before_train=true", f"trainer.validation_data_dir={dump}"]
    records = run_main_ppo(
        tmp_path, "alfworld/tiny_cpu_sdar", f"algorithm={algorithm}",
        "sdar.privileged.source=skills", f"sdar.skills.library={ALFWORLD_SKILLS}",
        "trainer.total_training_steps=1", "env.max_steps=2", "env.rollout.n=2",
        *(validation if algorithm == "skill_grpo" else []),
        log_name=algorithm, timeout=420,
    )
    steps = by_step(records)
    step = steps[1]
    assert "actor/pg_loss" in step and step["episode/episodes"] == 4
    if algorithm == "skill_grpo":
        assert not any(k.startswith("sdar/gate") for k in step)  # no teacher pass
        log = (tmp_path / f"{algorithm}.log").read_text()
        assert "teacher" not in {k.split("/")[-1] for k in step if k.startswith("timing_s/")}, log[-2000:]
        val = steps[0]
        plain = {k: v for k, v in val.items() if k.startswith(("val-", "val/"))}
        assert "val-core/alfworld/reward/mean@1" in plain, sorted(val)
        for key, value in plain.items():  # the pass with skills, also under val_with_skill/
            assert val[renamed(key, "val_with_skill")] == value and renamed(key, "val_no_skill") in val
        # verl's dumps of the two passes: with the skills in every prompt, and without in none
        with_skills = [json.loads(line)["input"] for line in (dump / "0.jsonl").read_text().splitlines()]
        without = [json.loads(line)["input"] for line in (dump / "val_no_skill" / "0.jsonl").read_text().splitlines()]
        assert len(with_skills) == len(without) >= 4  # a row per turn of the 4 validation games
        assert all(HEADER in text for text in with_skills) and not any(HEADER in text for text in without)
    else:
        assert step["actor/pg_loss"] == 0.0  # advantages zeroed: the PPO term carries nothing
        assert step["sdar/rows_with_privileged"] == 1.0 and "actor/sdar/loss" in step
        assert step["actor/entropy"] > 0
