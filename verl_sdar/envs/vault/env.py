"""The vault task: a short text game built for credit assignment (the experiment of docs/experiment_plan.md).

An episode, for a task with ``F`` forks:

1. The hall: three keys of different colours lie on a table; a note names the key that opens the
   vault. Actions: ``take the <colour> key``. **The early decision**: the key. A wrong key is
   noticed only at the vault, ``F + 1`` turns later.
2. Forks ``1..F``: ``go left`` or ``go right``. Each fork is of one of three kinds, and its
   observation says which kind it is (one place to read each decision):

   * ``sign``: a sign points the way;
   * ``note``: no sign, and the note (carried in hand) gives this fork's way;
   * ``hidden``: no sign and nothing in the note: the way is not in anything the agent observes.

   The wrong way is a dead end: the episode ends, lost.
3. The vault door: ``open the vault``; won iff the key held is the note's.

Any other text changes nothing (``info["valid_action"] = False``) and costs a turn. A policy that
reads its observations wins every task without a hidden fork in ``F + 2`` turns and half of the
others (a task has at most one hidden fork); the route (:func:`route_text`, the privileged text:
the key and the hidden fork's way) makes it win every task (:func:`expert_actions`). So the route
carries what the student lacks (the hidden fork) and what it may not yet read well (the key), and
another task's route, the noisy condition (:mod:`verl_sdar.envs.vault.dataset`), can mislead.

Pure Python, no dependencies; tasks are JSON-serialisable dicts (:class:`VaultTask`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

COLOURS = ("red", "blue", "green", "yellow", "white", "black")
KEYS_PER_TASK = 3
DIRECTIONS = ("left", "right")
OPEN = "open the vault"
SIGN, NOTE, HIDDEN = "sign", "note", "hidden"


def take(colour: str) -> str:
    return f"take the {colour} key"


def go(direction: str) -> str:
    return f"go {direction}"


@dataclass(frozen=True)
class VaultTask:
    """One task: the keys on the table, the key that opens the vault, the right way at each fork,
    which forks have a sign and which the note covers (default: every fork without a sign)."""

    task_id: str
    keys: tuple[str, ...]
    key: str
    ways: tuple[str, ...]
    signs: tuple[bool, ...]
    noted: tuple[bool, ...] = ()

    def __post_init__(self):
        if not self.noted:
            object.__setattr__(self, "noted", tuple(not s for s in self.signs))
        if self.key not in self.keys or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"vault task {self.task_id}: key {self.key!r} must be one of distinct keys {self.keys}")
        if not self.ways or not len(self.ways) == len(self.signs) == len(self.noted):
            raise ValueError(f"vault task {self.task_id}: one way, one sign flag and one note flag per fork, "
                             "at least one fork")
        if any(w not in DIRECTIONS for w in self.ways):
            raise ValueError(f"vault task {self.task_id}: ways must be in {DIRECTIONS}, got {self.ways}")
        if any(s and n for s, n in zip(self.signs, self.noted, strict=True)):
            raise ValueError(f"vault task {self.task_id}: the note covers only forks without a sign")
        if len(self.hidden) > 1:
            raise ValueError(f"vault task {self.task_id}: at most one hidden fork (no sign, not in the note)")

    def kind(self, fork: int) -> str:
        """``sign``, ``note`` or ``hidden`` for fork index ``fork`` (0-based)."""
        return SIGN if self.signs[fork] else NOTE if self.noted[fork] else HIDDEN

    @property
    def hidden(self) -> tuple[int, ...]:
        """The index of the hidden fork, if any (0-based)."""
        return tuple(i for i in range(self.forks) if self.kind(i) == HIDDEN)

    @property
    def forks(self) -> int:
        return len(self.ways)

    @property
    def signature(self) -> tuple:
        """What makes two tasks the same game (everything but the id)."""
        return self.keys, self.key, self.ways, self.signs, self.noted

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> VaultTask:
        return cls(task_id=str(d["task_id"]), keys=tuple(d["keys"]), key=str(d["key"]),
                   ways=tuple(d["ways"]), signs=tuple(bool(s) for s in d["signs"]),
                   noted=tuple(bool(n) for n in d.get("noted", ())))


def generate_tasks(n: int, forks: int, seed: int, sign_share: float = 0.5, prefix: str = "t",
                   hidden_share: float = 0.0) -> list[VaultTask]:
    """``n`` distinct tasks with ``forks`` forks each, drawn by ``random.Random(seed)``; each fork has
    a sign with probability ``sign_share``, every task has at least one fork without one, and with
    probability ``hidden_share`` one fork without a sign (drawn) is hidden: the note leaves it out."""
    if forks < 1 or n < 1:
        raise ValueError(f"need n >= 1 and forks >= 1, got n={n}, forks={forks}")
    if not 0.0 <= hidden_share <= 1.0:
        raise ValueError(f"hidden_share must be in [0, 1], got {hidden_share}")
    rng = random.Random(seed)
    tasks, seen = [], set()
    for _ in range(100 * n):
        if len(tasks) == n:
            break
        keys = tuple(rng.sample(COLOURS, KEYS_PER_TASK))
        key = rng.choice(keys)
        ways = tuple(rng.choice(DIRECTIONS) for _ in range(forks))
        signs = [rng.random() < sign_share for _ in range(forks)]
        if all(signs):
            signs[rng.randrange(forks)] = False
        noted = [not s for s in signs]
        if hidden_share and rng.random() < hidden_share:
            noted[rng.choice([i for i, s in enumerate(signs) if not s])] = False
        task = VaultTask(f"{prefix}{len(tasks)}", keys, key, ways, tuple(signs), tuple(noted))
        if task.signature in seen:
            continue
        seen.add(task.signature)
        tasks.append(task)
    if len(tasks) < n:
        raise ValueError(f"could not draw {n} distinct vault tasks with {forks} forks")
    return tasks


def task_text(task: VaultTask) -> str:
    return f"Open the vault at the end of the {task.forks} forks."


def note_text(task: VaultTask) -> str:
    """The hall's note: the key (its fork lines are read at the forks: :meth:`VaultEnv.fork_text`)."""
    return f"The note says: the vault opens only with the {task.key} key."


