"""docs/fidelity.md is the one source of truth for the GPU recipes' settings: this test reads its table
and fails when a composed GPU recipe (7 methods x 3 envs x 3 policies) disagrees with a row.

The table's machine-read columns (format described at the top of docs/fidelity.md):

* ``config key (scope)``: `` `dotted.key` `` or `` `a.b * c.d` `` (a product), optionally followed by
  ``(method or policy names, ...)``; ``—`` for a design choice without a config key (not checked).
* ``ours``: one code span holding a YAML value: a scalar for every recipe of the scope, or a flow
  mapping by env or by policy naming all of them. ``null`` means unset (absent or null).

``sdar.*`` keys are read from the typed ``SDARConfig`` (so its defaults count), the rest from the
composed, resolved config. Composition reuses ``tests/test_recipes.py``'s helper; no main_ppo, no Ray.
The per-recipe check itself runs in tests/test_recipes.py, beside the recipes' own check, so that
every recipe is composed once.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass

import pytest
import yaml
from omegaconf import OmegaConf
from test_recipes import ALGORITHMS, ENVS, POLICIES, REPO, composed_gpu_recipe

from verl_sdar.config import SDARConfig

DOC = REPO / "docs" / "fidelity.md"
MARKER = "<!-- fidelity-table: read by tests/test_fidelity.py -->"
HEADER = ("setting", "config key (scope)", "paper", "reference code", "ours", "note")
NO_KEY = "—"
ABSENT = object()  # a key the composed config does not have

_KEY_CELL = re.compile(r"^`(?P<expr>[^`]+)`(?:\s*\((?P<scope>[^)]*)\))?$")
_CODE_CELL = re.compile(r"^`(?P<value>[^`]*)`$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_0-9][A-Za-z0-9_.]*)*$")


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Row:
    line: int
    setting: str
    keys: tuple[str, ...]  # empty: no config key (a design choice in words)
    methods: frozenset[str]  # empty: every method
    policies: frozenset[str]  # empty: every policy
    expected: object  # a scalar, or a dict by env or by policy

    def applies(self, method: str, policy: str) -> bool:
        return (not self.methods or method in self.methods) and (not self.policies or policy in self.policies)

    def expected_for(self, env: str, policy: str):
        if not isinstance(self.expected, dict):
            return self.expected
        return self.expected[env] if set(self.expected) == set(ENVS) else self.expected[policy]

    @property
    def label(self) -> str:
        return f"docs/fidelity.md:{self.line} ({self.setting})"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def parse_table(text: str) -> list[Row]:
    """The rows of the table that follows ``MARKER``; a malformed row raises ValueError naming its line."""
    lines = text.splitlines()
    if lines.count(MARKER) != 1:
        raise ValueError(f"docs/fidelity.md must hold the marker {MARKER!r} exactly once")
    start = lines.index(MARKER) + 1
    if tuple(_cells(lines[start])) != HEADER:
        raise ValueError(f"docs/fidelity.md:{start + 1}: the table header must be {' | '.join(HEADER)}")
    rows = []
    for number, line in enumerate(lines[start + 2 :], start=start + 3):
        if not line.startswith("|"):
            break
        rows.append(_parse_row(number, _cells(line)))
    return rows


def _parse_row(number: int, cells: list[str]) -> Row:
    where = f"docs/fidelity.md:{number}"
    if len(cells) != len(HEADER):
        raise ValueError(f"{where}: {len(cells)} cells, expected {len(HEADER)} (a '|' inside a cell?)")
    setting, key_cell, _paper, _reference, ours, _note = cells
    if not setting:
        raise ValueError(f"{where}: empty setting")
    if key_cell == NO_KEY:
        if not ours:
            raise ValueError(f"{where}: a design choice without a key still says what we do in 'ours'")
        return Row(number, setting, (), frozenset(), frozenset(), None)
    match = _KEY_CELL.match(key_cell)
    if not match:
        raise ValueError(f"{where}: config key cell {key_cell!r} is neither `key` [(scope)] nor {NO_KEY}")
    keys = tuple(part.strip() for part in match["expr"].split("*"))
    if not all(_DOTTED.match(key) for key in keys):
        raise ValueError(f"{where}: {match['expr']!r} is not a dotted key or a product of dotted keys")
    scope = {name.strip() for name in (match["scope"] or "").split(",") if name.strip()}
    unknown = scope - set(ALGORITHMS) - set(POLICIES)
    if unknown:
        raise ValueError(f"{where}: unknown scope {sorted(unknown)}; methods {ALGORITHMS}, policies {tuple(POLICIES)}")
    code = _CODE_CELL.match(ours)
    if not code:
        raise ValueError(f"{where}: 'ours' of a keyed row must be exactly one code span, got {ours!r}")
    expected = yaml.safe_load(code["value"])
    if isinstance(expected, dict):
        names = set(expected)
        if names != set(ENVS) and names != set(POLICIES):
            raise ValueError(f"{where}: a mapping in 'ours' names every env {tuple(ENVS)} or every policy "
                             f"{tuple(POLICIES)}, got {sorted(names)}")
    elif isinstance(expected, list):
        raise ValueError(f"{where}: 'ours' holds a scalar or a mapping, not a list")
    return Row(number, setting, keys, frozenset(scope & set(ALGORITHMS)), frozenset(scope & set(POLICIES)),
               expected)


def table() -> list[Row]:
    return parse_table(DOC.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- recipes


def composed(env: str, method: str, policy: str):
    """(resolved config, SDARConfig) of a GPU recipe (composed once per process by tests/test_recipes.py)."""
    cfg = composed_gpu_recipe(env, method, policy)
    return cfg, SDARConfig.from_config(cfg)


def lookup(cfg, sdar: SDARConfig, key: str):
    """The value at ``key``: ``sdar.*`` from the typed settings, the rest from the composed config."""
    if key.startswith("sdar."):
        node = sdar
        for part in key.split(".")[1:]:
            if not hasattr(node, part):
                return ABSENT
            node = getattr(node, part)
        return node
    return OmegaConf.select(cfg, key, default=ABSENT)


def actual_value(cfg, sdar: SDARConfig, keys: tuple[str, ...]):
    values = [lookup(cfg, sdar, key) for key in keys]
    if len(values) == 1 or any(v is ABSENT for v in values):
        return values[0] if len(values) == 1 else ABSENT
    product = 1
    for value in values:
        product *= value
    return product


def same(expected, actual) -> bool:
    if expected is None:
        return actual is None or actual is ABSENT
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, int | float):
        return isinstance(actual, int | float) and math.isclose(expected, actual, rel_tol=1e-12, abs_tol=1e-15)
    return isinstance(actual, str) and expected == actual


def mismatches(rows: list[Row], env: str, method: str, policy: str, cfg, sdar: SDARConfig) -> list[str]:
    out = []
    for row in rows:
        if not row.keys or not row.applies(method, policy):
            continue
        expected = row.expected_for(env, policy)
        actual = actual_value(cfg, sdar, row.keys)
        if not same(expected, actual):
            shown = "<absent>" if actual is ABSENT else repr(actual)
            out.append(f"{row.label}: `{' * '.join(row.keys)}` is {expected!r} in the table, {shown} in "
                       f"recipes/{env}/{method}.yaml policy={policy}")
    return out


# --------------------------------------------------------------------------- tests


# The check of every GPU recipe against this table is tests/test_recipes.py's
# test_every_gpu_recipe_agrees_with_the_fidelity_table (it shares that file's compositions).


# The values the table must show (the issue's list); the test above ties them to the recipes.
MUST_SHOW = [  # (key expression, scope: (method, policy), {env: value})
    ("actor_rollout_ref.actor.ppo_mini_batch_size * actor_rollout_ref.rollout.n", None,
     {"alfworld": 256, "webshop": 64, "search": 256}),
    ("actor_rollout_ref.actor.ppo_epochs", None, {"alfworld": 1, "webshop": 1, "search": 1}),
    ("actor_rollout_ref.actor.kl_loss_coef", None, {"alfworld": 0.01, "webshop": 0.01, "search": 0.001}),
    ("actor_rollout_ref.actor.optim.lr_warmup_steps_ratio", None, {"search": 0.1}),
    ("actor_rollout_ref.actor.entropy_coeff", None, {"alfworld": 0.001, "webshop": 0.001, "search": 0.001}),
    ("data.max_response_length", None, {"search": 512}),
    ("env.turn_rows", None, {"search": True}),
    ("algorithm.adv_estimator", None, {"alfworld": "turn_row_grpo", "webshop": "turn_row_grpo",
                                       "search": "turn_row_grpo"}),
    ("data.val_max_samples", None, {"alfworld": 128, "webshop": 128, "search": None}),  # Search: the whole test set
    ("trainer.test_freq", None, {"alfworld": 5, "webshop": 5, "search": 150}),
    ("trainer.val_before_train", None, {"alfworld": True, "webshop": True, "search": False}),
    ("sdar.skills.strategy", None, {"alfworld": "task_type", "webshop": "keyword_substring", "search": "task_type"}),
    ("env.action_rules", None, {"search": "reference"}),
    ("env.penalise_inadmissible", None, {"webshop": False}),
    ("reward.custom_reward_function.name", None, {"alfworld": "compute_score", "webshop": "compute_score",
                                                  "search": "compute_score"}),
    ("actor_rollout_ref.rollout.val_kwargs.temperature", None, {"alfworld": 0.4, "webshop": 0.4}),
    ("actor_rollout_ref.rollout.val_kwargs.do_sample", None, {"alfworld": True, "webshop": True}),
    ("data.apply_chat_template_kwargs.enable_thinking", ("sdar", "qwen3_1.7b"),
     {"alfworld": False, "webshop": False, "search": False}),
    ("sdar.objective", ("opsd", "qwen2.5_3b"), {"alfworld": "opsd", "webshop": "opsd", "search": "opsd"}),
    ("sdar.coef", ("opsd", "qwen2.5_3b"), {"alfworld": 0.01, "webshop": 0.01, "search": 0.01}),
    ("sdar.beta", ("opsd", "qwen2.5_3b"), {"alfworld": 5.0, "webshop": 5.0, "search": 5.0}),
]


@pytest.mark.parametrize("expr,scope,values", MUST_SHOW, ids=[m[0] for m in MUST_SHOW])
def test_the_table_shows_the_values_that_matter(expr, scope, values):
    method, policy = scope or ("sdar", "qwen2.5_3b")
    keys = tuple(part.strip() for part in expr.split("*"))
    for env, value in values.items():
        rows = [r for r in table() if r.keys == keys and r.applies(method, policy)]
        assert len(rows) == 1, f"docs/fidelity.md needs exactly one row for `{expr}` applying to {method}/{policy}"
        assert same(rows[0].expected_for(env, policy), value), f"{rows[0].label}: {env} should be {value!r}"


def test_the_table_covers_every_setting_of_the_issue():
    rows = table()
    keyed = {" * ".join(r.keys) for r in rows if r.keys}
    for key in ("actor_rollout_ref.actor.optim.lr", "actor_rollout_ref.actor.kl_loss_type",
                "actor_rollout_ref.actor.clip_ratio_low", "actor_rollout_ref.actor.clip_ratio_high",
                "actor_rollout_ref.rollout.n", "data.train_batch_size", "data.max_prompt_length",
                "env.max_steps", "env.history_length", "env.invalid_action_penalty_coef",
                "trainer.total_training_steps", "sdar.coef", "sdar.beta", "sdar.gate", "sdar.rlsd.mix",
                "sdar.rlsd.clip_eps", "sdar.rlsd.decay_steps", "sdar.skills.strategy", "sdar.privileged.role",
                "actor_rollout_ref.model.path"):
        assert key in keyed, f"docs/fidelity.md has no row for `{key}`"
    settings = {r.setting for r in rows}
    for setting in ("teacher input format", "teacher model", "Skill-SD clamps", "OPSD policy-gradient coefficient",
                    "Skill-GRPO", "Qwen3 thinking mode", "advantage estimator", "batch padding", "WebShop environment",
                    "prompt templates", "over-long prompts", "the paper's numbers and the teacher's skills",
                    "loss aggregation", "Qwen3-1.7B batch", "ALFWorld validation split"):
        assert setting in settings, f"docs/fidelity.md has no row {setting!r}"
    methods = set().union(*(r.methods for r in rows))
    assert methods >= set(ALGORITHMS) - {"grpo", "skill_grpo"}  # every distillation method has its own rows


def test_every_method_and_policy_has_its_recipe_files():
    for env in ENVS:
        for policy in POLICIES:
            assert (REPO / "recipes" / env / "policy" / f"{policy}.yaml").is_file()
        for method in ALGORITHMS:
            path = REPO / "recipes" / env / f"{method}.yaml"
            defaults = OmegaConf.to_container(OmegaConf.load(path))["defaults"]
            # the recipe named after a method selects that method's group (opsd.yaml -> algorithm: opsd)
            assert {"algorithm": method} in defaults and {"policy": "qwen2.5_3b"} in defaults, path


def test_a_disagreement_between_table_and_recipe_fails():
    rows = table()
    cfg, sdar = composed("search", "sdar", "qwen2.5_3b")
    assert not mismatches(rows, "search", "sdar", "qwen2.5_3b", cfg, sdar)
    # the recipe drifts
    drifted = copy.deepcopy(cfg)
    OmegaConf.update(drifted, "actor_rollout_ref.actor.kl_loss_coef", 0.01)
    OmegaConf.update(drifted, "actor_rollout_ref.actor.ppo_mini_batch_size", 256)
    found = "\n".join(mismatches(rows, "search", "sdar", "qwen2.5_3b", drifted, sdar))
    assert "kl_loss_coef` is 0.001 in the table, 0.01" in found
    assert "ppo_mini_batch_size * actor_rollout_ref.rollout.n` is 256 in the table, 2048" in found
    # the table drifts
    text = DOC.read_text(encoding="utf-8").replace("`{alfworld: 0.01, webshop: 0.01, search: 0.001}`",
                                                   "`{alfworld: 0.01, webshop: 0.01, search: 0.01}`")
    found = mismatches(parse_table(text), "search", "sdar", "qwen2.5_3b", cfg, sdar)
    assert len(found) == 1 and "kl_loss_coef" in found[0]


@pytest.mark.parametrize("row,error", [
    ("| lr | `a.b` | | | 1.0e-6 | |", "exactly one code span"),
    ("| lr | `a.b` (nope) | | | `1` | |", "unknown scope"),
    ("| lr | `a.b` | | | `{alfworld: 1, search: 2}` | |", "every env"),
    ("| lr | a.b | | | `1` | |", "neither"),
    ("| lr | `a.b` | | `x` | |", "cells"),
])
def test_a_malformed_row_is_rejected_naming_its_line(row, error):
    text = f"{MARKER}\n| {' | '.join(HEADER)} |\n|---|---|---|---|---|---|\n{row}\n"
    with pytest.raises(ValueError, match=error):
        parse_table(text)

