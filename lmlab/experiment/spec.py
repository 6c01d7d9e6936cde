"""What an experiment file declares, and the runs it stands for.

An experiment file (experiments/NAME.py) defines `EXPERIMENT = Experiment(...)`: a base config
file, named variants (config overrides), seeds, the measurements taken on every finished run, and
the table and plot. `plan()` turns it into one `Job` per (variant, seed): a run directory
runs/experiments/NAME/VARIANT/seed-S and the `lmlab train` overrides that build it. Every override
is checked against the base config here, so a typo fails before anything trains.
"""

from __future__ import annotations

import importlib.util
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import ml_collections

from lmlab import config as config_lib
from lmlab.config import ConfigError

SCALES = ("tiny", "full")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a variant name is a directory name

# `--scale tiny`: the same experiment shrunk to seconds per run on 2 CPU cores (char-level on the
# small Shakespeare split, one narrow layer, 20 steps). Experiment files add what their variants need.
TINY = {
    "data.corpus": "shakespeare_tiny", "tokenizer.kind": "char", "data.seq_len": 32, "data.batch_size": 8,
    "model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2, "model.n_kv_heads": 2, "model.d_ff": 64,
    "model.max_len": 256, "train.steps": 20, "train.warmup_steps": 2, "train.steps_per_call": 10,
    "train.log_every": 10, "train.eval_every": 20, "train.checkpoint_every": 10, "train.eval_batches": 2,
}


@dataclass(frozen=True)
class Experiment:
    """An ablation: `variants` is a list of (name, {config key: value}) pairs, in table order (the
    first is the reference the others are compared with). Overrides apply in this order: base
    config, `common`, at --scale tiny `tiny`, the variant's, then at --scale tiny
    `tiny_variants[name]` (for a variant whose own overrides must shrink too)."""

    base: str                                   # config file, relative to the repository root
    variants: Sequence[tuple[str, dict]]
    seeds: int = 3
    common: dict = field(default_factory=dict)
    tiny: dict = field(default_factory=lambda: dict(TINY))
    tiny_variants: dict = field(default_factory=dict)
    tiny_seeds: int = 2
    measures: Sequence[Any] = ()                # lmlab.experiment.measure objects
    primary: str = "val_bpb"                    # the metric findings are judged on (lower is better)
    table: Sequence[str] = ()                   # metric columns of the table; () = every metric
    plot: Callable | None = None                # plot(report, path): lmlab.experiment.plots; None: bars of `primary`
    analyze: Callable | None = None             # analyze(report) -> (markdown, json-able dict), e.g. a fit
    description: str = ""
    slurm: dict = field(default_factory=dict)   # sbatch options per array task, e.g. {"cpus-per-task": 2}


@dataclass(frozen=True)
class Job:
    index: int
    variant: str
    seed: int
    run_dir: pathlib.Path
    overrides: tuple[str, ...]                  # "key=value", as `lmlab train --config.key=value` takes them
    config: ml_collections.ConfigDict


def format_value(value) -> str:
    """A Python value as `--config.key=value` text that lmlab.config parses back to it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return repr(tuple(value))
    return str(value)


def load_experiment(path: str | pathlib.Path) -> tuple[str, Experiment, pathlib.Path]:
    """(name, experiment, repository root) of an experiment file; ConfigError for a bad one."""
    path = pathlib.Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise ConfigError(f"experiment file not found (a .py file defining EXPERIMENT): {path}")
    try:
        spec = importlib.util.spec_from_file_location(f"_lmlab_experiment_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:  # user code: one line, not a traceback
        raise ConfigError(f"cannot load experiment {path}: {type(e).__name__}: {e}") from e
    experiment = getattr(module, "EXPERIMENT", None)
    if not isinstance(experiment, Experiment):
        raise ConfigError(f"experiment file {path} must define EXPERIMENT = lmlab.experiment.Experiment(...)")
    check(experiment, path)
    return path.stem, experiment, path.resolve().parent.parent


def check(experiment: Experiment, path) -> None:
    """The mistakes an experiment file can make that no single run would catch."""
    variants = experiment.variants
    if isinstance(variants, dict):
        raise ConfigError(f"{path}: variants must be a list of (name, overrides) pairs, not a dict "
                          "(a dict silently keeps only the last of two equal names)")
    if not variants:
        raise ConfigError(f"{path}: the experiment has no variants")
    seen = set()
    for item in variants:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            raise ConfigError(f"{path}: each variant must be a (name, {{config key: value}}) pair; got {item!r}")
        name = item[0]
        if not _NAME.match(name):
            raise ConfigError(f"{path}: variant name {name!r} must be letters, digits, '_', '-' or '.'")
        if name in seen:
            raise ConfigError(f"{path}: variant name '{name}' is used twice")
        seen.add(name)
    unknown = sorted(set(experiment.tiny_variants) - seen)
    if unknown:
        raise ConfigError(f"{path}: tiny_variants names '{unknown[0]}', which is not a variant")
    for key in ("seeds", "tiny_seeds"):
        value = getattr(experiment, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}: {key} must be a positive integer; got {value!r}")


def overrides_for(experiment: Experiment, variant: str, scale: str) -> list[str]:
    tiny = scale == "tiny"
    layers = [experiment.common, experiment.tiny if tiny else {}, dict(experiment.variants)[variant],
              experiment.tiny_variants.get(variant, {}) if tiny else {}]
    merged: dict = {}
    for layer in layers:
        merged.update(layer)
    return [f"{key}={format_value(value)}" for key, value in merged.items()]


def plan(experiment: Experiment, name: str, root: pathlib.Path, *, scale: str, seeds: int | None,
         runs_dir: pathlib.Path) -> list[Job]:
    """One job per (variant, seed), in table order; configs resolved and validated."""
    if scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}; got '{scale}'")
    n_seeds = seeds if seeds is not None else (experiment.tiny_seeds if scale == "tiny" else experiment.seeds)
    if n_seeds < 1:
        raise ConfigError(f"need --seeds >= 1, got {n_seeds}")
    base = root / experiment.base
    jobs = []
    for variant, _ in experiment.variants:
        overrides = overrides_for(experiment, variant, scale)
        for seed in range(n_seeds):
            with_seed = [*overrides, f"seed={seed}"]
            try:
                config = config_lib.load(base, with_seed)
            except ConfigError as e:
                raise ConfigError(f"experiment '{name}', variant '{variant}': {e}") from None
            run_dir = experiment_dir(runs_dir, name, scale) / variant / f"seed-{seed}"
            jobs.append(Job(len(jobs), variant, seed, run_dir, tuple(with_seed), config))
    return jobs


def experiment_dir(runs_dir: pathlib.Path, name: str, scale: str) -> pathlib.Path:
    """runs/experiments/NAME (full) or runs/experiments/NAME-tiny: the scales never share runs."""
    return pathlib.Path(runs_dir) / (name if scale == "full" else f"{name}-{scale}")
