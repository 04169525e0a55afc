"""The method registry: every entry has its algorithm YAML, a docs row and a recipe, and the loss,
trainer and config read it (no method names compared elsewhere)."""

import math
import re
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from verl_sdar.config import OBJECTIVES, SDARConfig
from verl_sdar.methods import METHODS, OBJECTIVES as OBJECTIVE_REGISTRY, Method, Objective, register_method

REPO = Path(__file__).resolve().parents[1]
METHOD_DOC = REPO / "docs" / "method.md"


def _flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_its_yaml_with_its_defaults(name):
    method = METHODS[name]
    with initialize_config_module("verl.trainer.config", version_base=None):
        cfg = compose("ppo_trainer", overrides=[f"algorithm={name}"])
    sdar = OmegaConf.to_container(cfg.sdar, resolve=True)
    assert sdar["objective"] == method.objective
    flat = _flat(sdar)
    for key, value in method.defaults.items():
        assert flat[key] == value, f"algorithm={name}: sdar.{key} is {flat[key]!r} in the YAML, {value!r} registered"
    SDARConfig.from_config(cfg)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_has_a_docs_row_and_a_recipe(name):
    rows = re.findall(r"^\| `([a-z_0-9]+)` \|", METHOD_DOC.read_text(), flags=re.MULTILINE)
    assert name in rows, f"docs/method.md has no table row for method `{name}`"
    # A recipe reproduces a row of the paper's tables, so only the paper's methods need one; our own
    # variants (``paper=False``, e.g. ``opsd_rkl``) are selected with ``algorithm=<name>`` on any recipe.
    if not METHODS[name].paper:
        return
    selects = re.compile(rf"^\s*- algorithm: {name}\s*$", re.M)
    recipes = [p for p in (REPO / "recipes").rglob("*.yaml") if selects.search(p.read_text())]
    assert recipes, f"no recipe selects algorithm: {name}"


def test_objective_names_come_from_the_registry():
    assert OBJECTIVES == tuple(OBJECTIVE_REGISTRY)
    for objective in OBJECTIVE_REGISTRY.values():
        assert isinstance(objective, Objective)
        # an objective that reads teacher log-probs must run the teacher pass
        fields = objective.loss_fields + objective.advantage_fields
        assert objective.needs_teacher == ("teacher_log_probs" in fields)


def test_entropy_gates_add_the_entropy_field():
    sdar = SDARConfig.from_dict({"objective": "sdar", "gate": "soft_or"})
    assert sdar.objective_spec.row_fields(sdar) == ("teacher_log_probs", "entropy")
    sdar = SDARConfig.from_dict({"objective": "skill_sd"})
    assert sdar.objective_spec.row_fields(sdar) == ("teacher_log_probs", "old_log_probs")
    assert not SDARConfig.from_dict({"objective": "rlsd"}).adds_loss_term
    assert not SDARConfig.from_dict({"objective": "none"}).needs_teacher


def test_opsd_is_the_papers_gated_term_with_zeroed_advantages_and_opsd_rkl_is_ours():
    from verl_sdar import methods

    opsd, rkl, sdar = (OBJECTIVE_REGISTRY[name] for name in ("opsd", "opsd_rkl", "sdar"))
    # the paper's OPSD: SDAR's gated term (same function, same gate settings) and no outcome term
    assert opsd.loss_term is sdar.loss_term and opsd.uses_gate and opsd.loss_fields == sdar.loss_fields
    assert opsd.transform_advantages is methods._zero_advantages and sdar.transform_advantages is None
    assert METHODS["opsd"].defaults == {"coef": 0.01, "beta": 5.0, "gate": "gap"} and METHODS["opsd"].paper
    # ours: reverse-KL score-function term, coef 1.0, also without the outcome term
    assert rkl.loss_term is methods._opsd_rkl_term and not rkl.uses_gate
    assert rkl.transform_advantages is methods._zero_advantages
    assert METHODS["opsd_rkl"].defaults == {"coef": 1.0} and not METHODS["opsd_rkl"].paper
    adv = torch.randn(2, 3)
    zero, _ = methods._zero_advantages(adv, {}, torch.ones(2, 3, dtype=torch.bool), None, 0)
    assert torch.equal(zero, torch.zeros(2, 3))


def test_zero_advantages_make_verls_policy_loss_exactly_zero():
    """pg coefficient 0 == A = 0 for verl's vanilla PPO loss: value and gradient exactly 0."""
    from verl.trainer.ppo.core_algos import get_policy_loss_fn

    log_prob = torch.tensor([[-1.0, -30.0, -0.5], [-2.0, -0.1, -50.0]], dtype=torch.float64, requires_grad=True)
    old = torch.tensor([[-1.5, -0.5, -0.5], [-0.2, -60.0, -1.0]], dtype=torch.float64)
    config = OmegaConf.create(dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.2, global_batch_info={}))
    for mode in ("token-mean", "seq-mean-token-mean"):
        loss, _ = get_policy_loss_fn("vanilla")(
            old_log_prob=old, log_prob=log_prob, advantages=torch.zeros_like(old),
            response_mask=torch.ones(2, 3, dtype=torch.bool), loss_agg_mode=mode, config=config,
        )
        (grad,) = torch.autograd.grad(loss, log_prob)
        assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