def route_text(task: VaultTask) -> str:
    """The privileged text: the key and the hidden fork's way (what the observations do not give or
    the student may misread), one direction word at most."""
    hidden = "".join(f" at fork {i + 1} go {task.ways[i]};" for i in task.hidden)
    return f"Route: take the {task.key} key;{hidden} elsewhere follow the signs and your note."


def other_routes(tasks: list[VaultTask]) -> list[str]:
    """For each task, the route of another task of the list (searched cycling from the next one)
    that is *wrong* for it where a route speaks: for a task with a hidden fork, a route that names
    the same fork and the other way; for one without, a route with another key; failing that, any
    route other than its own (two tasks may share a route). A wrong privileged text for every task."""
    routes = [route_text(t) for t in tasks]
    out = []
    for k, task in enumerate(tasks):
        others = [(tasks[(k + j) % len(tasks)], routes[(k + j) % len(routes)]) for j in range(1, len(tasks))]
        others = [(t, r) for t, r in others if r != routes[k]]
        if not others:
            raise ValueError("vault tasks: every task has the same route, none can get another's")
        out.append(next((r for t, r in others if _misleads(t, task)), others[0][1]))
    return out


def _misleads(other: VaultTask, task: VaultTask) -> bool:
    """Whether ``other``'s route is wrong for ``task`` where a route speaks (see :func:`other_routes`)."""
    if task.hidden:
        return other.hidden == task.hidden and other.ways[task.hidden[0]] != task.ways[task.hidden[0]]
    return other.key != task.key


def expert_actions(task: VaultTask) -> list[str]:
    """The route's actions: they win every task (a policy without the route wins half of the tasks
    with a hidden fork at best)."""
    return [take(task.key), *(go(w) for w in task.ways), OPEN]


class VaultEnv:
    """One episode of a :class:`VaultTask` (``reset`` then ``step``); ``max_steps`` caps the turns."""

    def __init__(self, max_steps: int | None = None):
        self.max_steps = max_steps
        self.task: VaultTask | None = None

    def reset(self, task: VaultTask | dict) -> tuple[str, str, list[str]]:
        """``(task text, first observation, admissible actions)``."""
        self.task = task if isinstance(task, VaultTask) else VaultTask.from_dict(task)
        self.held: str | None = None
        self.fork = 0  # forks passed
        self.steps = 0
        self.done = self.won = False
        keys = ", ".join(f"a {c} key" for c in self.task.keys[:-1]) + f" and a {self.task.keys[-1]} key"
        obs = f"You are in the hall. On the table lie {keys}. {note_text(self.task)}"
        return task_text(self.task), obs, self.admissible()

    def admissible(self) -> list[str]:
        if self.done:
            return []
        if self.held is None:
            return [take(c) for c in self.task.keys]
        if self.fork < self.task.forks:
            return [go(d) for d in DIRECTIONS]
        return [OPEN]

    def fork_text(self) -> str:
        """The observation at the current fork: what its kind lets the agent read."""
        i, way = self.fork, self.task.ways[self.fork]
        kind = self.task.kind(i)
        said = (f"A sign points {way}." if kind == SIGN
                else f"There is no sign here. Your note says: at this fork go {way}." if kind == NOTE
                else "There is no sign here, and your note says nothing of this fork.")
        return f"You are at fork {i + 1} of {self.task.forks}. {said}"

    def step(self, action: str) -> tuple[str, bool, bool, list[str], dict]:
        """``(observation, done, won, admissible actions, info)``; ``info["valid_action"]`` is false for
        an action that is not admissible (it changes nothing)."""
        if self.task is None or self.done:
            raise RuntimeError("vault env: reset first (or the episode is over)")
        self.steps += 1
        action = " ".join(action.strip().lower().split())
        valid = action in self.admissible()
        decision = None  # (kind, right) of the decision this action made: "key" or a fork's kind
        if valid and self.held is None:
            decision = ("key", action == take(self.task.key))
        elif valid and self.fork < self.task.forks:
            decision = (self.task.kind(self.fork), action == go(self.task.ways[self.fork]))
        if not valid:
            obs = "Nothing happens."
        elif self.held is None:
            self.held = action.split()[2]
            obs = f"You take the {self.held} key. " + self.fork_text()
        elif self.fork < self.task.forks:
            if action != go(self.task.ways[self.fork]):
                obs, self.done = "You reach a dead end. The way back is blocked: you lost.", True
            else:
                self.fork += 1
                obs = self.fork_text() if self.fork < self.task.forks else "You stand before the vault door."
        else:
            self.done, self.won = True, self.held == self.task.key
            obs = "The vault opens: you won." if self.won else f"The {self.held} key does not fit: you lost."
        if not self.done and self.max_steps is not None and self.steps >= self.max_steps:
            self.done = True
        info = {"valid_action": valid, "won": self.won, "forks_passed": self.fork,
                "right_key": self.held == self.task.key if self.held is not None else None,
                "decision": decision}
        return obs, self.done, self.won, self.admissible(), info
