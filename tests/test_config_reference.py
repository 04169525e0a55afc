"""Configuration in one place: the algorithm groups are a shared base plus per-method deltas, and the
``sdar.*`` reference in docs/configuration.md is generated from the settings dataclasses.

Composes with real Hydra and real verl (no Ray, no ``main_ppo``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir, initialize_config_module
from omegaconf import OmegaConf

from verl_sdar.config import SDARConfig
from verl_sdar.config import reference as ref

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "verl_sdar" / "config"
DOC = REPO / "docs" / "configuration.md"
VALIDATE = "verl_sdar_validate"

# Each method's own `sdar.*` values: the whole content of verl_sdar/config/algorithm/<method>.yaml.
DELTAS = {
    "grpo": dict(objective="none"),
    "sdar": dict(objective="sdar", coef=0.01, beta=5.0, gate="gap"),
    "grpo_opsd": dict(objective="sdar", coef=0.01, beta=0.0, gate="constant"),
    "opsd": dict(objective="opsd", coef=0.01, beta=5.0, gate="gap"),
    "opsd_rkl": dict(objective="opsd_rkl", coef=1.0),
    "rlsd": dict(objective="rlsd", rlsd=dict(mix=0.5, clip_eps=0.2, decay_steps=100)),
    "skill_sd": dict(objective="skill_sd", coef=0.001),
    "skill_grpo": dict(objective="none", student_prompt=True, student_skills="per_turn"),
}
# What algorithm_base/teacher.yaml adds for every method with a teacher pass (all but grpo) and skill_grpo.
TEACHER_BLOCK = dict(
    privileged=dict(source="column", key="privileged", role="system", placement="start", format="chat_turn"),
    skills=dict(library=None, strategy="task_type"),
    teacher=dict(source="self", max_prompt_length=None,
                 model=dict(path=None, n_gpus_per_node=1, nnodes=1, inference={})),
)
BASE = {method: "common" if method == "grpo" else "teacher" for method in DELTAS}
# The only settings outside `sdar` a method sets: the paper's OPSD keeps an entropy bonus.
OUTSIDE_SDAR = {"opsd": {"actor_rollout_ref": {"actor": {"entropy_coeff": 0.001}}}}


def _outside_sdar(job: dict) -> dict:
    return {k: v for k, v in job.items() if k != "sdar"}


def _with_own_outside_keys(job: dict, method: str) -> dict:
    """``job`` (outside ``sdar``) with the keys ``method`` sets outside ``sdar`` applied on top."""
    return OmegaConf.to_container(OmegaConf.merge(_outside_sdar(job), OUTSIDE_SDAR.get(method, {})))


# --------------------------------------------------------------------------- composition


def _split(cfg) -> tuple[dict, dict]:
    raw = OmegaConf.to_container(cfg, resolve=False)
    return raw, raw.pop("hydra")


@cache
def plain(method: str) -> tuple[dict, dict]:
    """(job config, hydra node) of verl's ppo_trainer + ``algorithm=<method>``."""
    with initialize_config_module("verl.trainer.config", version_base=None):
        return _split(compose("ppo_trainer", overrides=[f"algorithm={method}"], return_hydra_config=True))


def recipes_selecting_an_algorithm() -> list[tuple[Path, str]]:
    found = []
    for path in sorted((REPO / "recipes").rglob("*.yaml")):
        for entry in OmegaConf.to_container(OmegaConf.load(path)).get("defaults") or []:
            if isinstance(entry, dict) and "algorithm" in entry:
                found.append((path, entry["algorithm"]))
    return found


RECIPES = recipes_selecting_an_algorithm()


def compose_recipe(path: Path, *overrides: str) -> tuple[dict, dict]:
    with initialize_config_dir(config_dir=str(path.parent), version_base=None):
        return _split(compose(path.stem, overrides=list(overrides), return_hydra_config=True))


# --------------------------------------------------------------------------- base + deltas


