"""Generate expert-validated ALFWorld games offline.

    python -m verl_sdar.envs.alfworld.generate OUT_DIR --n-train 300 --n-eval-seen 60 --n-eval-unseen 60 --seed 0

writes ``OUT_DIR/json_2.1.1/{train,valid_seen,valid_unseen}/...``, ``OUT_DIR/logic/`` and
``OUT_DIR/manifest.jsonl``; ``ALFWORLD_DATA=OUT_DIR`` then makes alfworld's own configs
(``$ALFWORLD_DATA/json_2.1.1/train`` ...) use them. See ``envs/alfworld/README.md``.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m verl_sdar.envs.alfworld.generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--n-train", type=int, default=300)
    p.add_argument("--n-eval-seen", type=int, default=60)
    p.add_argument("--n-eval-unseen", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-attempts", type=int, default=20,
                   help="draws per task slot before giving up (unsolvable or duplicate draws)")
    p.add_argument("--no-initial-state", action="store_true",
                   help="do not write initial_state.pddl next to each game (it repeats game.tw-pddl's problem)")
    p.add_argument("--quiet", action="store_true", help="only the final summary line")
    args = p.parse_args(argv)

    from verl_sdar.envs.alfworld.generator import generate

    log = (lambda msg: None) if args.quiet else (lambda msg: print(msg, flush=True))
    summary = generate(args.out_dir, args.n_train, args.n_eval_seen, args.n_eval_unseen, seed=args.seed,
                       log=log, max_attempts=args.max_attempts, initial_state=not args.no_initial_state)
    print(json.dumps({k: summary[k] for k in ("counts", "seconds", "mean_expert_steps", "duplicates_skipped")}
                     | {"dropped_unsolvable": len(summary["dropped_unsolvable"])}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
