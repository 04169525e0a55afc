"""``python -m verl_sdar.envs.alfworld OUT_DIR ...`` is ``python -m verl_sdar.envs.alfworld.generate``."""

import sys

from verl_sdar.envs.alfworld.generate import main

sys.exit(main())
