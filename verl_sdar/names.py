"""Names shared across the plugin (a leaf module: it imports nothing of verl or of verl_sdar)."""

TRAINER_MODE = "sdar"
"""``trainer.v1.trainer_mode`` of the SDAR trainer (set by every ``algorithm=`` group of ours)."""

PLACEMENTS = ("start", "before_last_user")
"""Where the privileged block goes in a teacher prompt (``sdar.privileged.placement``)."""

ROLLOUT_NAME = "hf"
"""``actor_rollout_ref.rollout.name`` of the transformers rollout backend (:mod:`verl_sdar.cpu.hf_rollout`)."""

PLATFORM_NAME = "cpu"
"""Name (and device name) of verl-sdar's CPU platform in verl's ``PlatformRegistry`` (:mod:`verl_sdar.cpu.platform`)."""

TEACHER_SOURCES = ("self", "reference", "model")
"""``sdar.teacher.source``: the weights that score the teacher rows (``verl_sdar.teacher_sources``)."""
