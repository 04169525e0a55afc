"""pip install without a checkout: the wheel carries every recipe and every skill library.

The wheel is built from a copy of the sources (``pip wheel --no-deps --no-build-isolation``, offline,
nothing written into the checkout) and installed with ``pip install --no-deps --target``. The checks
run in fresh interpreters that see the installed copy and the venv's other packages but not the
checkout: ``python -S`` (no ``.pth`` files, so not the editable install's path entry either) with
``PYTHONPATH=<target>:<venv site-packages>``, from an empty working folder. One interpreter composes
every recipe with Hydra's compose API (every GPU recipe with every policy), validates it with
``SDARConfig`` (which loads its skill library by name) and loads every shipped library by name;
two more run verl's own ``main_ppo --cfg job`` with the documented ``--config-path`` forms.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from verl_sdar import resources
from verl_sdar.skills import SkillLibrary

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("setup.py", "pyproject.toml", "README.md", "verl_sdar", "hydra_plugins", "recipes")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")

# Runs in the installed copy: prints one JSON report on its last line.
COMPOSE_ALL = r"""
import json, sys
from pathlib import Path

site, repo = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
for entry in sys.path:  # (the venv may live inside the checkout: only the root would expose its folders)
    assert Path(entry or ".").resolve() != repo, f"the checkout is on sys.path: {sys.path}"

import yaml
from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf

import verl_sdar
from verl_sdar import resources
from verl_sdar.config import SDARConfig
from verl_sdar.skills import SkillLibrary

def inside(path):
    return Path(path).resolve().is_relative_to(site)

report = {"package": verl_sdar.__file__, "recipes": [], "libraries": {}, "pkg_equal": {}}
assert inside(verl_sdar.__file__)
for name in resources.skill_library_names():
    lib = SkillLibrary.load(f"builtin:{name}")
    assert inside(lib.root), lib.root
    report["libraries"][name] = {"general": [s.skill_id for s in lib.general],
                                 "task_types": {t: s.skill_id for t, s in lib.task_skills.items()}}

