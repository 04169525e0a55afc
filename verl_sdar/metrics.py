"""Metrics the SDAR trainer logs: teacher-pass gap/gate statistics, what the TransferQueue holds,
training episode outcomes, validation success per task type. Torch and tensordict only: no verl import.

Episodes: verl's V1 agent loops store each turn of an episode as its own row, keyed ``{uid}_{session}_{index}``
(``uid``: the prompt, i.e. the GRPO group; ``session``: one rollout of it; ``index``: the turn).
Episode metrics must count each episode once, not once per turn row: an agent that fails in 50
turns would otherwise weigh 50 times as much as one that wins in 5.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence

import torch
from tensordict import TensorDict

from .envs.contract import SUCCESS, TASK_TYPE, WON
from .objectives import compute_gate, gap_statistics, teacher_mask
from .teacher import TeacherRows

logger = logging.getLogger(__name__)


def row_position(key: str) -> tuple[str, str, int]:
    """``(group, session, turn index)`` of a row key ``uid_session_index``; a key of another form is
    its own group, session and turn 0."""
    parts = str(key).rsplit("_", 2)
    if len(parts) == 3 and parts[2].isdigit():
        return parts[0], f"{parts[0]}_{parts[1]}", int(parts[2])
    return str(key), str(key), 0


def session_of(key: str) -> str:
    """The episode a row key belongs to: ``uid_session`` of ``uid_session_index`` (else the key)."""
    return row_position(key)[1]


def first_row_per_episode(keys: Sequence[str]) -> list[int]:
    """Positions of one row per episode (the first seen), in batch order."""
    seen: set[str] = set()
    positions = []
    for position, key in enumerate(keys):
        session = session_of(key)
        if session not in seen:
            seen.add(session)
            positions.append(position)
    return positions


def rate_by_group(groups: Sequence[str | None], values: Sequence[float]) -> dict[str, tuple[float, int]]:
    """Mean value and count per group (``None`` groups are counted under ``"unknown"``).

    ``rate_by_group(["a", "b", "a"], [1, 0, 0]) == {"a": (0.5, 2), "b": (0.0, 1)}``
    """
    if len(groups) != len(values):
        raise ValueError(f"{len(groups)} groups for {len(values)} values")
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for group, value in zip(groups, values, strict=True):
        name = "unknown" if group is None else str(group)
        sums[name] += float(value)
        counts[name] += 1
    return {name: (sums[name] / counts[name], counts[name]) for name in sorted(sums)}


# ------------------------------------------------------------------------------ teacher pass
def _nested(rows: list[torch.Tensor]) -> torch.Tensor:
    return torch.nested.as_nested_tensor(rows, layout=torch.jagged)


def teacher_metrics(
    *,
    old_log_probs: list[torch.Tensor],
    teacher_log_probs: list[torch.Tensor],
    response_mask: list[torch.Tensor],
    entropy: list[torch.Tensor],
    texts: Sequence[str],
    built: TeacherRows,
    task_types: Sequence[str | None],
    real: Sequence[int],
    beta: float,
    gate: str,
    noisy: Sequence[bool | None] = (),
) -> dict[str, float]:
    """Gap / gate statistics at the pre-update policy over the real (non-padding) rows.

    Response tokens whose teacher log-prob is not finite are left out of the statistics and
    counted in ``sdar/teacher_nonfinite_tokens`` (the loss masks them out too).

    Inputs are per-row response-aligned tensors (one entry per batch row); ``texts`` the rows'
    privileged texts, ``built`` the teacher rows, ``task_types`` each row's task type (or None),
    ``noisy`` each row's noisy-condition flag (``extra_info.noisy``; None where a dataset has none):
    gate and gap per task type (``sdar/task_type/<type>/*``) and per condition (``sdar/noisy/<true|false>/*``).
    """
    if not real:
        return {}
    per_row = {"old": old_log_probs, "teacher": teacher_log_probs, "mask": response_mask, "entropy": entropy}
    padded = TensorDict(
        {name: _nested([values[i] for i in real]) for name, values in per_row.items()}, batch_size=len(real)
    ).to_padded_tensor()
    response = padded["mask"].bool()
    # tokens whose teacher log-prob is -inf/NaN are masked out of every teacher term (objectives)
    # and of these statistics; they are counted
    mask = teacher_mask(padded["teacher"], response)
    gap = torch.where(mask, padded["teacher"] - padded["old"], torch.zeros_like(padded["old"]))
    gate_values = compute_gate(gap, beta=beta, gate=gate, entropy=padded["entropy"])
    stats = gap_statistics(gap, gate_values, mask)
    metrics = {f"sdar/{k}": float(v) for k, v in stats.items()}
    metrics["sdar/teacher_nonfinite_tokens"] = float((response & ~mask).sum())
    with_text = [i for i in real if texts[i]]
    metrics["sdar/rows_with_privileged"] = len(with_text) / len(real)
    plain = torch.tensor([not texts[i] for i in real])
    if plain.any():
        # Self-check of the teacher pass: without privileged text the teacher sequence is the
        # student's, so this must be ~0 (float noise from different micro-batching only).
        metrics["sdar/plain_rows_gap_abs_max"] = float(gap[plain].abs().max())
    metrics["sdar/privileged_tokens_mean"] = sum(built.inserted_tokens[i] for i in real) / len(real)
    metrics["sdar/teacher_rows_truncated"] = sum(built.truncated[i] for i in real) / len(real)
    metrics["sdar/teacher_removed_tokens_mean"] = sum(built.removed_context_tokens[i] for i in real) / len(real)
    flags = [noisy[i] if i < len(noisy) else None for i in real]
    for prefix, groups in (("task_type", [task_types[i] for i in real]),
                           ("noisy", [None if f is None else str(bool(f)).lower() for f in flags])):
        for group in sorted({g for g in groups if g is not None}, key=str):
            rows_of_group = torch.tensor([g == group for g in groups])
            group_stats = gap_statistics(gap[rows_of_group], gate_values[rows_of_group], mask[rows_of_group])
            for key in ("gate_mean", "gate_active_ratio", "gap_mean"):
                metrics[f"sdar/{prefix}/{group}/{key}"] = float(group_stats[key])
    return metrics


# ------------------------------------------------------------------------------- episodes
def store_metrics(listing: dict[str, dict], teacher_partition: str) -> dict[str, float]:
    """From a TransferQueue listing (``transfer_queue.kv_list()``: partition -> key -> tags), after
    the teacher pass: ``sdar/teacher_partition_rows`` (rows left in ``teacher_partition``; 0, it is
    cleared every step) and ``sdar/tq_stored_rows`` (rows in all partitions: this step's batch;
    growth over steps would be a leak)."""
    return {"sdar/teacher_partition_rows": float(len(listing.get(teacher_partition, {}))),
            "sdar/tq_stored_rows": float(sum(len(keys) for keys in listing.values()))}


def episode_metrics(keys: Sequence[str], extra_fields: Sequence, real: Sequence[int]) -> dict[str, float]:
    """Training success rate, overall and per task type, counting each episode once.

    Agent loops that report an outcome put ``won`` (and ``task_type``) in every turn row's
    ``extra_fields``; rows without it (single-turn tasks) are skipped.
    """
    real_keys = [keys[i] for i in real]
    episodes = [real[j] for j in first_row_per_episode(real_keys)]
    episodes = [i for i in episodes if isinstance(extra_fields[i], dict) and WON in extra_fields[i]]
    if not episodes:
        return {}
    won = [float(bool(extra_fields[i][WON])) for i in episodes]
    metrics = {"episode/success_rate": sum(won) / len(won), "episode/episodes": float(len(won))}
    for task_type, (rate, count) in rate_by_group([extra_fields[i].get(TASK_TYPE) for i in episodes], won).items():
        metrics[f"episode/{task_type}/success_rate"] = rate
        metrics[f"episode/{task_type}/episodes"] = float(count)
    return metrics


def validation_metrics(data_sources: Sequence, reward_extra_infos: dict) -> dict[str, float]:
    """Success per source and task type (one value per final episode row), for verl's validation.

    Uses the reward function's ``success`` and ``task_type`` extra outputs when both are present
    (verl skips string-valued extras in its own statistics): ``val-core/<source>/episode_success``
    (all episodes of the source), ``val-core/<source>/success/<type>``,
    ``val-aux/<source>/episodes/<type>``, and ``val-aux/<source>/<name>/<type>`` for every other
    numeric extra (e.g. WebShop's ``webshop_score``).
    """
    metrics: dict[str, float] = {}
    success = reward_extra_infos.get(SUCCESS)
    task_types = reward_extra_infos.get(TASK_TYPE)
    if not success or not task_types or len(success) != len(data_sources):
        return metrics
    by_source: dict[str, list[int]] = {}
    for i, source in enumerate(data_sources):
        if success[i] is not None:
            by_source.setdefault(str(source), []).append(i)
    # other numeric per-episode values the reward returns (e.g. WebShop's Score) per type too
    numeric = [
        name for name, values in reward_extra_infos.items()
        if name not in (SUCCESS, "reward", TASK_TYPE) and len(values) == len(data_sources)
        and all(v is None or isinstance(v, (int, float)) for v in values)
    ]
    for source, idx in by_source.items():
        groups = [task_types[i] for i in idx]
        metrics[f"val-core/{source}/episode_success"] = sum(float(success[i]) for i in idx) / len(idx)
        for task_type, (rate, count) in rate_by_group(groups, [float(success[i]) for i in idx]).items():
            metrics[f"val-core/{source}/success/{task_type}"] = rate
            metrics[f"val-aux/{source}/episodes/{task_type}"] = float(count)
        for name in numeric:
            values = reward_extra_infos[name]
            kept = [i for i in idx if values[i] is not None]
            means = rate_by_group([task_types[i] for i in kept], [float(values[i]) for i in kept])
            for task_type, (mean, _) in means.items():
                metrics[f"val-aux/{source}/{name}/{task_type}"] = mean
    return metrics


# ------------------------------------------------------------------------------ GRPO groups
COLLAPSE_WARNING = (
    "verl-sdar step %s: the sessions of all %d groups are token-identical: GRPO's outcome reward gives no "
    "gradient. Likely cause: every session of a prompt got the same sampling seed (a request without its own "
    "seed under actor_rollout_ref.rollout.full_determinism, e.g. verl's single_turn_agent on vLLM; "
    "verl-sdar's loops name one per session), or greedy sampling (temperature 0) with rollout.n > 1."
)


def _token_tuple(ids) -> tuple[int, ...]:
    return tuple(ids.tolist() if isinstance(ids, torch.Tensor) else (int(t) for t in ids))


def group_metrics(keys: Sequence[str], responses: Sequence[Sequence[int]], scores: Sequence[float],
                  real: Sequence[int], step: int | None = None) -> dict[str, float]:
    """Per-step statistics of the GRPO groups over the real rows (``keys``: ``uid_session_index``;
    ``responses``: each row's response token ids; ``scores``: each row's summed reward, the
    environment's, before any invalid-action penalty). A session is the concatenation of its rows'
    responses in turn order, its outcome the score of its last row.

    * ``group/mixed_reward_share``: groups whose session outcomes are not all equal -- the only
      groups whose outcome reward gives GRPO a gradient;
    * ``group/identical_share``: groups of two or more sessions that are token-identical (the
      collapse that ``full_determinism`` once caused: one episode copied n times); when it is 1 a
      warning names the likely causes (:data:`COLLAPSE_WARNING`);
    * ``group/groups``, ``group/sessions_mean``.
    """
    sessions: dict[str, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    for i in real:
        group, session, turn = row_position(keys[i])
        sessions[group][session].append((turn, i))
    if not sessions:
        return {}
    mixed = identical = multi = 0
    for members in sessions.values():
        played = [sorted(rows) for rows in members.values()]
        outcomes = {float(scores[rows[-1][1]]) for rows in played}
        mixed += len(outcomes) > 1
        if len(played) > 1:
            multi += 1
            tokens = {tuple(_token_tuple(responses[i]) for _, i in rows) for rows in played}
            identical += len(tokens) == 1
    n = len(sessions)
    metrics = {"group/groups": float(n), "group/sessions_mean": sum(map(len, sessions.values())) / n,
               "group/mixed_reward_share": mixed / n, "group/identical_share": identical / multi if multi else 0.0}
    if multi and identical == multi:
        logger.warning(COLLAPSE_WARNING, step, multi)
    return metrics


def advantage_metrics(advantages: torch.Tensor, response_mask: torch.Tensor, real: Sequence[int]) -> dict[str, float]:
    """``group/nonzero_advantage_rows``: the share of real rows with a non-zero advantage on some
    response token (padded ``(rows, tokens)`` tensors). 0 means the step's policy gradient is zero."""
    if not real:
        return {}
    rows = torch.as_tensor(list(real), dtype=torch.long)
    nonzero = ((advantages[rows] != 0) & response_mask[rows].bool()).any(dim=-1)
    return {"group/nonzero_advantage_rows": float(nonzero.float().mean())}
