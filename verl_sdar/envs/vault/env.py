"""The vault task: a short text game built for credit assignment (the experiment of docs/experiment_plan.md).

An episode, for a task with ``F`` forks:

1. The hall: three keys of different colours lie on a table; a note names the key that opens the
   vault and, for each fork without a sign, the way to go there. Actions: ``take the <colour> key``.
   **The early decision**: the key. A wrong key is noticed only at the vault, ``F + 1`` turns later.
2. Forks ``1..F``: ``go left`` or ``go right``. A sign points the way at most forks; at the others
   only the note (turn 1) tells. The wrong way is a dead end: the episode ends, lost.
3. The vault door: ``open the vault``; won iff the key held is the note's.

Any other text changes nothing (``info["valid_action"] = False``) and costs a turn. The optimal
policy (read the note, keep it in mind, follow the signs) wins every task in ``F + 2`` turns
(:func:`expert_actions`). The privileged text of a task is its route (:func:`route_text`); the
noisy condition gives a task another task's route (:mod:`verl_sdar.envs.vault.dataset`).

Pure Python, no dependencies; tasks are JSON-serialisable dicts (:class:`VaultTask`).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

COLOURS = ("red", "blue", "green", "yellow", "white", "black")
KEYS_PER_TASK = 3
DIRECTIONS = ("left", "right")
OPEN = "open the vault"


def take(colour: str) -> str:
    return f"take the {colour} key"


def go(direction: str) -> str:
    return f"go {direction}"


@dataclass(frozen=True)
class VaultTask:
    """One task: the keys on the table, the key that opens the vault, the right way at each fork
    and which forks have a sign."""

    task_id: str
    keys: tuple[str, ...]
    key: str
    ways: tuple[str, ...]
    signs: tuple[bool, ...]

    def __post_init__(self):
        if self.key not in self.keys or len(set(self.keys)) != len(self.keys):
            raise ValueError(f"vault task {self.task_id}: key {self.key!r} must be one of distinct keys {self.keys}")
        if len(self.ways) != len(self.signs) or not self.ways:
            raise ValueError(f"vault task {self.task_id}: one way and one sign flag per fork, at least one fork")
        if any(w not in DIRECTIONS for w in self.ways):
            raise ValueError(f"vault task {self.task_id}: ways must be in {DIRECTIONS}, got {self.ways}")

    @property
    def forks(self) -> int:
        return len(self.ways)

    @property
    def signature(self) -> tuple:
        """What makes two tasks the same game (everything but the id)."""
        return self.keys, self.key, self.ways, self.signs

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> VaultTask:
        return cls(task_id=str(d["task_id"]), keys=tuple(d["keys"]), key=str(d["key"]),
                   ways=tuple(d["ways"]), signs=tuple(bool(s) for s in d["signs"]))


def generate_tasks(n: int, forks: int, seed: int, sign_share: float = 0.5, prefix: str = "t") -> list[VaultTask]:
    """``n`` distinct tasks with ``forks`` forks each, drawn by ``random.Random(seed)``; each fork has
    a sign with probability ``sign_share``, and every task has at least one fork without one (so
    the note matters)."""
    if forks < 1 or n < 1:
        raise ValueError(f"need n >= 1 and forks >= 1, got n={n}, forks={forks}")
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
        task = VaultTask(f"{prefix}{len(tasks)}", keys, key, ways, tuple(signs))
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
    hints = [f"at fork {i + 1} go {w}" for i, (w, s) in enumerate(zip(task.ways, task.signs, strict=True)) if not s]
    text = f"The note says: the vault opens only with the {task.key} key"
    return text + ("; " + "; ".join(hints) if hints else "") + "."


def route_text(task: VaultTask) -> str:
    """The privileged text: the whole route."""
    ways = ", ".join(f"at fork {i + 1} go {w}" for i, w in enumerate(task.ways))
    return f"Route: take the {task.key} key; {ways}; then open the vault."


def other_routes(tasks: list[VaultTask]) -> list[str]:
    """For each task, the route of the next task in the list (cycling) whose route differs from its
    own (two tasks may share a route): a wrong privileged text for every task."""
    routes = [route_text(t) for t in tasks]
    out = []
    for k, route in enumerate(routes):
        other = next((routes[(k + j) % len(routes)] for j in range(1, len(routes))
                      if routes[(k + j) % len(routes)] != route), None)
        if other is None:
            raise ValueError("vault tasks: every task has the same route, none can get another's")
        out.append(other)
    return out


def expert_actions(task: VaultTask) -> list[str]:
    """The optimal policy's actions (it wins)."""
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

    def _fork_text(self) -> str:
        i = self.fork
        sign = f"A sign points {self.task.ways[i]}." if self.task.signs[i] else "There is no sign here."
        return f"You are at fork {i + 1} of {self.task.forks}. {sign}"

    def step(self, action: str) -> tuple[str, bool, bool, list[str], dict]:
        """``(observation, done, won, admissible actions, info)``; ``info["valid_action"]`` is false for
        an action that is not admissible (it changes nothing)."""
        if self.task is None or self.done:
            raise RuntimeError("vault env: reset first (or the episode is over)")
        self.steps += 1
        action = " ".join(action.strip().lower().split())
        valid = action in self.admissible()
        if not valid:
            obs = "Nothing happens."
        elif self.held is None:
            self.held = action.split()[2]
            obs = f"You take the {self.held} key. " + self._fork_text()
        elif self.fork < self.task.forks:
            if action != go(self.task.ways[self.fork]):
                obs, self.done = "You reach a dead end. The way back is blocked: you lost.", True
            else:
                self.fork += 1
                obs = self._fork_text() if self.fork < self.task.forks else "You stand before the vault door."
        else:
            self.done, self.won = True, self.held == self.task.key
            obs = "The vault opens: you won." if self.won else f"The {self.held} key does not fit: you lost."
        if not self.done and self.max_steps is not None and self.steps >= self.max_steps:
            self.done = True
        info = {"valid_action": valid, "won": self.won, "forks_passed": self.fork,
                "right_key": self.held == self.task.key if self.held is not None else None}
        return obs, self.done, self.won, self.admissible(), info
