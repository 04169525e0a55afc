"""What verl-sdar keeps off the console, and the switch that shows everything again.

Every process that imports verl's engine package (the driver, the TaskRunner, each training and
rollout worker) warns once per optional training engine that is not installed (torchtitan,
veomni, automodel, mindspeed, megatron): five warnings, two lines each, per process, on every run,
although the run uses none of them. :func:`quiet_known_noise`, called by the plugin when
``import verl`` loads it, ignores exactly those warnings (matched by message and by verl's module;
never errors, never other warnings). ``VERL_SDAR_VERBOSE=1`` leaves every warning as it is.
"""

from __future__ import annotations

import os
import warnings

VERBOSE_ENV = "VERL_SDAR_VERBOSE"
OPTIONAL_ENGINES = ("torchtitan", "veomni", "automodel", "mindspeed", "megatron")
_ENGINE_MODULE = r"verl\.workers\.engine(\..*)?$"
_ENGINE_MESSAGE = r"(" + "|".join(OPTIONAL_ENGINES) + r") engine is not available"


def verbose() -> bool:
    """``VERL_SDAR_VERBOSE`` is set to something other than ``""``/``0``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_known_noise() -> bool:
    """Ignore the optional-engine availability warnings of verl's engine package in this process;
    returns whether the filter was installed (not with ``VERL_SDAR_VERBOSE=1``)."""
    if verbose():
        return False
    warnings.filterwarnings("ignore", message=_ENGINE_MESSAGE, category=UserWarning, module=_ENGINE_MODULE)
    return True
