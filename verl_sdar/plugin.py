"""Entry point of verl-sdar (group ``verl.plugins``): registers everything with verl.

``import verl`` loads this module in the driver and in every Ray worker. verl only logs plugin
import errors at debug level, so this module checks its own registrations and reports a failure
loudly (ERROR log + message on stderr) before re-raising; it records the outcome in
:mod:`verl_sdar.plugin_status`, whose ``check_registered()`` raises it again where it matters (the
SDAR trainer's constructor), so a broken install can never train silently without SDAR.
"""

from __future__ import annotations

import logging
import os
import sys

from . import PINNED_VERL_VERSION, __version__
from .names import TRAINER_MODE
from .plugin_status import PluginRegistrationError, check_registered, record_failure, record_success

__all__ = ["PluginRegistrationError", "check_registered"]  # re-exported from verl_sdar.plugin_status

logger = logging.getLogger("verl_sdar")

_TRAINER_MODULE = f"{__package__}.trainer"


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
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    # The trainer module imports verl, and ``import verl`` runs this entry point: when a process's
    # first import is the trainer module, this runs from inside that import, the module is already
    # in ``sys.modules``, and it registers the trainer when its own import completes (a failure
    # there reaches its importer). Only a trainer import started here is checked here.
    trainer_imported_elsewhere = _TRAINER_MODULE in sys.modules
    from . import trainer  # noqa: F401  (registers the trainer)

    missing = []
    if TRAINER_MODE not in TRAINER_REGISTRY and not trainer_imported_elsewhere:
        missing.append(f"trainer '{TRAINER_MODE}'")
    missing.extend(cpu_registration.missing_registrations())
    if missing:
        raise PluginRegistrationError("verl-sdar registrations missing after import: " + ", ".join(missing))
    os.environ["VERL_SDAR_PLUGIN_LOADED"] = "1"


try:
    _register()
except BaseException as exc:  # noqa: BLE001 - verl swallows plugin errors; make them visible first
    record_failure(exc)
    logger.error("verl-sdar plugin failed to load: %r", exc)
    print(f"[verl-sdar] ERROR: plugin failed to load: {exc!r}", file=sys.stderr, flush=True)
    raise
else:
    record_success()
