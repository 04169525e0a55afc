"""A quiet console: verl's optional-engine warnings are ignored in processes that load the plugin,
everything else is shown, and VERL_SDAR_VERBOSE=1 shows them again (fresh processes)."""

import os
import subprocess
import sys

import pytest

SCRIPT = """
import warnings
import verl
import verl.workers.engine
warnings.warn("an unrelated warning stays visible", UserWarning)
"""


@pytest.mark.parametrize("verbose", [False, True])
def test_optional_engine_warnings_are_quiet_unless_verbose(verbose):
    env = {k: v for k, v in os.environ.items() if k != "VERL_SDAR_VERBOSE"}
    if verbose:
        env["VERL_SDAR_VERBOSE"] = "1"
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "an unrelated warning stays visible" in proc.stderr
    assert ("engine is not available" in proc.stderr) == verbose, proc.stderr[-3000:]
