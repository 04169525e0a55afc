"""A quiet console: verl's optional-engine warnings and TransferQueue's thread-clamp warning are
dropped in processes that load the plugin, everything else is shown, and VERL_SDAR_VERBOSE=1 shows
them again (fresh processes)."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import warnings
import verl
import verl.workers.engine
warnings.warn("an unrelated warning stays visible", UserWarning)
import logging
from transfer_queue.utils.common import limit_pytorch_auto_parallel_threads
with limit_pytorch_auto_parallel_threads(target_num_threads=100000, info="test"):
    pass
logging.getLogger("transfer_queue.utils.common").warning("another transfer_queue warning stays visible")
import os, psutil
print("TQ_NUM_THREADS", os.environ.get("TQ_NUM_THREADS"), psutil.cpu_count(logical=False))
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_optional_engine_warnings_are_quiet_unless_verbose(verbose):
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_SDAR_VERBOSE", "TQ_NUM_THREADS")}
    if verbose:
        env["VERL_SDAR_VERBOSE"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "an unrelated warning stays visible" in proc.stderr
    assert ("engine is not available" in proc.stderr) == verbose, proc.stderr[-3000:]
    assert "another transfer_queue warning stays visible" in proc.stderr
    assert ("target_num_threads 100000 should not exceed" in proc.stderr) == verbose, proc.stderr[-3000:]
    # the storage actors never load the plugin: they read TQ_NUM_THREADS, set to the physical cores
    _, value, cores = proc.stdout.strip().splitlines()[-1].split()
    expected = cores if cores != "None" and int(cores) < 8 and not verbose else "None"
    assert value == expected
