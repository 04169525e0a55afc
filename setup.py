"""verl-sdar: Self-Distilled Agentic Reinforcement Learning as a plugin for upstream verl."""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

VERL_VERSION = "0.9.1"
HERE = Path(__file__).resolve().parent

# Shipped data kept at the repository's top level (outside the package folder): the Hydra recipes
# (recipes/<env>/, with group folders such as policy/) and the skill libraries (envs/<name>/skills/).
# The wheel carries them as data subpackages of verl_sdar, found by verl_sdar/resources.py (which
# also finds the top-level folders of a checkout, e.g. under an editable install):
#   recipes/<env>/...          -> verl_sdar/recipes/<env>/...
#   envs/<name>/skills/...     -> verl_sdar/skill_libraries/<name>/...
RECIPE_PACKAGES = {"verl_sdar.recipes": "recipes"}
SKILL_PACKAGES = {
    f"verl_sdar.skill_libraries.{folder.parent.name}": folder.relative_to(HERE).as_posix()
    for folder in sorted(HERE.glob("envs/*/skills"))
    if folder.is_dir()
}


def _with_subfolders(mapping: dict[str, str]) -> dict[str, str]:
    """Each data package and every subfolder of it as a package of its own (package -> folder)."""
    out = {}
    for package, folder in mapping.items():
        out[package] = folder
        for sub in sorted(p for p in (HERE / folder).rglob("*") if p.is_dir() and not p.name.startswith((".", "_"))):
            rel = sub.relative_to(HERE / folder)
            out[".".join((package, *rel.parts))] = (Path(folder) / rel).as_posix()
    return out


RECIPE_DIRS = _with_subfolders(RECIPE_PACKAGES)
SKILL_DIRS = _with_subfolders(SKILL_PACKAGES)


class BuildPyWithRecipePackages(build_py):
    """``build_py`` that also writes an empty ``__init__.py`` into every recipe folder of the build:
    Hydra's ``pkg://`` config source (``--config-path=pkg://verl_sdar.recipes.alfworld``) only takes
    a folder that has one. The checkout's recipes/ stays YAML only; the skill libraries get none
    (a stray file in a library is an error)."""

    def run(self):
        super().run()
        if self.editable_mode:
            return
        for package in RECIPE_DIRS:
            init = Path(self.build_lib, *package.split("."), "__init__.py")
            init.parent.mkdir(parents=True, exist_ok=True)
            init.write_text('"""verl-sdar\'s shipped Hydra recipes (data only; see verl_sdar.resources)."""\n')

    def get_outputs(self, include_bytecode=True):
        inits = [str(Path(self.build_lib, *p.split("."), "__init__.py")) for p in RECIPE_DIRS]
        return list(super().get_outputs(include_bytecode)) + [i for i in inits if not self.editable_mode]


setup(
    name="verl-sdar",
    version="0.1.0",
    description="SDAR (gated on-policy self-distillation on top of GRPO) as a plugin for verl",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["verl_sdar", "verl_sdar.*"])
    + ["hydra_plugins.verl_sdar_searchpath"]
    + list(RECIPE_DIRS)
    + list(SKILL_DIRS),
    package_dir={**RECIPE_DIRS, **SKILL_DIRS},
    package_data={
        "verl_sdar": ["config/**/*.yaml", "config/*.yaml", "envs/*.yaml", "envs/*/*.yaml"],
        **{package: ["*.yaml"] for package in RECIPE_DIRS},
        **{package: ["*"] for package in SKILL_DIRS},
    },
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithRecipePackages},
    install_requires=[
        # The CPU path and the trainer subclass touch a few verl internals: pinned exactly.
        f"verl=={VERL_VERSION}",
        # What verl's V1 trainer needs at run time but verl's base install lacks.
        "TransferQueue==0.1.11",
        "cachetools",
        "fastapi",
        "uvicorn",
        "ray>=2.40",
        "transformers>=4.51",
        "tokenizers",
        "omegaconf>=2.3",
        "hydra-core>=1.3",
        "pandas",
        "pyarrow",
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff", "hypothesis"],
        "alfworld": ["alfworld==0.4.2"],
        # offline Search-QA: BM25 in process; the corpus is built from countryinfo's data (pinned:
        # the generated set must not change under us)
        "search": ["bm25s>=0.3,<0.4", "countryinfo==1.0.1"],
        "webshop": ["bm25s>=0.3,<0.4"],
        # plots of benchmarks/curves.py --report
        "bench": ["matplotlib>=3.8,<4"],
        # GPU only; never installed in CI. Exactly what verl 0.9.1's own `vllm` extra pins (verl's
        # vLLM server uses vLLM internals: another vLLM fails at start-up). tests/test_packaging.py
        # reads verl's installed metadata and fails when these and verl's disagree. Install torch
        # 2.11.0 (a CUDA build) with it. Untested here: no GPU in this project's CI.
        "vllm": [
            f"verl[vllm]=={VERL_VERSION}",
            "vllm==0.24.0",
            "torch==2.11.0",
            "torchvision==0.26.0",
            "torchaudio==2.11.0",
            "transformers==5.9.0",
        ],
    },
    entry_points={
        # `import verl` loads this in the driver and in every Ray worker.
        "verl.plugins": ["verl_sdar = verl_sdar.plugin"],
    },
)
