"""Where verl-sdar's shipped data lives: the Hydra recipes and the skill libraries.

The repository keeps them at its top level, outside the package: ``recipes/<env>/`` (the recipe
YAMLs, with group folders such as ``recipes/alfworld/policy/``) and ``envs/<name>/skills/`` (the
skill libraries). ``setup.py`` maps them into the wheel as data subpackages, so the same files are
found in two layouts:

* **installed wheel** (``pip install verl-sdar``): ``verl_sdar/recipes/<env>/`` and
  ``verl_sdar/skill_libraries/<name>/`` inside the installed package (the recipe folders also
  get an empty ``__init__.py``, so Hydra's ``--config-path=pkg://verl_sdar.recipes.<env>`` works);
* **checkout** (an editable install, or the repo root on ``sys.path``): the top-level folders next
  to the ``verl_sdar`` package folder.

The packaged copy wins when both exist. Nothing here reads an environment variable or the working
directory: the same name finds the same files from any folder, in any process of a Ray cluster
(each node resolves it against its own installation).

Skill libraries are named in ``sdar.skills.library`` as ``builtin:<name>`` (``builtin:alfworld``,
``builtin:codeword``, ``builtin:search``, ``builtin:webshop``); anything else is a folder path.
:func:`resolve_skill_library` turns either into a folder (``verl_sdar.skills.SkillLibrary.load``
calls it).

Command line (prints a folder, or lists what is shipped)::

    python -m verl_sdar.resources recipes alfworld      # the folder of the ALFWorld recipes
    python -m verl_sdar.resources skills alfworld       # the folder of the ALFWorld skill library
    python -m verl_sdar.resources list                  # every recipe and skill library
    python -m verl.trainer.main_ppo --config-path=$(python -m verl_sdar.resources recipes alfworld) \\
        --config-name=sdar
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = [
    "BUILTIN_PREFIX",
    "ResourceNotFoundError",
    "recipe_envs",
    "recipe_names",
    "recipes_dir",
    "resolve_skill_library",
    "skill_library_dir",
    "skill_library_names",
]

BUILTIN_PREFIX = "builtin:"
"""Prefix of a shipped skill library's name in ``sdar.skills.library`` (``builtin:alfworld``)."""

_PACKAGE = Path(__file__).resolve().parent
# in a wheel: data subpackages of verl_sdar (setup.py maps the top-level folders there)
_PACKAGED_RECIPES = _PACKAGE / "recipes"
_PACKAGED_SKILLS = _PACKAGE / "skill_libraries"
# in a checkout: the repository root, next to the package folder
_CHECKOUT = _PACKAGE.parent


class ResourceNotFoundError(LookupError):
    """An unknown recipe folder or skill library name; the message lists the available names."""


def _checkout_dir(*parts: str) -> Path | None:
    """``<repo root>/<parts>`` when the package runs from a checkout of verl-sdar, else None (an
    installed package's parent is site-packages, whose folders are not ours)."""
    if not (_CHECKOUT / "setup.py").is_file():
        return None
    path = _CHECKOUT.joinpath(*parts)
    return path if path.is_dir() else None


def _subfolders(folder: Path | None) -> list[str]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _recipes_root() -> Path:
    if _PACKAGED_RECIPES.is_dir():
        return _PACKAGED_RECIPES
    checkout = _checkout_dir("recipes")
    if checkout is not None:
        return checkout
    raise ResourceNotFoundError(
        f"verl-sdar's recipes are missing: neither {_PACKAGED_RECIPES} (an installed wheel) nor "
        f"{_CHECKOUT / 'recipes'} (a checkout) exists; reinstall verl-sdar"
    )


def _check_name(name: str, kind: str) -> None:
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ResourceNotFoundError(f"{kind} name {name!r} must be a plain name (no path separators)")


def recipe_envs() -> list[str]:
    """Names of the shipped recipe folders (``alfworld``, ``cpu``, ``search``, ``webshop``)."""
    return _subfolders(_recipes_root())


