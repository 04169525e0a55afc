"""Skill libraries and retrieval strategies: which privileged text the teacher sees for a row.

A skill library is a folder in one of two layouts, told apart by its mapping file (both at once is
an error). **Ours** (``mapping.yaml``)::

    general/*.md           general skills; all of them are always included, in file-name order
    task_types/<file>.md   one skill text per task type (several task types may share a file)
    mapping.yaml           task_types: {<task type>: <file name under task_types/>}
                           keywords:   {<keyword or phrase>: <task type>}     (optional)

Each skill file is one skill. Its id is its path relative to the library folder (e.g.
``task_types/color.md``); its display name is the file stem with a leading ordering prefix such as
``01-`` or ``01_`` removed and ``-``/``_`` shown as spaces (``general/01-one-word.md`` ->
``one word``). ``SkillLibrary.load`` rejects, naming the file: a missing folder or mapping file,
unknown top-level keys or duplicate keys in the mapping, a mapping entry that names a missing
file, a keyword that maps to a task type not listed under ``task_types``, an empty
(whitespace-only) skill file, and stray entries in ``general/`` (not ``*.md``) or
``task_types/`` (not named by the mapping).
Hidden files (``.gitkeep``) are ignored.

**Shipped libraries by name.** ``SkillLibrary.load("builtin:<name>")`` loads a library shipped
with verl-sdar (``alfworld``, ``codeword``, ``search``, ``webshop``: the repository's
``envs/<name>/skills/``, packaged into the wheel), looked up in the loading process's own
installation (:mod:`verl_sdar.resources`), so the name works from any folder and on every node of a
Ray cluster; an unknown name is a ``SkillLibraryError`` listing the shipped ones. Anything else is
a folder path.

**The authors' layout** (``skill_mapping.json``, the SDAR reference implementation's skill folders),
loaded so that every strategy returns exactly the text the reference builds::

    skill_mapping.json     {"skill_files":   {<skill name>: <markdown file, relative to the folder>},
                            "task_to_skill": {<task type>: <skill name>},
                            "task_keywords": {<task type>: [<keyword>, ...]}}      (optional)
    <the markdown files>

The skill named ``general_skills`` is the general one. Its files' texts are stripped of
leading/trailing whitespace, like the reference does. Differences from ours, all the reference's
rules: the composed text is the *bare* texts joined by a blank line (``"\\n\\n"``; no section
titles), general first and ``""`` in its place when the folder has no ``general_skills``; a row's
task type selects the first ``task_to_skill`` key (file order) that is a *substring* of it (the
reference matches the keys against ALFWorld game paths, which hold our task-type names, so the
reference's ``pick_and_place`` selects for our ``pick_and_place_simple``); keywords match as plain
substrings of the lower-cased text; ``full`` appends every non-general skill in ``skill_files``
order. ``SkillLibrary.load`` rejects, naming the key: a missing file, a ``task_to_skill`` value or a
``task_keywords`` task type that names nothing, two skill names sharing one file, an empty file, a
file outside the folder. Other top-level keys are ignored (as the reference ignores them).

**Keyword matching** (``SkillLibrary.infer_task_type``, ours): case-insensitive, on word boundaries
(a keyword never matches inside a longer word); whitespace inside a phrase matches any run of
whitespace. If keywords of several task types occur in the text, the task type of the keyword
that occurs *first* wins; at the same position the longer keyword wins ("red wine" beats "red").
(The authors' layout: the first task type in ``task_keywords`` order with a keyword in the text.)
``SkillLibrary.matching_task_types`` gives *every* task type with a keyword in the text, in
mapping order, with the same per-keyword matching.

**Composed text** (``compose``, ours): each skill is one section ``"## <name>\\n<text>"``; sections
are joined by a blank line, general skills first (file-name order), then the task-type skill(s).
The result is deterministic and the same string object is returned for the same skills, so the
teacher's ``PrivilegedBlocks`` tokenises each distinct composition once.

**Strategies** (``make_retriever``; every one returns a ``Retrieval``):

* ``task_type``:   general skills + the skill mapped to the row's task type;
* ``keyword``:     infer the task type from the prompt text via the keyword map, then as ``task_type``;
* ``keyword_any``: general skills + the skill of *every* task type any of whose keywords occurs in
  the prompt text, in mapping order (the reference's prompt-keyword rule, its default for WebShop;
  ours: a skill file shared by several matched task types appears once);
* ``keyword_substring``: as ``keyword_any``, but a keyword matches as a plain substring of the
  lower-cased text, whatever the layout, and the teacher reads the *whole* decoded student prompt
  (special tokens kept) instead of its last user message: the reference's rule exactly
  (``SkillProvider.get_privileged_info_from_prompt``), so "hat" matches "that";
* ``full``:        general skills + every task-type skill;
* ``random``:      general skills + one task-type skill drawn uniformly by a seeded RNG;
* ``ucb``:         general skills + the task-type skill chosen by a UCB1 bandit kept per task type.

Rows whose task type is missing, unknown to the library, or (``keyword``/``keyword_any``) not
inferable get the general skills only (``ucb``: the shared fallback bandit); each retriever counts
them in ``Retriever.unknown`` so the caller can log them. ``PROMPT_STRATEGIES`` read the prompt
text; ``STATELESS_STRATEGIES`` give the same text for the same row in any process (what the
student's own prompt may use, :mod:`verl_sdar.privileged`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import re
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .resources import ResourceNotFoundError, resolve_skill_library

__all__ = [
    "MAPPING_FILE",
    "PROMPT_STRATEGIES",
    "REFERENCE_GENERAL",
    "REFERENCE_MAPPING_FILE",
    "STATELESS_STRATEGIES",
    "STRATEGIES",
    "WHOLE_PROMPT_STRATEGIES",
    "FullRetriever",
    "KeywordAnyRetriever",
    "KeywordRetriever",
    "KeywordSubstringRetriever",
    "RandomRetriever",
    "Retrieval",
    "Retriever",
    "Skill",
    "SkillLibrary",
    "SkillLibraryError",
    "TaskTypeRetriever",
    "UCBRetriever",
    "compose",
    "make_retriever",
]

logger = logging.getLogger(__name__)

MAPPING_FILE = "mapping.yaml"
REFERENCE_MAPPING_FILE = "skill_mapping.json"
REFERENCE_GENERAL = "general_skills"
_MAPPING_KEYS = ("task_types", "keywords")
_REFERENCE_KEYS = ("skill_files", "task_to_skill", "task_keywords")
LAYOUTS = ("ours", "reference")
_ORDER_PREFIX = re.compile(r"^\d+[-_ ]+")


class SkillLibraryError(ValueError):
    """A malformed skill library, or retriever state that does not fit the library. The message
    names the offending file or key."""


@dataclass(frozen=True)
class Skill:
    """One skill file.

    Attributes:
        skill_id: path relative to the library folder, with ``/`` separators (``general/x.md``).
        name: display name (section title in the composed text).
        text: the file's text, stripped of leading/trailing whitespace (never empty).
    """

    skill_id: str
    name: str
    text: str


@dataclass(frozen=True)
class Retrieval:
    """The privileged text chosen for one row.

    Attributes:
        text: composed privileged text for the teacher (``""`` when no skill was selected, which
            happens only for a library without general skills and a row without a task-type skill).
        skill_ids: ids of the skills in ``text``, in the order rendered.
        task_type: the task type the choice was made for; ``None`` when none was known or used
            (always ``None`` for ``full`` and ``random``; ``keyword_any``/``keyword_substring``: the
            matched task type when exactly one matched, else ``None``).
        task_types: ``keyword_any``/``keyword_substring``: every matched task type, in the order
            their skills appear.
    """

    text: str
    skill_ids: tuple[str, ...]
    task_type: str | None
    task_types: tuple[str, ...] = ()


def _skill_name(path: Path) -> str:
    stem = _ORDER_PREFIX.sub("", path.stem) or path.stem
    return stem.replace("_", " ").replace("-", " ").strip() or path.stem


def compose(skills: Sequence[Skill]) -> str:
    """Render skills as ``"## <name>\\n<text>"`` sections joined by blank lines."""
    return "\n\n".join(f"## {skill.name}\n{skill.text}" for skill in skills)


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects duplicate keys (plain YAML silently keeps the last one)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if duplicate:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def _keyword_key(keyword: str) -> str:
    return " ".join(keyword.split()).casefold()


def _is_hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _read_skill(root: Path, path: Path) -> Skill:
    rel = path.relative_to(root).as_posix()
    try:
        text = path.read_text(encoding="utf-8").strip()
    except UnicodeDecodeError as err:
        raise SkillLibraryError(f"{path}: skill file is not valid UTF-8 ({err})") from None
    if not text:
        raise SkillLibraryError(f"{path}: skill file is empty (whitespace only)")
    return Skill(skill_id=rel, name=_skill_name(path), text=text)


def _keyword_pattern(keywords: Sequence[str]) -> re.Pattern[str]:
    """One regex for normalised keywords: whole words, any whitespace inside a phrase, longest first
    (at equal start positions the regex alternation takes the longer keyword)."""
    alternatives = sorted(keywords, key=lambda k: (-len(k), k))
    body = "|".join(r"\s+".join(re.escape(part) for part in k.split(" ")) for k in alternatives)
    return re.compile(rf"(?<!\w)(?:{body})(?!\w)", re.IGNORECASE)


class SkillLibrary:
    """A loaded, validated skill library (see the module docstring for the folder layouts).

    Attributes:
        root: the library folder.
        layout: ``ours`` (``mapping.yaml``) or ``reference`` (the authors' ``skill_mapping.json``).
        general: general skills, in file-name order (``reference``: the ``general_skills`` skill).
        task_skills: task type -> its skill.
        arms: the distinct task-type skills, sorted by id (the choices of ``random`` and ``ucb``;
            ``reference``: every non-general skill, in ``skill_files`` order).
        keywords: normalised keyword (case-folded, single spaces) -> task type (``reference``:
            each keyword -> the first task type listing it).
        task_keywords: task type -> its keywords, in mapping order (``ours``: normalised;
            ``reference``: as written in ``task_keywords``).
    """

    def __init__(
        self,
        root: Path,
        general: Sequence[Skill],
        task_skills: Mapping[str, Skill],
        keywords: Mapping[str, str],
        *,
        layout: str = "ours",
        task_keywords: Mapping[str, Sequence[str]] | None = None,
        arms: Sequence[Skill] | None = None,
    ):
        if layout not in LAYOUTS:
            raise ValueError(f"unknown skill library layout {layout!r}; expected one of {LAYOUTS}")
        self.root = root
        self.layout = layout
        self.general: tuple[Skill, ...] = tuple(general)
        self.task_skills: dict[str, Skill] = dict(task_skills)
        if arms is None:
            distinct = {s.skill_id: s for s in self.task_skills.values()}
            arms = [distinct[k] for k in sorted(distinct)]
        self.arms: tuple[Skill, ...] = tuple(arms)
        self.keywords: dict[str, str] = dict(keywords)
        if task_keywords is None:
            grouped: dict[str, list[str]] = {t: [] for t in self.task_skills}
            for keyword, task_type in self.keywords.items():
                grouped[task_type].append(keyword)
            task_keywords = {t: ks for t, ks in grouped.items() if ks}
        self.task_keywords: dict[str, tuple[str, ...]] = {t: tuple(ks) for t, ks in task_keywords.items()}
        self._by_id = {s.skill_id: s for s in (*self.general, *self.arms)}
        self._compositions: dict[tuple[str, ...], str] = {}
        self._keyword_re: re.Pattern[str] | None = None
        self._type_res: dict[str, re.Pattern[str]] = {}
        if layout == "ours":
            if self.keywords:
                self._keyword_re = _keyword_pattern(list(self.keywords))
            self._type_res = {t: _keyword_pattern(ks) for t, ks in self.task_keywords.items() if ks}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> SkillLibrary:
        """Load and validate the library in ``folder`` (either layout, told apart by its mapping
        file); raises ``SkillLibraryError`` naming the file. ``folder`` is a folder path or a shipped
        library's name, ``builtin:<name>`` (``builtin:alfworld``), found in this process's
        installation by :func:`verl_sdar.resources.resolve_skill_library`; an unknown name raises
        ``SkillLibraryError`` listing the shipped ones."""
        try:
            root = resolve_skill_library(folder)
        except ResourceNotFoundError as err:
            raise SkillLibraryError(str(err)) from None
        if not root.is_dir():
            raise SkillLibraryError(f"{root}: skill library folder does not exist")
        mapping_path = root / MAPPING_FILE
        reference_path = root / REFERENCE_MAPPING_FILE
        if reference_path.is_file():
            if mapping_path.is_file():
                raise SkillLibraryError(
                    f"{root}: holds both {MAPPING_FILE} (our layout) and {REFERENCE_MAPPING_FILE} (the authors' "
                    "layout); keep one"
                )
            return cls._load_reference(root, reference_path)
        if not mapping_path.is_file():
            raise SkillLibraryError(
                f"{mapping_path}: mapping file is missing (nor is there an authors'-layout {REFERENCE_MAPPING_FILE})"
            )
        try:
            mapping = yaml.load(mapping_path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
        except yaml.YAMLError as err:
            raise SkillLibraryError(f"{mapping_path}: not valid YAML ({err})") from None
        if not isinstance(mapping, dict):
            raise SkillLibraryError(
                f"{mapping_path}: expected a mapping with keys {list(_MAPPING_KEYS)}, got {type(mapping).__name__}"
            )
        unknown = [k for k in mapping if k not in _MAPPING_KEYS]
        if unknown:
            raise SkillLibraryError(f"{mapping_path}: unknown top-level keys {unknown}; allowed: {list(_MAPPING_KEYS)}")
        if "task_types" not in mapping:
            raise SkillLibraryError(f"{mapping_path}: 'task_types' is missing")
        raw_types = mapping["task_types"]
        raw_keywords = mapping.get("keywords")
        raw_types = {} if raw_types is None else raw_types
        raw_keywords = {} if raw_keywords is None else raw_keywords
        for key, value in (("task_types", raw_types), ("keywords", raw_keywords)):
            if not isinstance(value, dict):
                raise SkillLibraryError(f"{mapping_path}: '{key}' must be a mapping, got {type(value).__name__}")

        general = cls._load_general(root)

        types_dir = root / "task_types"
        task_skills: dict[str, Skill] = {}
        loaded: dict[str, Skill] = {}
        for task_type, file_name in raw_types.items():
            where = f"{mapping_path}: task_types.{task_type}"
            if not isinstance(task_type, str) or not task_type.strip():
                raise SkillLibraryError(
                    f"{mapping_path}: task type {task_type!r} must be a non-empty string (quote it in YAML)"
                )
            if not isinstance(file_name, str) or not file_name.strip():
                raise SkillLibraryError(f"{where}: expected a file name under task_types/, got {file_name!r}")
            if "/" in file_name or "\\" in file_name or file_name.startswith("."):
                raise SkillLibraryError(f"{where}: {file_name!r} must be a plain file name inside task_types/")
            path = types_dir / file_name
            if not path.is_file():
                raise SkillLibraryError(f"{where}: skill file {path} does not exist")
            if file_name not in loaded:
                loaded[file_name] = _read_skill(root, path)
            task_skills[task_type] = loaded[file_name]
        if types_dir.is_dir():
            for entry in sorted(types_dir.iterdir()):
                if not _is_hidden(entry) and entry.name not in loaded:
                    raise SkillLibraryError(
                        f"{entry}: not named by any entry of task_types in {mapping_path} "
                        "(map a task type to it or remove it)"
                    )

        keywords: dict[str, str] = {}
        spelled: dict[str, str] = {}
        for keyword, task_type in raw_keywords.items():
            if not isinstance(keyword, str) or not keyword.strip():
                raise SkillLibraryError(
                    f"{mapping_path}: keyword {keyword!r} must be a non-empty string (quote it in YAML)"
                )
            if task_type not in task_skills:
                raise SkillLibraryError(
                    f"{mapping_path}: keywords.{keyword} maps to task type {task_type!r}, which is not in "
                    f"task_types {sorted(task_skills)}"
                )
            key = _keyword_key(keyword)
            if key in keywords and keywords[key] != task_type:
                raise SkillLibraryError(
                    f"{mapping_path}: keywords {spelled[key]!r} and {keyword!r} are the same keyword "
                    f"(matching ignores case) but map to different task types"
                )
            keywords[key] = task_type
            spelled[key] = keyword
        return cls(root, general, task_skills, keywords)

    @classmethod
    def _load_reference(cls, root: Path, path: Path) -> SkillLibrary:
        """The authors' layout (module docstring)."""
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise SkillLibraryError(f"{path}: not valid JSON ({err})") from None
        if not isinstance(mapping, dict):
            raise SkillLibraryError(f"{path}: expected a JSON object with keys {list(_REFERENCE_KEYS)}")
        ignored = sorted(k for k in mapping if k not in _REFERENCE_KEYS)
        if ignored:
            logger.warning("%s: ignoring top-level keys %s (not read by the reference either)", path, ignored)
        for key in ("skill_files", "task_to_skill"):
            if key not in mapping:
                raise SkillLibraryError(f"{path}: '{key}' is missing")
        skill_files, task_to_skill = mapping["skill_files"], mapping["task_to_skill"]
        task_keywords = mapping.get("task_keywords") or {}
        for key, value in (("skill_files", skill_files), ("task_to_skill", task_to_skill),
                           ("task_keywords", task_keywords)):
            if not isinstance(value, dict):
                raise SkillLibraryError(f"{path}: '{key}' must be an object, got {type(value).__name__}")

        resolved_root = root.resolve()
        skills: dict[str, Skill] = {}
        by_file: dict[str, str] = {}
        for name, file_name in skill_files.items():
            where = f"{path}: skill_files.{name}"
            if not isinstance(file_name, str) or not file_name.strip():
                raise SkillLibraryError(f"{where}: expected a file name, got {file_name!r}")
            file_path = root / file_name
            if not file_path.resolve().is_relative_to(resolved_root):
                raise SkillLibraryError(f"{where}: {file_name!r} is outside the library folder")
            if not file_path.is_file():
                raise SkillLibraryError(f"{where}: skill file {file_path} does not exist")
            rel = file_path.relative_to(root).as_posix()
            if rel in by_file:
                raise SkillLibraryError(f"{where}: {rel} is already the file of skill {by_file[rel]!r}")
            by_file[rel] = name
            skills[name] = replace(_read_skill(root, file_path), name=name)

        task_skills: dict[str, Skill] = {}
        for task_type, name in task_to_skill.items():
            if not isinstance(name, str) or name not in skills:
                raise SkillLibraryError(
                    f"{path}: task_to_skill.{task_type} names skill {name!r}, which is not in skill_files "
                    f"{sorted(skills)}"
                )
            task_skills[task_type] = skills[name]

        keywords_by_type: dict[str, tuple[str, ...]] = {}
        keywords: dict[str, str] = {}
        for task_type, words in task_keywords.items():
            where = f"{path}: task_keywords.{task_type}"
            if task_type not in task_skills:
                raise SkillLibraryError(f"{where}: task type is not in task_to_skill {sorted(task_skills)}")
            if not isinstance(words, list) or not all(isinstance(w, str) and w for w in words):
                raise SkillLibraryError(f"{where}: expected a list of non-empty strings, got {words!r}")
            keywords_by_type[task_type] = tuple(words)
            for word in words:
                keywords.setdefault(word, task_type)

        general = [skills[REFERENCE_GENERAL]] if REFERENCE_GENERAL in skills else []
        arms = [skill for name, skill in skills.items() if name != REFERENCE_GENERAL]
        return cls(root, general, task_skills, keywords, layout="reference", task_keywords=keywords_by_type,
                   arms=arms)

    @staticmethod
    def _load_general(root: Path) -> list[Skill]:
        general_dir = root / "general"
        if not general_dir.exists():
            return []
        if not general_dir.is_dir():
            raise SkillLibraryError(f"{general_dir}: expected a folder of general skills (*.md)")
        skills = []
        for entry in sorted(general_dir.iterdir(), key=lambda p: p.name):
            if _is_hidden(entry):
                continue
            if not (entry.is_file() and entry.suffix == ".md"):
                raise SkillLibraryError(f"{entry}: general/ holds only skill files named *.md")
            skills.append(_read_skill(root, entry))
        return skills

    # ------------------------------------------------------------------ queries
    def skill(self, skill_id: str) -> Skill:
        """The skill with this id; ``KeyError`` naming the known ids otherwise."""
        try:
            return self._by_id[skill_id]
        except KeyError:
            raise KeyError(f"no skill {skill_id!r} in {self.root}; known: {sorted(self._by_id)}") from None

    def resolve_task_type(self, task_type: str | None) -> str | None:
        """The library's task type for a row's given task type, or None (unknown/missing).

        ``ours``: the same name. ``reference``: the first ``task_to_skill`` key (file order) that is
        a substring of it, as the reference matches its keys against ALFWorld game paths."""
        if not isinstance(task_type, str):
            return None
        if self.layout == "ours":
            return task_type if task_type in self.task_skills else None
        return next((key for key in self.task_skills if key in task_type), None)

    def matching_task_types(self, text: str) -> list[str]:
        """Every task type any of whose keywords occurs in ``text``, in mapping order
        (``ours``: whole words, case-insensitive; ``reference``: substrings of the lower-cased text)."""
        if self.layout == "reference":
            return self.substring_task_types(text)
        return [t for t, pattern in self._type_res.items() if pattern.search(text)]

    def substring_task_types(self, text: str) -> list[str]:
        """Every task type any of whose keywords is a substring of the lower-cased ``text``, in mapping
        order, in either layout (the reference's rule: "hat" matches "that")."""
        lowered = text.lower()
        return [t for t, words in self.task_keywords.items() if any(w in lowered for w in words)]

    def infer_task_type(self, text: str) -> str | None:
        """The task type of the first keyword occurring in ``text`` (rules: module docstring)."""
        if self.layout == "reference":
            return next(iter(self.matching_task_types(text)), None)
        if self._keyword_re is None:
            return None
        match = self._keyword_re.search(text)
        if match is None:
            return None
        found = _keyword_key(match.group(0))
        task_type = self.keywords.get(found)
        if task_type is None:  # a case-insensitive match whose case folding differs: look it up slowly
            for keyword, candidate in self.keywords.items():
                if re.fullmatch(r"\s+".join(map(re.escape, keyword.split(" "))), match.group(0), re.IGNORECASE):
                    return candidate
        return task_type

    def compose(self, skills: Sequence[Skill]) -> str:
        """The privileged text of ``skills`` (general first) in this library's layout: ours,
        :func:`compose`; the authors', the bare texts joined by a blank line with ``""`` in place
        of a missing general skill (the reference's ``"\\n\\n".join([general, *task skills])``)."""
        if self.layout == "ours":
            return compose(skills)
        texts = [s.text for s in skills]
        if not (self.general and skills and skills[0] is self.general[0]):
            texts.insert(0, "")
        return "\n\n".join(texts)

    def retrieval(self, skills: Sequence[Skill], task_type: str | None, task_types: Sequence[str] = ()) -> Retrieval:
        """A ``Retrieval`` of ``skills`` (composed text cached per id sequence)."""
        ids = tuple(s.skill_id for s in skills)
        text = self._compositions.get(ids)
        if text is None:
            text = self._compositions[ids] = self.compose(skills)
        return Retrieval(text=text, skill_ids=ids, task_type=task_type, task_types=tuple(task_types))


class Retriever(ABC):
    """Base of the retrieval strategies.

    Attributes:
        library: the skill library.
        rows: number of ``retrieve`` calls since the last ``reset_counts``.
        unknown: rows whose task type was missing/unknown (key: the given task type, ``None`` when
            absent or, for ``keyword``, not inferable), since the last ``reset_counts``.
    """

    strategy: ClassVar[str]

    def __init__(self, library: SkillLibrary):
        self.library = library
        self.rows = 0
        self.unknown: Counter[str | None] = Counter()

    def retrieve(self, *, prompt: str | None = None, task_type: str | None = None) -> Retrieval:
        """The privileged text for one row, given its prompt text and/or task type."""
        self.rows += 1
        return self._retrieve(prompt, task_type)

    @abstractmethod
    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval: ...

    def update(self, retrieval: Retrieval, reward: float) -> None:  # noqa: B027 - only ucb overrides it
        """Feed back an episode outcome for a retrieval; only ``ucb`` learns from it."""

    def reset_counts(self) -> None:
        """Zero ``rows`` and ``unknown`` (e.g. after logging them for a step)."""
        self.rows = 0
        self.unknown.clear()

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state to save in a checkpoint."""
        return {"strategy": self.strategy}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore ``state_dict()`` output; a state of another strategy is an error."""
        if not isinstance(state, Mapping) or state.get("strategy") != self.strategy:
            got = state.get("strategy") if isinstance(state, Mapping) else type(state).__name__
            raise SkillLibraryError(f"retriever state is for strategy {got!r}, this retriever is {self.strategy!r}")

    def _known(self, task_type: str | None) -> str | None:
        """The library's task type for ``task_type`` (``SkillLibrary.resolve_task_type``); a
        missing/unknown one is counted as unknown."""
        known = self.library.resolve_task_type(task_type)
        if known is None:
            self.unknown[task_type] += 1
        return known

    def _general_plus(self, task_type: str | None) -> Retrieval:
        if task_type is None:
            return self.library.retrieval(self.library.general, None)
        return self.library.retrieval(
            (*self.library.general, self.library.task_skills[task_type]), task_type, (task_type,)
        )


class TaskTypeRetriever(Retriever):
    """General skills + the skill mapped to the row's given task type (unknown/None: general only)."""

    strategy = "task_type"

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        return self._general_plus(self._known(task_type))


class KeywordRetriever(Retriever):
    """General skills + the skill of the task type inferred from the prompt's keywords (none found:
    general only). The ``task_type`` argument is ignored; ``prompt`` is required."""

    strategy = "keyword"

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        if prompt is None:
            raise TypeError("keyword retrieval needs the row's prompt text (prompt=...)")
        inferred = self.library.infer_task_type(prompt)  # already one of the library's task types
        if inferred is None:
            self.unknown[None] += 1
        return self._general_plus(inferred)


class KeywordAnyRetriever(Retriever):
    """General skills + the skill of every task type any of whose keywords occurs in the prompt, in
    mapping order (``SkillLibrary.matching_task_types``); none found: general only. The reference's
    prompt-keyword rule. Ours: a skill file shared by several matched task types appears once; the
    authors' layout: once per matched task type, as the reference appends it. ``task_type`` is
    ignored; ``prompt`` is required."""

    strategy = "keyword_any"

    def _matching(self, prompt: str) -> list[str]:
        return self.library.matching_task_types(prompt)

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        if prompt is None:
            raise TypeError(f"{self.strategy} retrieval needs the row's prompt text (prompt=...)")
        matched = self._matching(prompt)
        if not matched:
            self.unknown[None] += 1
            return self.library.retrieval(self.library.general, None)
        chosen = [self.library.task_skills[t] for t in matched]
        if self.library.layout == "ours":
            chosen = list({s.skill_id: s for s in chosen}.values())
        single = matched[0] if len(matched) == 1 else None
        return self.library.retrieval((*self.library.general, *chosen), single, matched)


class KeywordSubstringRetriever(KeywordAnyRetriever):
    """``keyword_any`` with the reference's matching: every task type any of whose keywords is a
    substring of the lower-cased prompt (``SkillLibrary.substring_task_types``)."""

    strategy = "keyword_substring"

    def _matching(self, prompt: str) -> list[str]:
        return self.library.substring_task_types(prompt)


class FullRetriever(Retriever):
    """General skills + every task-type skill (``library.arms`` order), the same text for all rows."""

    strategy = "full"

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        return self.library.retrieval((*self.library.general, *self.library.arms), None)


def _require_arms(library: SkillLibrary, strategy: str) -> None:
    if not library.arms:
        raise SkillLibraryError(f"{library.root}: strategy {strategy!r} needs at least one task-type skill")


class RandomRetriever(Retriever):
    """General skills + one task-type skill drawn uniformly from ``library.arms`` by a
    ``random.Random(seed)``: the same seed and call sequence give the same choices. The RNG state is
    part of ``state_dict`` so a resumed run continues the sequence."""

    strategy = "random"

    def __init__(self, library: SkillLibrary, seed: int = 0):
        super().__init__(library)
        _require_arms(library, self.strategy)
        self._rng = random.Random(seed)

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        arm = self.library.arms[self._rng.randrange(len(self.library.arms))]
        return self.library.retrieval((*self.library.general, arm), None)

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = self._rng.getstate()
        return {**super().state_dict(), "rng": [version, list(internal), gauss_next]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        try:
            version, internal, gauss_next = state["rng"]
            self._rng.setstate((version, tuple(internal), gauss_next))
        except (KeyError, TypeError, ValueError) as err:
            raise SkillLibraryError(f"random retriever state: bad 'rng' entry ({err})") from None


@dataclass
class _Arms:
    """Statistics of one bandit, indexed like ``library.arms``."""

    pulls: list[int]
    reward_sum: list[float]


class UCBRetriever(Retriever):
    """General skills + a task-type skill chosen by UCB1, one bandit per task type.

    Each task type of the library (the row's given ``task_type``) has its own bandit whose arms are
    all task-type skills (``library.arms``); rows with a missing/unknown task type share one fallback
    bandit (and are counted in ``unknown``). ``retrieve`` picks, in that bandit, an untried arm if
    there is one, else the arm maximising ``mean_reward + c * sqrt(ln N / n)`` (``n``: updates of the
    arm, ``N``: updates of the bandit). Ties, including among untried arms, go to the arm earliest
    in the bandit's order: the skill mapped to the task type first, then ``library.arms`` order. So
    the first choice for a task type is the keyword/task-type choice.

    Statistics change only in ``update``; rows retrieved before an update (one batch) get the same
    arm per bandit. The reward's meaning (episode outcome, a teacher-gain signal, ...) is the
    caller's; UCB1's default ``c = sqrt(2)`` suits rewards in [0, 1].
    """

    strategy = "ucb"

    def __init__(self, library: SkillLibrary, c: float = math.sqrt(2.0)):
        super().__init__(library)
        _require_arms(library, self.strategy)
        if not (isinstance(c, (int, float)) and math.isfinite(c) and c >= 0):
            raise ValueError(f"ucb c must be a finite number >= 0, got {c!r}")
        self.c = float(c)
        self._arm_index = {s.skill_id: i for i, s in enumerate(library.arms)}
        self._bandits: dict[str | None, _Arms] = {t: self._fresh() for t in sorted(library.task_skills)}
        self._bandits[None] = self._fresh()
        self._order: dict[str | None, list[int]] = {}
        for t in [*sorted(library.task_skills), None]:
            mapped = None if t is None else self._arm_index.get(library.task_skills[t].skill_id)
            first = [] if mapped is None else [mapped]
            self._order[t] = first + [i for i in range(len(library.arms)) if i not in first]

    def _fresh(self) -> _Arms:
        n = len(self.library.arms)
        return _Arms(pulls=[0] * n, reward_sum=[0.0] * n)

    def scores(self, task_type: str | None) -> dict[str, float]:
        """Current UCB score of each arm of a task type's bandit (``inf`` for untried arms)."""
        bandit = self._bandits[task_type if task_type in self.library.task_skills else None]
        total = sum(bandit.pulls)
        out = {}
        for i, skill in enumerate(self.library.arms):
            n = bandit.pulls[i]
            if n == 0:
                out[skill.skill_id] = math.inf
            else:
                out[skill.skill_id] = bandit.reward_sum[i] / n + self.c * math.sqrt(math.log(total) / n)
        return out

    def _retrieve(self, prompt: str | None, task_type: str | None) -> Retrieval:
        context = self._known(task_type)
        bandit = self._bandits[context]
        total = sum(bandit.pulls)
        best, best_score = -1, -math.inf
        for i in self._order[context]:
            n = bandit.pulls[i]
            if n == 0:
                best = i
                break
            score = bandit.reward_sum[i] / n + self.c * math.sqrt(math.log(total) / n)
            if score > best_score:
                best, best_score = i, score
        arm = self.library.arms[best]
        return self.library.retrieval((*self.library.general, arm), context)

    def update(self, retrieval: Retrieval, reward: float) -> None:  # noqa: B027 - only ucb overrides it
        """Credit ``reward`` to the arm of ``retrieval`` in the bandit of its task type."""
        if not (isinstance(reward, (int, float)) and math.isfinite(reward)):
            raise ValueError(f"ucb reward must be a finite number, got {reward!r}")
        n_general = len(self.library.general)
        chosen = retrieval.skill_ids[n_general:]
        if len(chosen) != 1 or chosen[0] not in self._arm_index or retrieval.task_type not in self._bandits:
            raise ValueError(
                f"retrieval {retrieval.skill_ids!r} (task type {retrieval.task_type!r}) "
                "did not come from this UCB retriever"
            )
        bandit = self._bandits[retrieval.task_type]
        i = self._arm_index[chosen[0]]
        bandit.pulls[i] += 1
        bandit.reward_sum[i] += float(reward)

    def state_dict(self) -> dict[str, Any]:
        """``{"strategy", "arms": [skill ids], "bandits": {task type: {"pulls", "reward_sum"}},
        "fallback": {...}}``; lists are indexed like ``arms``. ``c`` is configuration, not state."""

        def dump(b: _Arms) -> dict[str, list]:
            return {"pulls": list(b.pulls), "reward_sum": list(b.reward_sum)}

        return {
            **super().state_dict(),
            "arms": [s.skill_id for s in self.library.arms],
            "bandits": {t: dump(b) for t, b in self._bandits.items() if t is not None},
            "fallback": dump(self._bandits[None]),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore statistics. The saved arms must equal ``library.arms`` and every saved task type
        must exist in the library (else ``SkillLibraryError``); task types new to the library start
        untried."""
        super().load_state_dict(state)
        arms = [s.skill_id for s in self.library.arms]
        if list(state.get("arms", ())) != arms:
            raise SkillLibraryError(
                f"ucb state does not match the skill library {self.library.root}: saved arms "
                f"{list(state.get('arms', ()))}, library arms {arms}"
            )
        saved = state.get("bandits")
        if not isinstance(saved, Mapping):
            raise SkillLibraryError("ucb state: 'bandits' must be a mapping")
        extra = sorted(t for t in saved if t not in self.library.task_skills)
        if extra:
            raise SkillLibraryError(
                f"ucb state has bandits for task types {extra} that the skill library {self.library.root} "
                f"does not define (task types: {sorted(self.library.task_skills)})"
            )
        bandits = {t: self._fresh() for t in self._bandits}
        for key, raw in [*saved.items(), (None, state.get("fallback"))]:
            bandits[key] = self._parse(raw, "fallback" if key is None else f"bandits.{key}", len(arms))
        self._bandits = bandits

    @staticmethod
    def _parse(raw: Any, where: str, n: int) -> _Arms:
        if not isinstance(raw, Mapping):
            raise SkillLibraryError(f"ucb state: {where} must be a mapping with 'pulls' and 'reward_sum'")
        pulls, sums = raw.get("pulls"), raw.get("reward_sum")
        if not (isinstance(pulls, list) and isinstance(sums, list) and len(pulls) == len(sums) == n):
            raise SkillLibraryError(f"ucb state: {where}.pulls / reward_sum must be lists of {n} numbers")
        if not all(isinstance(p, int) and not isinstance(p, bool) and p >= 0 for p in pulls):
            raise SkillLibraryError(f"ucb state: {where}.pulls must be integers >= 0, got {pulls}")
        if not all(isinstance(s, (int, float)) and math.isfinite(s) for s in sums):
            raise SkillLibraryError(f"ucb state: {where}.reward_sum must be finite numbers, got {sums}")
        return _Arms(pulls=list(pulls), reward_sum=[float(s) for s in sums])


STRATEGIES = ("task_type", "keyword", "keyword_any", "keyword_substring", "full", "random", "ucb")
PROMPT_STRATEGIES = ("keyword", "keyword_any", "keyword_substring")
"""Strategies that read the row's prompt text (``retrieve(prompt=...)``)."""
WHOLE_PROMPT_STRATEGIES = ("keyword_substring",)
"""Prompt strategies whose teacher reads the whole decoded prompt, special tokens kept (the
reference's), not the last user message."""
STATELESS_STRATEGIES = ("task_type", "keyword", "keyword_any", "keyword_substring", "full")
"""Strategies whose choice depends on the row alone (no RNG, no learnt statistics)."""


def make_retriever(strategy: str, library: SkillLibrary, *, seed: int = 0, ucb_c: float = math.sqrt(2.0)) -> Retriever:
    """The retriever for a strategy name (``STRATEGIES``). ``seed`` is used by ``random``, ``ucb_c``
    (the exploration constant ``c``) by ``ucb``."""
    if strategy == "task_type":
        return TaskTypeRetriever(library)
    if strategy == "keyword":
        return KeywordRetriever(library)
    if strategy == "keyword_any":
        return KeywordAnyRetriever(library)
    if strategy == "keyword_substring":
        return KeywordSubstringRetriever(library)
    if strategy == "full":
        return FullRetriever(library)
    if strategy == "random":
        return RandomRetriever(library, seed=seed)
    if strategy == "ucb":
        return UCBRetriever(library, c=ucb_c)
    raise ValueError(f"unknown skill retrieval strategy {strategy!r}; expected one of {STRATEGIES}")
