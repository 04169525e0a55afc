"""Generate the ``sdar.*`` reference of docs/configuration.md from the settings dataclasses.

The source of truth is the dataclasses in ``verl_sdar.config`` (``SDARConfig`` and every dataclass
nested in it): their fields give key, type and default, and the ``Attributes:`` section of each
class docstring (Google style) gives the descriptions. The walk follows ``dataclasses.fields``
recursively, so a new field or a new nested dataclass shows up without touching this module.

Usage::

    python -m verl_sdar.config.reference                 # print the generated section
    python -m verl_sdar.config.reference --write         # update docs/configuration.md in place
    python -m verl_sdar.config.reference --write PATH    # ... or another file with the markers
    python -m verl_sdar.config.reference --check [PATH]  # exit 1 when PATH is out of date

``--write`` replaces only the text between ``<!-- BEGIN GENERATED -->`` and
``<!-- END GENERATED -->``; the hand-written prose around the markers is kept. (Redirecting stdout
onto the document itself would truncate the prose before it is read, so printing gives only the
generated section.)
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import re
import sys
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

BEGIN = "<!-- BEGIN GENERATED -->"
END = "<!-- END GENERATED -->"
DEFAULT_DOC = Path("docs") / "configuration.md"
ROOT_KEY = "sdar"

_ATTRIBUTES = re.compile(r"^(?P<indent>\s*)Attributes:\s*$")
_ENTRY = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)\s*(\([^)]*\))?\s*:(?P<text>.*)$")
_RST_LITERAL = re.compile(r"``(.+?)``")
_CONSTANT = re.compile(r"`([A-Z][A-Z0-9_]*)`")


class ReferenceError(ValueError):
    """The docstrings or the document do not have the shape the generator needs."""


@dataclass(frozen=True)
class Row:
    """One configuration key of the reference."""

    key: str  # dotted, e.g. ``sdar.privileged.key``
    type: str
    default: str  # already rendered (``null``, ``0.01``, ``"..."``); empty for a section
    description: str  # markdown; empty when the docstring has none
    section: type | None = None  # the dataclass, when this key holds a nested block


@dataclass(frozen=True)
class Section:
    """One dataclass of the tree: its key, summary prose and rows (one per field)."""

    key: str
    cls: type
    intro: str
    rows: tuple[Row, ...]


# --------------------------------------------------------------------------- docstrings


def _docstring(cls: type) -> str:
    doc = cls.__dict__.get("__doc__") or ""
    if dataclasses.is_dataclass(cls) and doc.startswith(f"{cls.__name__}("):
        return ""  # the signature dataclasses writes for a class without a docstring
    return inspect.cleandoc(doc)


def attribute_docs(cls: type) -> dict[str, str]:
    """``{field name: description}`` from the ``Attributes:`` section of ``cls``'s docstring.

    Continuation lines (indented deeper than the entry) are joined with single spaces; RST
    literals (double backticks) become markdown code spans.
    """
    lines = _docstring(cls).splitlines()
    start = next((i for i, line in enumerate(lines) if _ATTRIBUTES.match(line)), None)
    if start is None:
        return {}
    header_indent = len(_ATTRIBUTES.match(lines[start]).group("indent"))
    entries: dict[str, list[str]] = {}
    entry_indent: int | None = None
    current: str | None = None
    for line in lines[start + 1:]:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent <= header_indent:  # the next section (Note:, Example: ...) or the end
            break
        if entry_indent is None:
            entry_indent = indent
        match = _ENTRY.match(line.strip()) if indent == entry_indent else None
        if match:
            current = match.group("name")
            entries[current] = [match.group("text").strip()]
        elif current is not None and indent > entry_indent:
            entries[current].append(line.strip())
        else:
            raise ReferenceError(f"{cls.__qualname__}: cannot parse Attributes line {line.strip()!r}")
    return {name: _markdown(" ".join(part for part in parts if part)) for name, parts in entries.items()}


def class_intro(cls: type) -> str:
    """The docstring of ``cls`` before its ``Attributes:`` section, as markdown paragraphs.

    RST bullet items (``* ...`` / ``- ...``) become markdown list items; every other run of lines
    is joined into one paragraph.
    """
    lines = _docstring(cls).splitlines()
    end = next((i for i, line in enumerate(lines) if _ATTRIBUTES.match(line)), len(lines))
    blocks: list[str] = []
    current: list[str] = []
    for line in lines[:end] + [""]:
        stripped = line.strip()
        if not stripped or stripped[:2] in ("* ", "- "):
            if current:
                blocks.append(" ".join(current))
            current = [stripped[2:].strip()] if stripped else []
            if stripped:
                current[0] = "* " + current[0]
            continue
        current.append(stripped)
    paragraphs: list[str] = []
    for block in blocks:
        text = _markdown(block)
        if text.startswith("* ") and paragraphs and paragraphs[-1].startswith("* "):
            paragraphs[-1] += "\n" + text  # items of one list stay together
        else:
            paragraphs.append(text)
    return "\n\n".join(paragraphs)


def _markdown(text: str) -> str:
    text = re.sub(r"\s+", " ", text).strip()
    return _RST_LITERAL.sub(lambda m: f"`{m.group(1)}`", text)


def _expand_constants(text: str, cls: type) -> str:
    """``one of `OBJECTIVES``` -> ``one of `OBJECTIVES` (`none`, `sdar`, ...)``.

    Only for upper-case names of ``cls``'s module that hold a tuple/list/set of strings, so the
    rendered choices follow the code.
    """
    module = sys.modules.get(cls.__module__)

    def expand(match: re.Match) -> str:
        value = getattr(module, match.group(1), None)
        if isinstance(value, (tuple, list, frozenset, set)) and value and all(isinstance(v, str) for v in value):
            items = value if isinstance(value, (tuple, list)) else sorted(value)
            return f"{match.group(0)} ({', '.join(f'`{v}`' for v in items)})"
        return match.group(0)

    return _CONSTANT.sub(expand, text)


# --------------------------------------------------------------------------- types and defaults


def _type_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that cannot be resolved at run time: fall back to its text
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _strip_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or (hasattr(types, "UnionType") and origin is types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(args) < len(typing.get_args(tp)):
            return args[0], True
    return tp, False


def format_type(tp: Any) -> str:
    """A type as a reader of the YAML thinks of it: ``str``, ``int or null``, ``list[str]``."""
    if isinstance(tp, str):
        return tp
    inner, optional = _strip_optional(tp)
    if optional:
        return f"{format_type(inner)} or null"
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(json.dumps(a) if isinstance(a, str) else str(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and not typing.get_args(tp):
        return tp.__name__
    return str(tp).replace("typing.", "")


def format_value(value: Any) -> str:
    """A default value as it would be written on the command line / in YAML."""
    if value is dataclasses.MISSING:
        return "(required)"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        plain = value and value.strip() == value and re.fullmatch(r"[\w./:@+-]+( [\w./:@+-]+)*", value)
        return value if plain else json.dumps(value)
    if isinstance(value, (tuple, list, dict)):
        return json.dumps(value, default=str)
    return repr(value)


def _nested_dataclass(tp: Any, default: Any) -> type | None:
    inner, _ = _strip_optional(tp)
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        return inner
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return type(default)
    return None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def _defaults(cls: type, instance: Any = None) -> dict[str, Any]:
    """Default value of every init field: read from a default instance when one can be built (so a
    parent's ``default_factory`` that customises a nested block is honoured), else from the field."""
    if instance is None:
        try:
            instance = cls()
        except Exception:
            instance = None
    values = {}
    for f in dataclasses.fields(cls):
        values[f.name] = getattr(instance, f.name) if instance is not None else _field_default(f)
    return values


# --------------------------------------------------------------------------- the walk


def _root() -> type:
    from . import SDARConfig

    return SDARConfig


def walk(cls: type | None = None, prefix: str = ROOT_KEY, instance: Any = None) -> Iterator[Section]:
    """Depth-first over ``cls`` and every dataclass nested in it (field order), one ``Section`` each."""
    cls = cls or _root()
    hints = _type_hints(cls)
    docs = attribute_docs(cls)
    defaults = _defaults(cls, instance)
    rows: list[Row] = []
    nested: list[tuple[type, str, Any]] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue  # not settable from the config
        key = f"{prefix}.{f.name}"
        default = defaults[f.name]
        tp = hints.get(f.name, f.type)
        sub = _nested_dataclass(tp, default)
        description = _expand_constants(docs.get(f.name, ""), cls)
        if sub is not None:
            if not description:  # a block's own summary stands in for a missing entry
                description = class_intro(sub).split("\n\n")[0]
            rows.append(Row(key, format_type(tp), "" if default is not None else "null", description, sub))
            nested.append((sub, key, default if dataclasses.is_dataclass(default) else None))
        else:
            rows.append(Row(key, format_type(tp), format_value(default), description))
    yield Section(prefix, cls, _expand_constants(class_intro(cls), cls), tuple(rows))
    for sub, key, sub_default in nested:
        yield from walk(sub, key, sub_default)


def reference_rows(cls: type | None = None, prefix: str = ROOT_KEY) -> list[Row]:
    """Every key of the tree, blocks included, in document order."""
    return [row for section in walk(cls, prefix) for row in section.rows]


def missing_descriptions(cls: type | None = None, prefix: str = ROOT_KEY) -> list[str]:
    """Keys whose field has no entry in its class's ``Attributes:`` section (nested blocks
    count as described when their own class has a docstring summary)."""
    return [row.key for row in reference_rows(cls, prefix) if not row.description]


def stale_descriptions(cls: type | None = None, prefix: str = ROOT_KEY) -> list[str]:
    """``Attributes:`` entries that name no field (a renamed or removed field left behind)."""
    stale = []
    for section in walk(cls, prefix):
        names = {f.name for f in dataclasses.fields(section.cls)}
        stale += [f"{section.key}.{name}" for name in attribute_docs(section.cls) if name not in names]
    return stale


def _cell(text: str) -> str:
    return text.replace("|", r"\|").replace("\n", " ")


def render_table(rows: list[Row]) -> str:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for row in rows:
        default = f"`{_cell(row.default)}`" if row.default else "see below"
        lines.append(
            f"| `{row.key}` | `{_cell(row.type)}` | {default} | {_cell(row.description) or '**undocumented**'} |"
        )
    return "\n".join(lines)


def render_reference(cls: type | None = None, prefix: str = ROOT_KEY) -> str:
    """The generated part of docs/configuration.md (without the markers)."""
    parts = [
        "<!-- generated by `python -m verl_sdar.config.reference --write` from the dataclasses in "
        "verl_sdar/config/__init__.py: edit their docstrings, not this section -->"
    ]
    for section in walk(cls, prefix):
        parts.append(f"### `{section.key}` ({section.cls.__name__})")
        if section.intro:
            parts.append(section.intro)
        parts.append(render_table(list(section.rows)))
    return "\n\n".join(parts) + "\n"


# --------------------------------------------------------------------------- the document


def generated_block(text: str) -> str:
    """The text strictly between the markers of a document."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReferenceError(f"the document needs exactly one {BEGIN} followed by one {END}")
    return text.split(BEGIN, 1)[1].split(END, 1)[0]


def update_document(text: str, reference: str | None = None) -> str:
    """``text`` with the part between the markers replaced by the current reference."""
    generated_block(text)  # validates the markers
    before, rest = text.split(BEGIN, 1)
    _, after = rest.split(END, 1)
    reference = render_reference() if reference is None else reference
    return f"{before}{BEGIN}\n{reference}{END}{after}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m verl_sdar.config.reference", description=__doc__.split("\n\n")[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", nargs="?", const=str(DEFAULT_DOC), metavar="PATH",
                       help=f"replace the generated section of PATH (default {DEFAULT_DOC})")
    group.add_argument("--check", nargs="?", const=str(DEFAULT_DOC), metavar="PATH",
                       help=f"exit 1 when the generated section of PATH (default {DEFAULT_DOC}) is out of date")
    args = parser.parse_args(argv)
    missing, stale = missing_descriptions(), stale_descriptions()
    if missing:
        print(f"warning: no description in the Attributes sections for: {', '.join(missing)}", file=sys.stderr)
    if stale:
        print(f"warning: Attributes entries without a field: {', '.join(stale)}", file=sys.stderr)
    if args.write is None and args.check is None:
        sys.stdout.write(f"{BEGIN}\n{render_reference()}{END}\n")
        return 0
    path = Path(args.write or args.check)
    current = path.read_text(encoding="utf-8")
    updated = update_document(current)
    if args.check is not None:
        if updated != current:
            print(f"{path}: generated section is out of date; run python -m verl_sdar.config.reference --write {path}",
                  file=sys.stderr)
            return 1
        return 0
    if updated != current:
        path.write_text(updated, encoding="utf-8")
        print(f"updated {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