def test_the_group_holds_exactly_the_methods_each_a_delta_on_a_base():
    assert {p.stem for p in (CONFIG / "algorithm").glob("*.yaml")} == set(DELTAS)
    for method, delta in DELTAS.items():
        path = CONFIG / "algorithm" / f"{method}.yaml"
        assert path.read_text().startswith("# @package _global_\n"), path
        raw = OmegaConf.to_container(OmegaConf.load(path))
        assert raw.pop("defaults") == [f"/algorithm_base/{BASE[method]}", "_self_"], path
        assert raw == {"sdar": delta, **OUTSIDE_SDAR.get(method, {})}, f"{path.name} should hold only its own values"


def test_the_bases_are_not_choices_of_the_group():
    from hydra.core.global_hydra import GlobalHydra

    with initialize_config_module("verl.trainer.config", version_base=None):
        options = GlobalHydra.instance().config_loader().get_group_options("algorithm")
    assert set(DELTAS) <= set(options)
    assert not {"common", "teacher"} & set(options)


@pytest.mark.parametrize("method", sorted(DELTAS))
def test_each_method_composes_to_the_shared_settings_plus_its_own(method):
    job, hydra = plain(method)
    shared_sdar = {k: v for k, v in plain("grpo")[0]["sdar"].items() if k != "objective"}
    assert not set(shared_sdar) & (set(TEACHER_BLOCK) | {k for d in DELTAS.values() for k in d})
    expected = {**shared_sdar, **(TEACHER_BLOCK if BASE[method] == "teacher" else {}), **DELTAS[method]}
    assert job["sdar"] == expected
    # outside `sdar`, every method composes to the same config (but for its OUTSIDE_SDAR keys)
    assert _outside_sdar(job) == _with_own_outside_keys(plain("grpo")[0], method)
    assert hydra["callbacks"][VALIDATE] == {"_target_": "verl_sdar.config.ValidateOnJobStart"}
    assert job["trainer"]["v1"]["trainer_mode"] == "sdar"
    assert job["algorithm"]["adv_estimator"] == "grpo"
    actor = job["actor_rollout_ref"]["actor"]
    assert (actor["clip_ratio"], actor["use_kl_loss"], actor["kl_loss_coef"], actor["kl_loss_type"]) == (
        0.2, True, 0.01, "low_var_kl")


def test_the_cli_override_of_one_shared_key_applies_to_a_method():
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=["algorithm=opsd", "sdar.privileged.key=hint"])
    assert (cfg.sdar.objective, cfg.sdar.coef, cfg.sdar.privileged.key) == ("opsd", 0.01, "hint")


def test_recipes_are_found():
    names = {p.relative_to(REPO / "recipes").as_posix() for p, _ in RECIPES}
    assert "cpu/codeword_sdar.yaml" in names and "alfworld/sdar.yaml" in names and len(names) >= 10


@pytest.mark.parametrize("path, method", RECIPES, ids=[p.relative_to(REPO / "recipes").as_posix() for p, _ in RECIPES])
def test_recipes_keep_the_method_values_and_merge_their_callbacks_with_the_validator(path, method):
    job, hydra = compose_recipe(path)
    sdar = job["sdar"]
    for key, value in DELTAS[method].items():
        assert sdar[key] == value, f"sdar.{key}"
    own = OmegaConf.to_container(OmegaConf.load(path)).get("hydra", {}).get("callbacks", {})
    # Hydra merges the `callbacks` mapping of the group and of the recipe: both sets stay registered
    assert set(hydra["callbacks"]) >= {VALIDATE, *own}


def test_switching_the_method_of_a_recipe_changes_only_sdar():
    path = REPO / "recipes" / "cpu" / "codeword_sdar.yaml"
    base, base_hydra = compose_recipe(path, "algorithm=grpo")
    for method in DELTAS:
        job, hydra = compose_recipe(path, f"algorithm={method}")
        assert _outside_sdar(job) == _with_own_outside_keys(base, method)
        assert hydra["callbacks"] == base_hydra["callbacks"]
        assert {k: job["sdar"][k] for k in DELTAS[method]} == DELTAS[method]


# --------------------------------------------------------------------------- generated reference


