"""Whether verl-sdar's plugin entry point registered itself in this process (a leaf module).

:mod:`verl_sdar.plugin` records the outcome here; the SDAR trainer calls :func:`check_registered`
in its constructor. Both import this module and neither imports the other's importer, so the
plugin (which imports the trainer to register it) and the trainer share no import cycle.
This module imports nothing of verl or of verl_sdar.
"""

from __future__ import annotations

__all__ = ["PluginRegistrationError", "check_registered", "record_failure", "record_success"]


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


def registration_error() -> BaseException | None:
    """The exception the plugin failed with in this process, if it did."""
    return _error


def check_registered() -> None:
    """Raise if the plugin failed to register, or never ran, in this process.

    The plugin runs when ``import verl`` loads the ``verl.plugins`` entry points; it does not run
    when ``VERL_USE_EXTERNAL_PLUGINS`` leaves ``verl_sdar`` out, and then nothing of verl-sdar
    (trainer, CPU platform, ``hf`` rollout) is registered.
    """
    if _error is not None:
        raise PluginRegistrationError(f"verl-sdar failed to register: {_error!r}") from _error
    if not _registered:
        raise PluginRegistrationError(
            "verl-sdar's plugin entry point (verl_sdar.plugin) did not run in this process: import verl with "
            "VERL_USE_EXTERNAL_PLUGINS unset, 'auto' or naming verl_sdar, or import verl_sdar.plugin first"
        )
