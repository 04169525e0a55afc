"""ALFWorld on the real TextWorld PDDL engine, offline.

- :mod:`.generator`: deterministic, expert-validated ALFWorld games for all six task types,
  with train / valid_seen / valid_unseen splits (``python -m verl_sdar.envs.alfworld.generate``).
- :mod:`.play`: one game at a time (``AlfworldEnv.reset(game_path)`` / ``step(action)``),
  the planner expert (``run_expert``), and game discovery (``find_games``) that works the same
  on generated games and on the official ALFWorld data under ``$ALFWORLD_DATA``.

Needs the ``alfworld`` extra (``pip install 'verl-sdar[alfworld]'``); importing this package
does not import alfworld.
"""

from verl_sdar.envs.alfworld.play import TASK_TYPES  # noqa: F401  (no alfworld import)