def test_the_gated_term_passes_the_divergence_through():
    from verl_sdar.objectives import sdar_loss

    student = torch.tensor([[-1.0, -2.0]], dtype=torch.float64)
    rows = {"teacher_log_probs": torch.tensor([[-0.5, -2.5]], dtype=torch.float64)}
    mask = torch.ones(1, 2, dtype=torch.bool)
    for objective in ("sdar", "opsd"):
        for divergence in ("reverse_kl", "jsd", "forward_kl"):
            sdar = SDARConfig.from_dict({"objective": objective, "divergence": divergence})
            term, _ = OBJECTIVE_REGISTRY[objective].loss_term(student, rows, mask, sdar, {})
            want, _ = sdar_loss(student, rows["teacher_log_probs"], mask, divergence=divergence)
            assert torch.equal(term, want), (objective, divergence)
    assert SDARConfig.from_dict({"objective": "sdar"}).divergence == "reverse_kl"


def test_registering_twice_or_with_an_unknown_objective_fails():
    with pytest.raises(ValueError, match="already registered"):
        register_method(Method("sdar", "sdar", "again"))
    with pytest.raises(ValueError, match="unknown objective"):
        register_method(Method("new", "nope", "x"))


def _term_gradient(sdar: SDARConfig, teacher: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The value and the student gradient of the loss term the actor adds (``actor_loss`` calls
    exactly this registered term)."""
    student = torch.tensor([[-1.0, -2.0, -0.3], [-0.7, -4.0, -1.2]], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True, True, True], [True, True, False]])
    rows = {"teacher_log_probs": teacher, "entropy": torch.ones_like(teacher)}
    term, _ = OBJECTIVE_REGISTRY[sdar.objective].loss_term(student, rows, mask, sdar, {"loss_agg_mode": "token-mean"})
    (grad,) = torch.autograd.grad(term, student)
    return term.item(), grad


def test_grpo_opsd_update_ignores_the_teacher_and_only_sdars_gate_lets_it_in():
    """With the gate and the teacher detached, the gated term's gradient is ``-coef * Agg(g_t * grad s_t)``.
    GRPO+OPSD's gate is the constant 0.5, so two different teachers (one the negation of a sensible
    one: every endorsement a rejection) give bit-identical gradients -- uniform self-imitation; a
    wrong teacher changes only the logged term. SDAR's gap gate makes the gradient teacher-dependent."""
    right = torch.tensor([[-0.5, -2.5, -0.1], [-0.9, -1.0, -3.0]], dtype=torch.float64)
    wrong = torch.tensor([[-3.0, -0.2, -6.0], [-0.1, -9.0, -0.5]], dtype=torch.float64)
    naive = SDARConfig.from_dict({"objective": "sdar", "beta": 0.0, "gate": "constant"})
    value_right, grad_right = _term_gradient(naive, right)
    value_wrong, grad_wrong = _term_gradient(naive, wrong)
    assert torch.equal(grad_right, grad_wrong) and value_right != value_wrong
    assert torch.allclose(grad_right[0], torch.full((3,), -0.5 / 5, dtype=torch.float64))  # -g/N, N = 5 tokens
    sdar = SDARConfig.from_dict({"objective": "sdar", "beta": 5.0, "gate": "gap"})
    assert not torch.allclose(_term_gradient(sdar, right)[1], _term_gradient(sdar, wrong)[1])


def test_logprob_grad_norm_is_the_norm_of_the_loss_gradient_and_keeps_the_graph():
    """The actor loss logs ``||d loss / d log_probs||`` for the PPO part and for ``coef * term``:
    on a nested (jagged) log-prob tensor as verl's model output holds it, the norm of the values'
    gradient (here 2 * the log-probs: the norm of twice the values), and verl's backward still runs."""
    from verl_sdar.loss import logprob_grad_norm

    a = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    b = torch.tensor([3.0, 1.0], requires_grad=True)
    log_probs = torch.nested.as_nested_tensor([a * 1, b * 1], layout=torch.jagged)
    loss = (log_probs.values() ** 2).sum()
    assert logprob_grad_norm(loss, log_probs) == pytest.approx(2 * math.sqrt(1 + 4 + 0.25 + 9 + 1))
    assert logprob_grad_norm(0.0 * log_probs.values().sum() + 1.0, log_probs) == 0.0
    loss.backward()  # the graph was kept
    assert a.grad.tolist() == [2.0, -4.0, 1.0]
    with torch.no_grad():
        assert logprob_grad_norm(torch.tensor(1.0), log_probs) is None
