"""The identity of one rollout request: its id and, under ``full_determinism``, its sampling seed.

Every verl-sdar agent loop names its requests here; no loop formats a request id by hand.

Why this exists (verl 0.9.1, read from its code):

* verl's V1 agent-loop worker (``verl.trainer.ppo.v1.agent_loop_tq``) starts the ``n`` sessions of
  a prompt with ``session_id=0..n-1`` and never sets ``priority`` (0 for every request); the
  legacy worker sets ``priority`` to the row's position in the repeated batch and no session id.
* verl's vLLM server, under ``actor_rollout_ref.rollout.full_determinism=true``, gives each
  request ``seed = rollout.seed + replica rank`` unless the request's sampling params name their
  own ``seed``. The ``n`` sessions of one prompt send the same prompt ids with the same seed and so
  draw the same tokens: every GRPO group is one episode copied ``n`` times, and its reward variance
  (the only gradient of an outcome reward) is zero.
* vLLM refuses a request whose id is already running (``Request id ... already running``); verl's
  own loops name requests ``det-{priority}``, the same id for every request on the V1 path.

So under ``full_determinism`` a request gets

* the id ``det-{uid}-{session}-{priority}-{turn}``: unique among running requests (``uid`` is
  verl's per-row uuid4, ``session`` one of the ``n`` rollouts of the row, ``turn`` one call of the
  session);
* its own seed, a hash of reproducible facts only -- the rollout seed, the weights version
  (``global_steps``), the dataset row (``index``), the session, ``priority``, the turn and the
  prompt ids -- never of ``uid``, which verl draws at random. Two
  runs with the same seeds therefore draw the same samples, the ``n`` sessions of a prompt ``n``
  different ones, and a resumed run what the uninterrupted one drew.

Without ``full_determinism`` the id is a fresh uuid4 and no seed is set (the server's own RNG).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

DETERMINISTIC_PREFIX = "det-"
"""Prefix of request ids under ``full_determinism`` (verl's loops use it too)."""

SEED_KEY = "seed"
"""The sampling-params key of a request's own seed (vLLM's ``SamplingParams.seed``)."""

_SEED_MASK = 0x7FFF_FFFF_FFFF_FFFF


@dataclass(frozen=True)
class RequestIdentity:
    """What a loop sends with one ``generate`` call besides the prompt."""

    request_id: str
    seed: int | None
    """The request's sampling seed (``None``: the server's own RNG)."""

    def sampling_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``params`` carrying this request's seed (unchanged without one)."""
        out = dict(params)
        if self.seed is not None:
            out[SEED_KEY] = self.seed
        return out


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def request_seed(*parts: Any, prompt_ids: Sequence[int] = ()) -> int:
    """A 63-bit seed: a hash of ``parts`` (their ``str``) and ``prompt_ids``."""
    digest = hashlib.blake2b(digest_size=8)
    digest.update("|".join(str(p) for p in parts).encode())
    digest.update(b"|")
    digest.update(b",".join(str(int(t)).encode() for t in prompt_ids))
    return int.from_bytes(digest.digest(), "little") & _SEED_MASK


def request_identity(rollout_config: Any, row: Mapping[str, Any], turn: int,
                     prompt_ids: Sequence[int]) -> RequestIdentity:
    """The identity of call ``turn`` of the session that ``row`` (the agent loop's keyword arguments:
    ``uid``, ``session_id``, ``priority``, ``index``, ``global_steps``) plays, for ``prompt_ids``.

    ``rollout_config`` is the rollout config (``full_determinism``, ``seed``). See the module docstring.
    """
    if not getattr(rollout_config, "full_determinism", False):
        return RequestIdentity(uuid4().hex, None)
    session = _int(row.get("session_id"))
    priority = _int(row.get("priority"))
    uid = row.get("uid")
    uid = uuid4().hex if uid is None else str(uid)
    seed = request_seed(_int(getattr(rollout_config, "seed", 0)), _int(row.get("global_steps"), -1),
                        _int(row.get("index")), session, priority, turn, prompt_ids=prompt_ids)
    return RequestIdentity(f"{DETERMINISTIC_PREFIX}{uid}-{session}-{priority}-{turn}", seed)
