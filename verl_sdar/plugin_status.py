"""Whether verl-sdar's plugin entry point registered itself in this process (a leaf module).

:mod:`verl_sdar.plugin` records the outcome here, and so do the registrations it defers until
verl imports the registry they go into (:mod:`verl_sdar.import_hooks`: e.g. the trainer, when
``verl.trainer.ppo.v1`` is imported); the SDAR trainer calls :func:`check_registered` in its
constructor. The plugin, the hooks and the trainer all import this module and none imports the
others' importers, so the plugin (whose hook imports the trainer to register it) and the trainer
share no import cycle. This module imports nothing of verl or of verl_sdar.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["PluginRegistrationError", "check_registered", "record_failure", "record_success", "report_failure"]

logger = logging.getLogger("verl_sdar")


class PluginRegistrationError(RuntimeError):
    """verl-sdar could not register itself with verl."""


_error: BaseException | None = None
_registered = False


def record_success() -> None:
    """Called by the plugin once every registration is checked."""
    global _error, _registered
    _error, _registered = None, True


def record_failure(exc: BaseException) -> None:
    """Called by the plugin when registering failed (before it re-raises ``exc``)."""
    global _error, _registered
    _error, _registered = exc, False


def report_failure(exc: BaseException, what: str = "plugin") -> None:
    """Record ``exc`` as this process's registration failure and report it loudly (ERROR log and
    stderr: verl logs plugin errors at debug level only). The caller re-raises it. Reporting the
    exception already recorded again does nothing."""
    if exc is _error:
        return
    record_failure(exc)
    logger.error("verl-sdar %s failed to load: %r", what, exc)
    print(f"[verl-sdar] ERROR: {what} failed to load: {exc!r}", file=sys.stderr, flush=True)


def registration_error() -> BaseException | None:
    """The exception the plugin failed with in this process, if it did."""
    return _error


def check_registered() -> None:
    """Raise if the plugin failed to register, or never ran, in this process.

    The plugin runs when ``import verl`` loads the ``verl.plugins`` entry points; it does not run
    when ``VERL_USE_EXTERNAL_PLUGINS`` leaves ``verl_sdar`` out, and then nothing of verl-sdar
    (trainer, CPU platform, ``hf`` rollout) is registered. A registration the plugin deferred
    (:mod:`verl_sdar.import_hooks`) that failed later counts as a failure too.
    """
    if _error is not None:
        raise PluginRegistrationError(f"verl-sdar failed to register: {_error!r}") from _error
    if not _registered:
        raise PluginRegistrationError(
            "verl-sdar's plugin entry point (verl_sdar.plugin) did not run in this process: import verl with "
            "VERL_USE_EXTERNAL_PLUGINS unset, 'auto' or naming verl_sdar, or import verl_sdar.plugin first"
        )
