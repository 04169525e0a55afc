"""Play one ALFWorld game (batch size 1) on the real TextWorld PDDL engine.

The environment is built the way alfworld's ``AlfredTWEnv.init_env`` builds each of its
sub-environments: TextWorld's ``GenericEnvironment`` (which picks the PDDL backend for
``*.tw-pddl``), a step ``Limit``, alfworld's own ``AlfredDemangler`` / ``AlfredInfos`` /
``AlfredExpert`` wrappers, and TextWorld's ``Filter``. It differs in two ways, both on purpose:

- one game, one process, fresh wrapper instances per environment (``AlfredTWEnv`` shares one
  demangler/expert instance between the sub-environments of a synchronous batch, which is why
  synchronous batches above 1 misbehave);
- the game is chosen by path in ``reset(game_path)`` instead of by a shuffled pool.

Any ``game.tw-pddl`` works: the ones :mod:`verl_sdar.envs.alfworld.generator` writes and the
official ALFWorld ones under ``$ALFWORLD_DATA/json_2.1.1/...`` (each official game file embeds its
own PDDL domain and grammar, so nothing else is needed). :func:`find_games` discovers games with
the same rules as ``AlfredTWEnv.collect_game_files``.

    env = AlfworldEnv(max_steps=50)
    obs, info = env.reset("/data/json_2.1.1/valid_seen/.../game.tw-pddl")
    info["admissible_commands"], info["task"]
    obs, reward, done, info = env.step("go to countertop 1")   # reward 1.0 once won
    env.close()

    result = run_expert("/path/game.tw-pddl")                 # planner expert to completion
    result.won, result.steps, result.actions
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from verl_sdar.envs.contract import WON

TASK_TYPES = (
    "pick_and_place_simple",
    "look_at_obj_in_light",
    "pick_clean_then_place_in_recep",
    "pick_heat_then_place_in_recep",
    "pick_cool_then_place_in_recep",
    "pick_two_obj_and_place",
)

#: The split folders of the ALFWorld layout, and the names verl-agent / alfworld use for them.
SPLIT_DIRS = {"train": "train", "eval_in_distribution": "valid_seen", "eval_out_of_distribution": "valid_unseen"}

WELCOME = "-= Welcome to TextWorld, ALFRED! =-"


def _require_alfworld():
    try:
        import alfworld.agents.environment.alfred_tw_env as alfred_tw_env  # noqa: F401
        import textworld  # noqa: F401
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise ImportError(
            "ALFWorld support needs the `alfworld` extra: pip install 'verl-sdar[alfworld]' "
            "(alfworld==0.4.2; it builds jericho and fast-downward from source)."
        ) from e
    return alfred_tw_env


def task_from_observation(obs: str) -> str:
    """The goal sentence of an initial observation ('put a hot apple in fridge.'), or ''."""
    marker = "Your task is to: "
    i = obs.find(marker)
    return obs[i + len(marker):].strip() if i >= 0 else ""


def strip_welcome(obs: str) -> str:
    """Drop TextWorld's banner line from an initial observation."""
    return obs.replace(WELCOME, "", 1).lstrip("\n") if obs.startswith(WELCOME) else obs