def resolved(recipe, overrides=()):
    cfg = compose(recipe, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    return cfg

for env in resources.recipe_envs():
    folder = resources.recipes_dir(env)
    assert inside(folder), folder
    policies = sorted(p.stem for p in (folder / "policy").glob("*.yaml"))
    first = resources.recipe_names(env)[0]
    with initialize_config_dir(config_dir=str(folder), version_base=None):
        for recipe in resources.recipe_names(env):
            defaults = yaml.safe_load((folder / f"{recipe}.yaml").read_text())["defaults"]
            grouped = any(isinstance(d, dict) and "policy" in d for d in defaults)
            for policy in policies if grouped else [None]:
                cfg = resolved(recipe, [f"policy={policy}"] if policy else [])
                sdar = SDARConfig.from_config(cfg)  # loads the skill library (by name) when one is used
                library = sdar.skills.library if sdar is not None else None
                report["recipes"].append({"env": env, "recipe": recipe, "policy": policy, "library": library,
                                          "experiment": cfg.trainer.experiment_name})
        by_folder = OmegaConf.to_container(resolved(first))
    # Hydra's package form of --config-path (the wheel's recipe folders are packages)
    with initialize_config_module(config_module=f"verl_sdar.recipes.{env}", version_base=None):
        report["pkg_equal"][env] = OmegaConf.to_container(resolved(first)) == by_folder
print(json.dumps(report))
"""


def _site_packages() -> list[str]:
    paths = sysconfig.get_paths()
    return list(dict.fromkeys([paths["purelib"], paths["platlib"]]))


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources and installed into a temporary target folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=IGNORE)
        else:
            shutil.copy2(path, src / name)
    for skills in REPO.glob("envs/*/skills"):  # the skill libraries, not the generated data beside them
        shutil.copytree(skills, src / skills.relative_to(REPO), ignore=IGNORE)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INDEX": "1"}
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(root / "dist"), str(src)],
                   check=True, env=env, cwd=root)
    (wheel,) = (root / "dist").glob("verl_sdar-*.whl")
    target = root / "site"
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
                   check=True, env=env, cwd=root)
    return target


def _run(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -S <args>`` with the installed copy first on the path and the checkout nowhere."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join([str(target), *_site_packages()])
    cwd.mkdir(exist_ok=True)
    result = subprocess.run([sys.executable, "-S", *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=900)
    shown = " ".join(a if len(a) < 200 else "<script>" for a in args)
    assert result.returncode == 0, (
        f"{shown}: exit {result.returncode}\n{result.stdout[-4000:]}\n{result.stderr[-8000:]}")
    return result


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.glob(pattern) if p.is_file()}


def test_the_wheel_ships_every_recipe_and_skill_library_byte_for_byte(installed):
    package = installed / "verl_sdar"
    assert _files(package / "recipes", "**/*.yaml") == _files(REPO / "recipes", "**/*.yaml")
    for skills in sorted(REPO.glob("envs/*/skills")):
        name = skills.parent.name
        assert _files(package / "skill_libraries" / name, "**/*") == _files(skills, "**/*"), name
    # the recipe folders are packages (Hydra's pkg:// source needs an __init__.py), the libraries are not
    assert (package / "recipes" / "alfworld" / "policy" / "__init__.py").is_file()
    assert not list((package / "skill_libraries").rglob("*.py"))


def test_every_recipe_composes_and_every_library_loads_by_name_from_the_installed_wheel(installed, tmp_path):
    result = _run(installed, tmp_path / "cwd", "-c", COMPOSE_ALL, str(installed), str(REPO))
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert Path(report["package"]).resolve().is_relative_to(installed.resolve())

    # the same libraries as the checkout's, with the same skills
    assert sorted(report["libraries"]) == resources.skill_library_names() == ["alfworld", "codeword", "search",
                                                                               "webshop"]
    for name, shipped in report["libraries"].items():
        lib = SkillLibrary.load(REPO / "envs" / name / "skills")
        assert shipped == {"general": [s.skill_id for s in lib.general],
                           "task_types": {t: s.skill_id for t, s in lib.task_skills.items()}}

    # every recipe of the checkout, the GPU ones with every policy: 7 methods x 3 envs x 3 policies,
    # plus ALFWorld's SDAR with a separate 7B teacher (sdar_teacher_7b) x 3 policies
    composed = {(r["env"], r["recipe"]) for r in report["recipes"]}
    assert composed == {(env, recipe) for env in resources.recipe_envs() for recipe in resources.recipe_names(env)}
    gpu = [r for r in report["recipes"] if r["policy"] is not None]
    assert len(gpu) == 63 + 3 and len(report["recipes"]) == 63 + 3 + 3 + 2  # + cpu/codeword_sdar, cpu/vault_sdar
    for r in gpu:  # the teacher's (and Skill-GRPO's) library is the env's shipped one, by name
        assert r["library"] == f"builtin:{r['env']}", r
        assert r["experiment"] == f"{r['env']}_{r['recipe']}_{r['policy']}"
    assert report["pkg_equal"] == {env: True for env in resources.recipe_envs()}


def test_main_ppo_runs_a_recipe_by_folder_and_by_package_without_a_checkout(installed, tmp_path):
    cwd = tmp_path / "cwd"
    folder = _run(installed, cwd, "-m", "verl_sdar.resources", "recipes", "alfworld").stdout.strip()
    assert Path(folder).resolve() == (installed / "verl_sdar" / "recipes" / "alfworld").resolve()
    skills = _run(installed, cwd, "-m", "verl_sdar.resources", "skills", "builtin:webshop").stdout.strip()
    assert Path(skills).resolve() == (installed / "verl_sdar" / "skill_libraries" / "webshop").resolve()

    for config_path, name in ((folder, "sdar"), ("pkg://verl_sdar.recipes.webshop", "skill_sd")):
        out = _run(installed, cwd, "-m", "verl.trainer.main_ppo", f"--config-path={config_path}",
                   f"--config-name={name}", "policy=qwen3_1.7b", "--cfg", "job").stdout
        env = "alfworld" if name == "sdar" else "webshop"
        assert f"library: builtin:{env}" in out and f"experiment_name: {env}_{name}_" in out, out[-3000:]
