"""The ablation runner: `lmlab experiment experiments/NAME.py` (variants x seeds -> runs ->
measurements -> table, JSON and plot).

    spec      what an experiment file declares (Experiment) and the runs it stands for (plan)
    measure   measurements on a finished run (held-out bpb at several lengths, sizes, weight bytes, decode speed)
    runner    the worker (train in a subprocess, then measure) and the local executor
    slurm     the SLURM executor: one sbatch job array, followed with squeue / scontrol
    report    NAME.md / NAME.json / NAME.png
    fit       the scaling-law fit L(N) = E + A * N^-alpha
    plots     plot functions experiment files name
"""

from __future__ import annotations

import logging
import pathlib

from lmlab.config import ConfigError
from lmlab.experiment import report, slurm
from lmlab.experiment.measure import DecodeSpeed, HeldOutBpb, Size, TrainTokens, WeightBytes
from lmlab.experiment.runner import Context, run_local, waiting_on
from lmlab.experiment.spec import TINY, Derive, Experiment, experiment_dir, levels

log = logging.getLogger("lmlab")

EXECUTORS = ("local", "slurm")


def results_dir(ctx: Context, override: str | None) -> pathlib.Path:
    """Full scale: experiments/results beside the experiment file (committed); tiny: inside the
    runs directory, so a test or a quick try never overwrites committed results."""
    if override:
        return pathlib.Path(override)
    if ctx.scale == "full":
        return ctx.path.parent / "results"
    return experiment_dir(ctx.runs_dir, ctx.name, ctx.scale) / "results"


def run_experiment(path, *, scale: str = "full", seeds: int | None = None, jobs: int | None = None, executor: str = "local",
                   report_only: bool = False, runs_dir="runs/experiments", results: str | None = None,
                   sbatch: list[str] = (), command: str = "") -> tuple[dict[int, str], list[pathlib.Path]]:
    """Runs what is unfinished (unless report_only), then writes the report. Returns ({job index:
    outcome}, written files). Bad input raises ConfigError before anything runs."""
    if executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}; got '{executor}'")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"need --jobs >= 1, got {jobs}")
    options = slurm.parse_options(list(sbatch))
    if executor == "slurm" and not report_only:
        slurm.require_sbatch()
    ctx = Context.load(path, scale=scale, seeds=seeds, runs_dir=runs_dir)
    planned = ctx.jobs()
    outcome: dict[int, str] = {}
    if not report_only:
        log.info("experiment %s (%s scale): %d run(s) in %s", ctx.name, scale, len(planned),
                 experiment_dir(ctx.runs_dir, ctx.name, scale))
        if executor == "local":
            outcome = run_local(ctx, planned, jobs or 1)
        else:  # one job array per wave: a wave's runs need only earlier waves' runs
            for wave in levels(planned):
                waiting = {j.index: reason for j in wave if (reason := waiting_on(j, planned, outcome))}
                outcome.update(waiting)
                outcome.update(slurm.run_slurm(ctx, [j for j in wave if j.index not in waiting], jobs or 0, options))
    written = report.write(ctx, planned, results_dir(ctx, results), command)
    return outcome, written


__all__ = ["TINY", "DecodeSpeed", "Derive", "Experiment", "HeldOutBpb", "Size", "TrainTokens", "WeightBytes",
           "run_experiment"]
