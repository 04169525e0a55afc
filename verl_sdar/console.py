"""What verl-sdar keeps off the console, and the switch that shows everything again.

Every process that imports verl's engine package (the driver, the TaskRunner, each training and
rollout worker) warns once per optional training engine that is not installed (torchtitan,
veomni, automodel, mindspeed, megatron): five warnings, two lines each, per process, on every run,
although the run uses none of them. And TransferQueue (verl's data plane) logs
``target_num_threads 8 should not exceed total physical CPU cores N. Setting to N.`` (twice: its own
handler and the root logger's) on every put, get and clear of every process on a machine with
fewer than 8 physical cores: about 1,000 lines in a 4-step CPU run. The clamp it reports is the
right behaviour, not a fault. :func:`quiet_known_noise`, called by the plugin when ``import verl``
loads it, drops exactly those messages (matched by message and by the emitting module or logger;
never errors, never other warnings). TransferQueue's storage actors never import verl, so the
filter cannot reach them: there ``TQ_NUM_THREADS`` (unless set) is set to what TransferQueue would
clamp to, the number of physical cores, in the launching process's environment, which the Ray
processes it starts inherit (a cluster started with ``ray start`` does not: set it there).
``VERL_SDAR_VERBOSE=1`` leaves everything as it is.
"""

from __future__ import annotations

import logging
import os
import re
import warnings

VERBOSE_ENV = "VERL_SDAR_VERBOSE"
OPTIONAL_ENGINES = ("torchtitan", "veomni", "automodel", "mindspeed", "megatron")
_ENGINE_MODULE = r"verl\.workers\.engine(\..*)?$"
_ENGINE_MESSAGE = r"(" + "|".join(OPTIONAL_ENGINES) + r") engine is not available"
TQ_THREADS_LOGGER = "transfer_queue.utils.common"
_TQ_THREADS_MESSAGE = re.compile(r"target_num_threads \d+ should not exceed total physical CPU cores \d+")


class _DropTQThreadClamp(logging.Filter):
    """Drops TransferQueue's thread-clamp warning (and nothing else) from its logger."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not _TQ_THREADS_MESSAGE.match(record.getMessage())


def verbose() -> bool:
    """``VERL_SDAR_VERBOSE`` is set to something other than ``""``/``0``."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_known_noise() -> bool:
    """Ignore the optional-engine availability warnings of verl's engine package and TransferQueue's
    thread-clamp warning in this process; returns whether the filters were installed (not with
    ``VERL_SDAR_VERBOSE=1``)."""
    if verbose():
        return False
    warnings.filterwarnings("ignore", message=_ENGINE_MESSAGE, category=UserWarning, module=_ENGINE_MODULE)
    tq_logger = logging.getLogger(TQ_THREADS_LOGGER)
    if not any(isinstance(f, _DropTQThreadClamp) for f in tq_logger.filters):
        tq_logger.addFilter(_DropTQThreadClamp())
    cores = _physical_cores()
    if cores is not None and cores < TQ_DEFAULT_THREADS:  # the same clamp, without the warning
        os.environ.setdefault(TQ_THREADS_ENV, str(cores))
    return True


TQ_THREADS_ENV = "TQ_NUM_THREADS"
TQ_DEFAULT_THREADS = 8  # TransferQueue's default for TQ_NUM_THREADS


def _physical_cores() -> int | None:
    try:
        import psutil
    except ImportError:
        return None
    return psutil.cpu_count(logical=False)
