"""Entry point of verl-sdar (group ``verl.plugins``): registers everything with verl.

``import verl`` loads this module in the driver, in every Ray worker and in any other process that
imports verl, most of which never train. So it does only what is cheap and must happen first -- the
CPU platform (:mod:`verl_sdar.cpu.registration`), before anything resolves verl's platform -- and
defers the rest to the moment verl imports the registry each registration goes into
(:mod:`verl_sdar.import_hooks`), before that import returns:

* the SDAR trainer (``trainer.v1.trainer_mode=sdar``): imported, and so registered in verl's
  ``TRAINER_REGISTRY``, when ``verl.trainer.ppo.v1`` is imported -- the package ``main_ppo``
  takes ``get_trainer_cls`` from, and that every import of ``verl.trainer.ppo.v1.trainer_base``
  (the registry's module) initialises first;
* the ``turn_row_grpo`` advantage estimator (:mod:`verl_sdar.advantages`): when
  ``verl.trainer.ppo.core_algos`` (the estimator registry) is imported;
* the CPU training engines and the ``hf`` rollout: see :mod:`verl_sdar.cpu.registration`.

verl only logs plugin import errors at debug level, so this module checks its own registrations
and reports a failure loudly (ERROR log + message on stderr) before re-raising; a deferred
registration that fails does the same and fails the import that triggered it. The outcome is
recorded in :mod:`verl_sdar.plugin_status`, whose ``check_registered()`` raises it again where it
matters (the SDAR trainer's constructor), so a broken install can never train silently without SDAR.
"""

from __future__ import annotations

import os
import sys

from . import PINNED_VERL_VERSION, __version__
from .console import quiet_known_noise
from .import_hooks import when_imported
from .names import TRAINER_MODE
from .plugin_status import PluginRegistrationError, check_registered, record_success, report_failure

__all__ = ["PluginRegistrationError", "check_registered"]  # re-exported from verl_sdar.plugin_status

_TRAINER_MODULE = f"{__package__}.trainer"
_ADVANTAGES_MODULE = f"{__package__}.advantages"
# verl.trainer.ppo.v1 imports trainer_base (TRAINER_REGISTRY, get_trainer_cls) and trainer_sync
# (the SDAR trainer's base class): once it is imported, importing the trainer costs little more.
TRAINER_REGISTRY_PACKAGE = "verl.trainer.ppo.v1"
ESTIMATOR_REGISTRY_MODULE = "verl.trainer.ppo.core_algos"


def _register_trainer(_package) -> None:
    """``verl.trainer.ppo.v1`` is imported: import (and so register) the SDAR trainer."""
    # The trainer module imports verl.trainer.ppo.v1: when a process's first import is the trainer
    # module, this runs from inside that import, the module is already in ``sys.modules``, and it
    # registers the trainer when its own import completes (a failure there reaches its importer).
    # Only a trainer import started here is checked here.
    if _TRAINER_MODULE in sys.modules:
        return
    from verl.trainer.ppo.v1.trainer_base import TRAINER_REGISTRY

    from . import trainer

    if TRAINER_REGISTRY.get(TRAINER_MODE) is not trainer.SDARTrainer:
        raise PluginRegistrationError(f"verl-sdar registration missing after import: trainer '{TRAINER_MODE}'")


def _register_estimator(_module) -> None:
    """``verl.trainer.ppo.core_algos`` is imported: register the ``turn_row_grpo`` estimator."""
    # Like the trainer: a process whose first import is verl_sdar.advantages registers it on completion.
    if _ADVANTAGES_MODULE in sys.modules:
        return
    from verl.trainer.ppo.core_algos import get_adv_estimator_fn

    from . import advantages

    if get_adv_estimator_fn(advantages.TURN_ROW_GRPO) is not advantages.compute_turn_row_grpo_advantage:
        raise PluginRegistrationError(
            f"verl-sdar registration missing after import: advantage estimator '{advantages.TURN_ROW_GRPO}'"
        )


def _register() -> None:
    import verl

    if getattr(verl, "__version__", None) != PINNED_VERL_VERSION:
        raise PluginRegistrationError(
            f"verl-sdar {__version__} is built for verl=={PINNED_VERL_VERSION}, found verl=={verl.__version__}; "
            f"install the pinned version: pip install verl=={PINNED_VERL_VERSION}"
        )
    # The CPU platform must be registered before anything resolves verl's platform singleton, which
    # importing the trainer does: CPU registration first. The submodule is imported (not the ``cpu``
    # package's attributes) so this also completes when a process's first import was
    # ``verl_sdar.cpu...`` and that package is still initialising. It is cheap: what it registers
    # in verl's heavy modules waits for them, like the trainer below.
    from .cpu import registration as cpu_registration

    quiet_known_noise()  # verl's optional-engine warnings, once per process (VERL_SDAR_VERBOSE=1: all)
    when_imported(TRAINER_REGISTRY_PACKAGE, _register_trainer, f"trainer '{TRAINER_MODE}'")
    when_imported(ESTIMATOR_REGISTRY_MODULE, _register_estimator, "advantage estimator 'turn_row_grpo'")
    missing = cpu_registration.missing_registrations(deferred=False)
    if missing:
        raise PluginRegistrationError("verl-sdar registrations missing after import: " + ", ".join(missing))
    os.environ["VERL_SDAR_PLUGIN_LOADED"] = "1"


try:
    _register()
except BaseException as exc:  # noqa: BLE001 - verl swallows plugin errors; make them visible first
    report_failure(exc)
    raise
else:
    record_success()
