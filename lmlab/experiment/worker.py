"""`python -m lmlab.experiment.worker EXPERIMENT.py --scale S --runs-dir DIR --job I`: one run of
an experiment (train, then measure), as the local executor and each SLURM array task start it.

A module of its own so that `python -m` runs it without the package having imported it first.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lmlab.config import ConfigError
from lmlab.experiment.runner import Context, run_job, trained


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lmlab.experiment.worker")
    parser.add_argument("experiment")
    parser.add_argument("--scale", default="full")
    parser.add_argument("--seeds", type=int)
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--job", required=True, help="job index, or 'slurm': $SLURM_ARRAY_TASK_ID")
    args = parser.parse_args(argv)
    # force: importing orbax (through the runner's imports) already gave the root logger a handler,
    # which would turn this call into a no-op and drop the run log's INFO lines.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname).1s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for noisy in ("absl", "orbax", "jax._src.xla_bridge"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        ctx = Context.load(args.experiment, scale=args.scale, seeds=args.seeds, runs_dir=args.runs_dir)
        jobs = ctx.jobs()
    except ConfigError as e:  # the file changed since the runner checked it
        print(f"lmlab: error: {e}", file=sys.stderr)
        return 2
    index = int(os.environ["SLURM_ARRAY_TASK_ID"] if args.job == "slurm" else args.job)
    if not 0 <= index < len(jobs):  # e.g. the experiment file lost variants after the array was submitted
        print(f"lmlab: error: run {index} is not in experiment '{ctx.name}' ({len(jobs)} runs)", file=sys.stderr)
        return 2
    job = jobs[index]
    missing = [jobs[i] for i in job.after if not trained(jobs[i])]
    if missing:  # the executors start a run only after the runs it needs; a hand-started worker may not
        print(f"lmlab: error: {job.variant}/seed-{job.seed} needs {missing[0].run_dir}, which is not trained yet",
              file=sys.stderr)
        return 1
    return run_job(ctx, job)


if __name__ == "__main__":
    sys.exit(main())
