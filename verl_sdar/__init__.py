"""verl-sdar: SDAR (Self-Distilled Agentic RL) as a plugin for upstream verl.

Importing this package is cheap and imports no verl; ``verl_sdar.plugin`` (the ``verl.plugins``
entry point, loaded by ``import verl``) does the registration. ``verl_sdar.objectives`` is pure torch.
"""

__version__ = "0.1.0"
PINNED_VERL_VERSION = "0.9.1"
