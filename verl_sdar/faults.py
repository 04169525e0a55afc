"""Env faults per training step, and the rule that stops a run that keeps training on them.

An episode is *faulted* when the env failed it: the agent loop writes the fault's kind on every
row of the episode (``extra_fields["error_kind"]``, one of
:data:`verl_sdar.envs.contract.ERROR_KINDS`: a reset or step that raised or timed out, which ends
the episode; for Search, a failed retrieval). Rows of loops that predate the field count as
faulted with kind ``error`` when they carry a non-empty ``episode_error`` / ``env_error``.

Per training step (:func:`count_faults`, :func:`fault_metrics`), over the real rows, each episode
counted once (not once per turn row):

* ``episode/env_error_rate``: faulted episodes / episodes;
* ``episode/env_errors/<kind>``: faulted episodes per kind (every known kind, 0 included).

Steps whose rows carry none of these fields (single-turn tasks) log nothing.

:class:`FaultMonitor` is the stop rule (``sdar.faults``): when the rate is above
``max_env_error_rate`` for ``patience_steps`` steps in a row it raises :class:`EnvFaultError`,
whose message names both settings and the recent rates. Steps without env episodes neither
extend nor break a streak. The streak is not checkpointed: a resumed run starts a new one. A step
whose faults left no trainable token at all (every episode failed at reset) stops the run at once,
whatever the settings: verl cannot train on an all-masked batch.

No verl import.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .envs.contract import ENV_ERROR, EPISODE_ERROR, ERROR_KIND, ERROR_KINDS
from .metrics import session_of

#: the kind of a fault whose row names none (an env error field without ``error_kind``)
UNKNOWN_KIND = "error"
_FIELDS = (ERROR_KIND, EPISODE_ERROR, ENV_ERROR)


def fault_kind(fields: dict) -> str:
    """The env fault recorded on one row: its kind, or ``""`` when none."""
    kind = fields.get(ERROR_KIND)
    if kind:
        return str(kind)
    if fields.get(EPISODE_ERROR) or fields.get(ENV_ERROR):
        return UNKNOWN_KIND
    return ""


@dataclass(frozen=True)
class FaultCounts:
    """Episodes of one step and their env faults."""

    episodes: int
    by_kind: dict[str, int] = field(default_factory=dict)

    @property
    def faulted(self) -> int:
        return sum(self.by_kind.values())

    @property
    def rate(self) -> float:
        return self.faulted / self.episodes if self.episodes else 0.0


def trainable_rows(response_masks: Sequence, real: Sequence[int]) -> int:
    """The real rows with at least one response token in the loss (``FaultMonitor.update``)."""
    return sum(bool(response_masks[i].any()) for i in real)


def count_faults(keys: Sequence[str], extra_fields: Sequence, real: Sequence[int]) -> FaultCounts | None:
    """Faulted episodes among the real rows (each episode once; its first faulted row names the
    kind). None when no real row carries a fault field (no env agent loop)."""
    episodes: dict[str, str] = {}
    for i in real:
        fields = extra_fields[i]
        if not isinstance(fields, dict) or not any(name in fields for name in _FIELDS):
            continue
        episode = session_of(keys[i])
        kind = fault_kind(fields)
        if not episodes.get(episode):
            episodes[episode] = kind
    if not episodes:
        return None
    return FaultCounts(episodes=len(episodes), by_kind=dict(Counter(k for k in episodes.values() if k)))


def fault_metrics(counts: FaultCounts | None) -> dict[str, float]:
    """``episode/env_error_rate`` and ``episode/env_errors/<kind>`` (every known kind, 0 included)."""
    if counts is None:
        return {}
    metrics = {"episode/env_error_rate": counts.rate}
    for kind in (*ERROR_KINDS, *sorted(set(counts.by_kind) - set(ERROR_KINDS))):
        metrics[f"episode/env_errors/{kind}"] = float(counts.by_kind.get(kind, 0))
    return metrics


class EnvFaultError(RuntimeError):
    """The env error rate stayed above ``sdar.faults.max_env_error_rate`` for too long."""


class FaultMonitor:
    """The stop rule of ``sdar.faults`` (see the module docstring).

    ``max_rate`` None or >= 1, or ``patience`` None or 0: disabled (:meth:`update` never raises).
    """

    def __init__(self, max_rate: float | None, patience: int | None):
        self.max_rate = max_rate
        self.patience = patience
        self.enabled = max_rate is not None and max_rate < 1.0 and patience is not None and patience > 0
        self.streak: list[tuple[int, FaultCounts]] = []  # the current run of steps above the rate

    def update(self, step: int, counts: FaultCounts | None, trainable_rows: int | None = None) -> None:
        """Record one training step's counts; raise :class:`EnvFaultError` when the rule trips.

        ``trainable_rows``: the step's real rows with at least one response token in the loss. A
        step whose env faults left none (every episode failed before generating: a reset error)
        cannot be trained on at all (verl's advantage step rejects an all-masked batch), so it
        stops the run at once, whatever the settings, with a message saying so.
        """
        if counts is not None and counts.faulted and trainable_rows == 0:
            raise EnvFaultError(self.nothing_to_train(step, counts))
        if counts is None or not self.enabled:
            return
        if counts.rate > self.max_rate:
            self.streak.append((step, counts))
        else:
            self.streak.clear()
        if len(self.streak) >= self.patience:
            raise EnvFaultError(self.message())

    @staticmethod
    def nothing_to_train(step: int, counts: FaultCounts) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.by_kind.items()))
        return (
            f"verl-sdar: stopping the run: at step {step} every episode failed in the env before producing a "
            f"trainable token (episode/env_error_rate {counts.rate:.2f}, {counts.faulted}/{counts.episodes} "
            f"episodes; faults by kind: {kinds}), so there is nothing to train on, whatever "
            "sdar.faults.max_env_error_rate says. See the agent-loop warnings and the rows' env_error for the "
            "cause (e.g. game files that cannot be loaded)."
        )

    def message(self) -> str:
        steps = ", ".join(f"step {s}: {c.rate:.2f} ({c.faulted}/{c.episodes})" for s, c in self.streak)
        last = self.streak[-1][1].by_kind if self.streak else {}
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(last.items())) or "none"
        return (
            f"verl-sdar: stopping the run: episode/env_error_rate stayed above "
            f"sdar.faults.max_env_error_rate={self.max_rate} for sdar.faults.patience_steps={self.patience} "
            f"training steps in a row ({steps}; faults by kind at the last step: {kinds}). Training on these "
            "episodes would learn from env failures: see the agent-loop warnings and the rows' env_error for the "
            "cause, fix the environment or the data, or set sdar.faults.max_env_error_rate=1.0 to train on."
        )
