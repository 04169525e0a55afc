"""The actor loss installed on verl's actor workers: verl's PPO loss + coef * SDAR objective term.

verl's registered policy losses only see fixed arguments, so the teacher log-probs could not reach
them. Instead the SDAR trainer replaces the actor's loss function through verl's ``set_loss_fn``
RPC with ``functools.partial(actor_loss, config=<ActorConfig>, sdar=<SDARConfig>)``. Inside, verl's
own ``ppo_loss`` computes the GRPO/PPO part (clip, KL to ref, entropy) unchanged; this module adds
the objective term, aggregated with the same mode and global normalisers as the PPO loss.

The relative size of the two parts is logged every micro-batch: ``sdar/pg_logprob_grad_norm`` and
``sdar/term_logprob_grad_norm``, the norms of the gradients of the PPO loss and of ``coef * term``
with respect to the student's token log-probs (the model output both depend on; two backward
passes through the loss only, not the model). Their ratio is how large the SDAR term's push is
beside the policy gradient's, before the model's Jacobian (issue #29's coefficient rule reads it).

Row fields used (all stored in TransferQueue by the trainer, response-aligned):
``teacher_log_probs`` (teacher pass), ``old_log_probs`` (verl), ``entropy`` (verl's old-policy
entropy, used by the entropy / soft-OR gates), ``response_mask``.
"""

from __future__ import annotations

from functools import partial

import torch
from tensordict import TensorDict
from verl.utils.metric import AggregationType, Metric
from verl.workers.utils.losses import ppo_loss
from verl.workers.utils.padding import no_padding_2_padding

from .config import SDARConfig
from .methods import objective_of

__all__ = ["actor_loss", "make_actor_loss"]


def _loss_metric_aggregation(data: TensorDict, config) -> AggregationType:
    """Same rule as verl's PPO loss: globally normalised losses are summed over micro-batches."""
    globally_normalised = (
        data["dp_size"] > 1
        or data["batch_num_tokens"] is not None
        or data["global_batch_size"] is not None
        or config.loss_scale_factor is not None
    )
    return AggregationType.SUM if globally_normalised else AggregationType.MEAN


def logprob_grad_norm(loss: torch.Tensor, log_probs: torch.Tensor) -> float | None:
    """``||d loss / d log_probs||`` (a nested ``log_probs``: over its values); ``None`` without a
    graph (no grad mode, or nothing requires grad). The graph is kept for verl's backward."""
    if not (torch.is_grad_enabled() and loss.requires_grad and log_probs.requires_grad):
        return None
    (grad,) = torch.autograd.grad(loss, log_probs, retain_graph=True, allow_unused=True)
    if grad is None:
        return 0.0
    return float((grad.values() if grad.is_nested else grad).detach().norm())


def actor_loss(config, model_output, data: TensorDict, dp_group=None, *, sdar: SDARConfig):
    """``ppo_loss(...) + sdar.coef * term``; the term is the objective's registered loss term
    (``verl_sdar.methods``); metrics under ``sdar/*`` (shown as ``actor/sdar/*``)."""
    policy_loss, metrics = ppo_loss(config, model_output, data, dp_group)
    objective = objective_of(sdar)
    if objective.loss_term is None:
        raise ValueError(f"objective {sdar.objective!r} adds no loss term; the trainer should not install this loss")

    student = no_padding_2_padding(model_output["log_probs"], data)
    needed = ["response_mask", *objective.row_fields(sdar)]
    missing = [k for k in needed if k not in data.keys()]
    if missing:
        raise KeyError(f"verl-sdar actor loss: row fields {missing} missing; did the teacher pass run?")
    padded = data.select(*needed).to_padded_tensor()
    mask = padded["response_mask"].bool()
    rows = {name: padded[name] for name in needed if name != "response_mask"}
    agg = dict(loss_agg_mode=config.loss_agg_mode, **config.global_batch_info)
    term, term_metrics = objective.loss_term(student, rows, mask, sdar, agg)

    norms = {"pg_logprob_grad_norm": logprob_grad_norm(policy_loss, model_output["log_probs"]),
             "term_logprob_grad_norm": logprob_grad_norm(sdar.coef * term, model_output["log_probs"])}
    policy_loss = policy_loss + sdar.coef * term
    loss_aggregation = _loss_metric_aggregation(data, config)
    for name, value in norms.items():
        if value is not None:
            metrics[f"sdar/{name}"] = Metric(value=value, aggregation=AggregationType.MEAN)
    for name, value in term_metrics.items():
        aggregation = loss_aggregation if name == "loss" else AggregationType.MEAN
        metrics[f"sdar/{name}"] = Metric(value=value, aggregation=aggregation)
    return policy_loss, metrics


def make_actor_loss(actor_config, sdar: SDARConfig):
    """The picklable loss function to send with ``worker_group.set_loss_fn``."""
    return partial(actor_loss, config=actor_config, sdar=sdar)
