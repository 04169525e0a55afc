"""Entry point of verl-sdar (group ``verl.plugins``): registers everything with verl.

``import verl`` loads this module in the driver and in every Ray worker. verl only logs plugin
import errors at debug level, so this module checks its own registrations and reports a failure
loudly (ERROR log + message on stderr) before re-raising; ``check_registered()`` raises it again
where it matters (the SDAR trainer's constructor), so a broken install can never train silently
without SDAR.
"""

from __future__ import annotations

import logging
import os
import sys

from . import PINNED_VERL_VERSION, __version__

logger = logging.getLogger("verl_sdar")


class PluginRegistrationError(RuntimeError):
    """verl-sdar could not register itself with verl."""


def _register() -> None:
    import verl

    if getattr(verl, "__version__", None) != PINNED_VERL_VERSION:
        raise PluginRegistrationError(
            f"verl-sdar {__version__} is built for verl=={PINNED_VERL_VERSION}, found verl=={verl.__version__}; "
            f"install the pinned version: pip install verl=={PINNED_VERL_VERSION}"
        )
    # The CPU platform must be registered before anything resolves verl's platform singleton,
    # which importing the trainer does: CPU registration first. The submodule is imported (not
    # the ``cpu`` package's attributes) so this also completes when a process's first import was
    # ``verl_sdar.cpu...`` and that package is still initialising.
    from .cpu import registration as cpu_registration
    from .config import TRAINER_MODE
    from . import trainer  # registers the trainer
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    # When a process's first import is ``verl_sdar.trainer`` itself, ``import verl`` inside it runs
    # this entry point while the trainer module is still initialising: it registers on completion.
    trainer_initialising = getattr(getattr(trainer, "__spec__", None), "_initializing", False)
    missing = [] if TRAINER_MODE in TRAINER_REGISTRY or trainer_initialising else [f"trainer '{TRAINER_MODE}'"]
    missing.extend(cpu_registration.missing_registrations())
    if missing:
        raise PluginRegistrationError("verl-sdar registrations missing after import: " + ", ".join(missing))
    os.environ["VERL_SDAR_PLUGIN_LOADED"] = "1"


def check_registered() -> None:
    """Raise if the plugin failed to register."""
    if _REGISTRATION_ERROR is not None:
        raise PluginRegistrationError(f"verl-sdar failed to register: {_REGISTRATION_ERROR!r}") from _REGISTRATION_ERROR


_REGISTRATION_ERROR: BaseException | None = None
try:
    _register()
except BaseException as exc:  # noqa: BLE001 - verl swallows plugin errors; make them visible first
    _REGISTRATION_ERROR = exc
    logger.error("verl-sdar plugin failed to load: %r", exc)
    print(f"[verl-sdar] ERROR: plugin failed to load: {exc!r}", file=sys.stderr, flush=True)
    raise