def recipes_dir(env: str | None = None) -> Path:
    """The folder of the shipped recipes (``env=None``) or of one env's recipes: give it to
    ``main_ppo --config-path=`` (or Hydra's ``initialize_config_dir``). Raises
    ``ResourceNotFoundError`` listing the available folders for an unknown ``env``."""
    root = _recipes_root()
    if env is None:
        return root
    _check_name(env, "recipe folder")
    folder = root / env
    if not folder.is_dir() or env.startswith((".", "_")):
        raise ResourceNotFoundError(
            f"no shipped recipe folder {env!r}; available: {', '.join(recipe_envs()) or '(none)'}"
        )
    return folder


def recipe_names(env: str) -> list[str]:
    """The recipes (``--config-name`` values) of one recipe folder: its top-level YAML files that
    have a ``defaults`` list. Shared files (``gpu_common.yaml``) and group folders (``policy/``)
    are not recipes."""
    import yaml

    names = []
    for path in sorted(recipes_dir(env).glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if isinstance(raw, dict) and "defaults" in raw:
            names.append(path.stem)
    return names


def skill_library_names() -> list[str]:
    """Names of the shipped skill libraries (``alfworld``, ``codeword``, ``search``, ``webshop``)."""
    if _PACKAGED_SKILLS.is_dir():
        return _subfolders(_PACKAGED_SKILLS)
    envs = _checkout_dir("envs")
    return [name for name in _subfolders(envs) if (envs / name / "skills").is_dir()]


def skill_library_dir(name: str) -> Path:
    """The folder of the shipped skill library ``name`` (without the ``builtin:`` prefix). Raises
    ``ResourceNotFoundError`` listing the shipped names for an unknown one."""
    _check_name(name, "skill library")
    if _PACKAGED_SKILLS.is_dir():
        folder = _PACKAGED_SKILLS / name
    else:
        envs = _checkout_dir("envs")
        folder = envs / name / "skills" if envs is not None else None
    if folder is None or not folder.is_dir() or name.startswith((".", "_")):
        shipped = ", ".join(f"{BUILTIN_PREFIX}{n}" for n in skill_library_names()) or "(none)"
        raise ResourceNotFoundError(
            f"unknown shipped skill library {BUILTIN_PREFIX}{name}; shipped: {shipped} (or give a folder path)"
        )
    return folder


def resolve_skill_library(spec: str | os.PathLike[str]) -> Path:
    """The folder of a skill library given as ``builtin:<name>`` (a shipped one, found in this
    process's installation) or as a folder path (returned as is, not checked)."""
    if isinstance(spec, str) and spec.startswith(BUILTIN_PREFIX):
        return skill_library_dir(spec[len(BUILTIN_PREFIX):])
    return Path(spec)


# ----------------------------------------------------------------------------- command line
def _list() -> str:
    lines = [f"recipes: {recipes_dir()}"]
    for env in recipe_envs():
        lines.append(f"  {env}: {', '.join(recipe_names(env))}")
    lines.append("skill libraries (sdar.skills.library=builtin:<name>):")
    lines += [f"  {BUILTIN_PREFIX}{name}: {skill_library_dir(name)}" for name in skill_library_names()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m verl_sdar.resources",
        description="Print where verl-sdar's shipped recipes and skill libraries are, e.g. "
        "python -m verl.trainer.main_ppo --config-path=$(python -m verl_sdar.resources recipes alfworld) "
        "--config-name=sdar",
    )
    sub = parser.add_subparsers(dest="what", required=True)
    recipes = sub.add_parser("recipes", help="print the folder of the recipes (of one env)")
    recipes.add_argument("env", nargs="?", help="recipe folder: alfworld, cpu, search, webshop")
    skills = sub.add_parser("skills", help="print the folder of a shipped skill library")
    skills.add_argument("name", help="library name, with or without 'builtin:' (alfworld, codeword, ...)")
    sub.add_parser("list", help="list the recipe folders with their recipes, and the skill libraries")
    args = parser.parse_args(argv)
    try:
        if args.what == "recipes":
            print(recipes_dir(args.env))
        elif args.what == "skills":
            name = args.name[len(BUILTIN_PREFIX):] if args.name.startswith(BUILTIN_PREFIX) else args.name
            print(skill_library_dir(name))
        else:
            print(_list())
    except ResourceNotFoundError as err:
        print(f"verl_sdar.resources: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