def test_every_settings_field_has_a_description():
    """(a) a field without an entry in its class's ``Attributes:`` docstring section fails here."""
    missing = ref.missing_descriptions()
    assert not missing, f"add these to the Attributes: section of their dataclass: {missing}"
    stale = ref.stale_descriptions()
    assert not stale, f"these Attributes: entries name no field (renamed or removed?): {stale}"


def test_docs_configuration_md_is_generated_from_the_current_dataclasses():
    """(b) a new or changed field without regenerating the document fails here."""
    text = DOC.read_text(encoding="utf-8")
    assert ref.update_document(text) == text, (
        "docs/configuration.md is out of date: run python -m verl_sdar.config.reference --write"
    )


def test_the_reference_covers_every_field_of_every_nested_block():
    keys = {row.key for row in ref.reference_rows()}

    def expected(cls, prefix):
        for f in dataclasses.fields(cls):
            yield f"{prefix}.{f.name}"
            default = getattr(cls(), f.name)
            if dataclasses.is_dataclass(default):
                yield from expected(type(default), f"{prefix}.{f.name}")

    assert keys == set(expected(SDARConfig, "sdar"))


@pytest.mark.parametrize("method", sorted(DELTAS))
def test_every_sdar_key_a_method_sets_is_documented(method):
    documented = {row.key for row in ref.reference_rows()}

    def leaves(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}.{key}")
            else:
                yield f"{prefix}.{key}"

    assert set(leaves(plain(method)[0]["sdar"], "sdar")) <= documented


@dataclass(frozen=True)
class _Inner:
    """Inner block: ``x = y`` here.

    Attributes:
        source: where it comes from,
            continued here | with a pipe.
    """

    source: str = "column"
    budget: int | None = None


@dataclass(frozen=True)
class _Outer:
    """Outer settings.

    * ``a``: first item
      continued.
    * ``b``: second item.

    Attributes:
        method: the method (renamed from objective).
        inner (block): the inner block.
        objective: left behind by the rename.
    """

    method: str = "sdar"
    inner: _Inner = field(default_factory=lambda: _Inner(source="custom"))
    header: str = "Knowledge:\n"
    flag: bool = False


def test_the_generator_picks_up_new_fields_and_blocks_and_reports_missing_descriptions():
    rows = {row.key: row for row in ref.reference_rows(_Outer, "x")}
    assert list(rows) == ["x.method", "x.inner", "x.header", "x.flag", "x.inner.source", "x.inner.budget"]
    assert ref.missing_descriptions(_Outer, "x") == ["x.header", "x.flag", "x.inner.budget"]
    assert ref.stale_descriptions(_Outer, "x") == ["x.objective"]
    assert rows["x.inner.source"].default == "custom"  # the parent's default_factory wins
    assert rows["x.inner.source"].description == "where it comes from, continued here | with a pipe."
    assert (rows["x.inner.budget"].type, rows["x.inner.budget"].default) == ("int or null", "null")
    assert (rows["x.header"].default, rows["x.flag"].default) == ('"Knowledge:\\n"', "false")
    text = ref.render_reference(_Outer, "x")
    assert "### `x.inner` (_Inner)\n\nInner block: `x = y` here." in text
    assert "* `a`: first item continued.\n* `b`: second item." in text
    assert "| `x.inner.source` | `str` | `custom` | where it comes from, continued here \\| with a pipe. |" in text
    assert "| `x.flag` | `bool` | `false` | **undocumented** |" in text


def test_write_replaces_only_the_generated_section(tmp_path, capsys):
    doc = tmp_path / "configuration.md"
    doc.write_text(f"# prose\n\nkept\n\n{ref.BEGIN}\nstale\n{ref.END}\n\n## more prose\n")
    assert ref.main(["--check", str(doc)]) == 1
    assert ref.main(["--write", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("# prose\n\nkept\n\n") and text.endswith(f"{ref.END}\n\n## more prose\n")
    assert ref.generated_block(text) == "\n" + ref.render_reference()
    assert ref.main(["--check", str(doc)]) == 0
    assert ref.main([]) == 0 and ref.render_reference() in capsys.readouterr().out
    doc.write_text("no markers\n")
    with pytest.raises(ref.ReferenceError):
        ref.main(["--write", str(doc)])