class AlfworldEnv:
    """One ALFWorld game at a time through TextWorld + alfworld's wrappers.

    Args:
        max_steps: episode step limit (``done`` turns True when reached), like
            ``dagger.training.max_nb_steps_per_episode``; ``None`` for no limit.
        expert: ``None`` (fast: no planning per step), ``"planner"`` (alfworld's
            fast-downward planner expert, replans every step) or ``"handcoded"``. With an expert,
            ``info["expert_plan"]`` holds its plan (planner: the whole remaining plan).
        domain_randomization: shuffle the object numbering like ``AlfredTWEnv`` in training.
        facts: also return the PDDL facts (``info["facts"]``).
    """

    def __init__(self, max_steps: int | None = 50, expert: str | None = None,
                 domain_randomization: bool = False, facts: bool = False):
        self.max_steps = max_steps
        self.expert = expert
        self.domain_randomization = domain_randomization
        self.facts = facts
        self._env = None
        self._loaded = None
        self.game_path: str | None = None
        self.steps = 0
        self.won = False
        self.done = False

    def _build(self):
        tw_env = _require_alfworld()
        import textworld
        from textworld.envs.wrappers import Filter, GenericEnvironment, Limit

        extras = ["gamefile"] + (["expert_plan"] if self.expert else [])
        infos = textworld.EnvInfos(won=True, admissible_commands=True, facts=self.facts, extras=extras)
        env = GenericEnvironment(infos)
        if self.max_steps:
            env = Limit(env, max_episode_steps=self.max_steps)
        env = tw_env.AlfredDemangler(env, shuffle=self.domain_randomization)
        env = tw_env.AlfredInfos(env)
        if self.expert:
            env = tw_env.AlfredExpert(env, expert_type=self.expert)
        return Filter(env)

    def reset(self, game_path: str | os.PathLike) -> tuple[str, dict[str, Any]]:
        """Load ``game_path`` (reusing the parsed game when it is the same file) and start it.

        Returns the initial observation and an info dict with ``admissible_commands`` (sorted
        list), ``won``, ``task`` (the goal sentence), ``gamefile`` and, with an expert,
        ``expert_plan``.
        """
        game_path = os.path.abspath(os.fspath(game_path))
        if self._env is None:
            self._env = self._build()
        if self._loaded != game_path or self.domain_randomization:
            self._env.load(game_path)
            self._loaded = game_path
        self.game_path = game_path
        obs, infos = self._env.reset()
        self.steps, self.won, self.done = 0, bool(infos["won"]), False
        info = self._info(infos)
        info["task"] = task_from_observation(obs)
        self._task = info["task"]
        return obs, info

    def step(self, action: str) -> tuple[str, float, bool, dict[str, Any]]:
        """Send one text command. Returns ``(obs, reward, done, info)``; reward is 1.0 when the
        game is won (ALFWorld's score), ``done`` when won or out of steps. A command that is not
        admissible leaves the state unchanged and answers "Nothing happens."."""
        if self._env is None or self.game_path is None:
            raise RuntimeError("call reset(game_path) first")
        obs, score, done, infos = self._env.step(action)
        self.steps += 1
        self.won = bool(infos["won"])
        self.done = bool(done)
        info = self._info(infos)
        info["task"] = self._task
        return obs, float(score), self.done, info

    def _info(self, infos: dict) -> dict[str, Any]:
        info = {
            "admissible_commands": list(infos["admissible_commands"]),
            WON: bool(infos["won"]),  # infos: TextWorld's
            "gamefile": infos.get("extra.gamefile"),
            "steps": self.steps,
        }
        if self.expert:
            info["expert_plan"] = list(infos.get("extra.expert_plan") or [])
        if self.facts:
            info["facts"] = infos.get("facts")
        return info

    def close(self):
        if self._env is not None:
            try:
                self._env.close()
            except Exception:  # noqa: BLE001 - closing a PDDL env has nothing to release
                pass
        self._env, self._loaded = None, None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@dataclass
class ExpertResult:
    game_path: str
    won: bool
    steps: int
    actions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None


def run_expert(game_path: str | os.PathLike, expert: str = "planner", max_steps: int = 100,
               env: AlfworldEnv | None = None) -> ExpertResult:
    """Play ``game_path`` with alfworld's expert until won or ``max_steps``.

    Each step takes the first command of the expert's current plan (the planner replans after
    every step, so this is the planner used as a policy). Errors (no plan, an expert crash) are
    reported in ``error`` with ``won=False`` rather than raised.
    """
    own = env is None
    env = env or AlfworldEnv(max_steps=max_steps, expert=expert)
    t0 = time.perf_counter()
    actions: list[str] = []
    try:
        obs, info = env.reset(game_path)
        done = info[WON]
        while not done and len(actions) < max_steps:
            plan = info.get("expert_plan") or []
            if not plan:
                return ExpertResult(str(game_path), False, len(actions), actions,
                                    time.perf_counter() - t0, "expert returned no plan")
            actions.append(plan[0])
            obs, _, done, info = env.step(plan[0])
        return ExpertResult(str(game_path), bool(info[WON]), len(actions), actions, time.perf_counter() - t0,
                            None if info[WON] else f"not won after {len(actions)} steps")
    except Exception as e:  # noqa: BLE001 - an unsolvable game must be reported, not crash a batch
        return ExpertResult(str(game_path), False, len(actions), actions, time.perf_counter() - t0,
                            f"{type(e).__name__}: {e}")
    finally:
        if own:
            env.close()


def find_games(root: str | os.PathLike, task_types: Iterable[str] = TASK_TYPES,
               solvable_only: bool = True) -> list[str]:
    """Game files under ``root`` selected like ``AlfredTWEnv.collect_game_files``: a folder with
    ``traj_data.json`` and ``game.tw-pddl``, a wanted ``task_type``, not 'movable'/'Sliced', and
    marked solvable. Sorted, so the order does not depend on the file system."""
    task_types = set(task_types)
    games = []
    for dirpath, _dirs, files in os.walk(os.fspath(root)):
        if "traj_data.json" not in files or "game.tw-pddl" not in files:
            continue
        if "movable" in dirpath or "Sliced" in dirpath:
            continue
        with open(os.path.join(dirpath, "traj_data.json")) as f:
            if json.load(f).get("task_type") not in task_types:
                continue
        game = os.path.join(dirpath, "game.tw-pddl")
        if solvable_only:
            with open(game) as f:
                if not json.load(f).get("solvable"):
                    continue
        games.append(game)
    return sorted(games)


def task_type_of(game_path: str | os.PathLike) -> str:
    """The task type of a game: ``task_type`` of the ``traj_data.json`` next to its game file."""
    with open(os.path.join(os.path.dirname(os.fspath(game_path)), "traj_data.json")) as f:
        return json.load(f)["task_type"]


def data_root(path: str | os.PathLike | None = None) -> str:
    """The ALFWorld data root: ``path``, else ``$ALFWORLD_DATA``, else alfworld's default cache."""
    if path:
        return os.path.abspath(os.fspath(path))
    default = os.path.expanduser("~/.cache/alfworld")
    return os.path.abspath(os.path.expandvars(os.environ.get("ALFWORLD_DATA") or default))


def split_dir(split: str, root: str | os.PathLike | None = None) -> str:
    """``<root>/json_2.1.1/<train|valid_seen|valid_unseen>``; ``split`` may also be alfworld's
    ``train`` / ``eval_in_distribution`` / ``eval_out_of_distribution``."""
    return os.path.join(data_root(root), "json_2.1.1", SPLIT_DIRS.get(split, split))


def benchmark(games: list[str], expert: str | None = "planner", random_steps: int = 0, seed: int = 0,
              max_steps: int = 100, log=print) -> dict:
    """Expert success over ``games`` (per task type) and env speed.

    With ``expert`` set, plays every game with it (steps/s then include the expert's planning).
    With ``random_steps`` > 0, also takes that many uniformly random admissible actions without
    any expert (the speed an agent loop sees), resetting to the next game when one ends."""
    import random as _random

    out: dict[str, Any] = {"games": len(games)}
    if expert:
        env = AlfworldEnv(max_steps=max_steps, expert=expert)
        per_type: dict[str, list] = {}
        steps, t0 = 0, time.perf_counter()
        for g in games:
            r = run_expert(g, expert=expert, max_steps=max_steps, env=env)
            per_type.setdefault(task_type_of(g), []).append(r.won)
            steps += r.steps
            if not r.won:
                log(f"expert did not win {g}: {r.error}")
        env.close()
        secs = time.perf_counter() - t0
        won = sum(sum(v) for v in per_type.values())
        out.update({"expert": expert, "expert_success": won / max(1, len(games)), "expert_won": won,
                    "expert_by_type": {k: f"{sum(v)}/{len(v)}" for k, v in sorted(per_type.items())},
                    "expert_steps": steps, "expert_seconds": secs,
                    "expert_steps_per_s": steps / secs if secs else 0.0})
    if random_steps:
        rng = _random.Random(seed)
        env = AlfworldEnv(max_steps=50)
        gi, n, step_s, reset_s, resets = 0, 0, 0.0, 0.0, 0
        t = time.perf_counter()
        obs, info = env.reset(games[gi])
        reset_s += time.perf_counter() - t
        resets += 1
        while n < random_steps:
            t = time.perf_counter()
            obs, _, done, info = env.step(rng.choice(info["admissible_commands"]))
            step_s += time.perf_counter() - t
            n += 1
            if done:
                gi = (gi + 1) % len(games)
                t = time.perf_counter()
                obs, info = env.reset(games[gi])
                reset_s += time.perf_counter() - t
                resets += 1
        env.close()
        out.update({"random_steps": n, "env_steps_per_s": n / step_s, "ms_per_step": 1000 * step_s / n,
                    "resets": resets, "ms_per_reset": 1000 * reset_s / resets})
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.alfworld.play",
                                description="Play ALFWorld games with alfworld's expert; report success and speed.")
    p.add_argument("path", help="a game.tw-pddl, or a folder searched like AlfredTWEnv does "
                                "(e.g. $ALFWORLD_DATA/json_2.1.1/valid_seen)")
    p.add_argument("--expert", default="planner", choices=["planner", "handcoded", "none"])
    p.add_argument("--random-steps", type=int, default=0, help="also time N random admissible actions, no expert")
    p.add_argument("--max-steps", type=int, default=100)
    p.add_argument("--limit", type=int, default=0, help="only the first N games")
    args = p.parse_args(argv)
    games = [args.path] if os.path.isfile(args.path) else find_games(args.path)
    if args.limit:
        games = games[:args.limit]
    if not games:
        raise SystemExit(f"no solvable games under {args.path}")
    res = benchmark(games, expert=None if args.expert == "none" else args.expert,
                    random_steps=args.random_steps, max_steps=args.max_steps)
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
