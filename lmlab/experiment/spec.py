"""What an experiment file declares, and the runs it stands for.

An experiment file (experiments/NAME.py) defines `EXPERIMENT = Experiment(...)`: a base config
file, named variants (config overrides), seeds, the measurements taken on every finished run, and
the table and plot. `plan()` turns it into one `Job` per (variant, seed): a run directory
runs/experiments/NAME/VARIANT/seed-S and the `lmlab train` overrides that build it. Every override
is checked against the base config here, so a typo fails before anything trains.

Two kinds of runs besides trained variants:
- prerequisites (`requires={"teacher": "configs/gpt_shakespeare_teacher.py"}`): trained once (not
  per seed, with the config's own seed) at runs/experiments/NAME/teacher before the variants;
- derived variants (`("int8", Derive("float", ["quantize", "--weights", "int8"]))`): not trained
  but made from another variant's run of the same seed by `lmlab quantize SOURCE ... --out RUN`.
An override value may name a prerequisite or another variant as a placeholder, e.g.
`{"distill.teacher": "{teacher}"}` or `{"train.init_from": "{float}"}`: the planner replaces it
by that run's directory (the same seed's, for a variant), and the run waits for it (`Job.after`).
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
RESERVED = {"logs", "results", "slurm"}  # directories of the experiment itself

# `--scale tiny`: the same experiment shrunk to seconds per run on 2 CPU cores (char-level on the
# small Shakespeare split, one narrow layer, 20 steps). Experiment files add what their variants need.
TINY = {
    "data.corpus": "shakespeare_tiny", "tokenizer.kind": "char", "data.seq_len": 32, "data.batch_size": 8,
    "model.n_layers": 1, "model.d_model": 32, "model.n_heads": 2, "model.n_kv_heads": 2, "model.d_ff": 64,
    "model.max_len": 256, "train.steps": 20, "train.warmup_steps": 2, "train.steps_per_call": 10,
    "train.log_every": 10, "train.eval_every": 20, "train.checkpoint_every": 10, "train.eval_batches": 2,
}


_PLACEHOLDER = re.compile(r"\{([A-Za-z0-9][A-Za-z0-9_.-]*)\}")


@dataclass(frozen=True)
class Derive:
    """A variant made from `source`'s run (same seed) by `lmlab ARGS[0] SOURCE_RUN ARGS[1:] --out RUN`
    instead of training; the runner then evaluates it (its eval.json) and measures it like any run."""

    source: str
    args: Sequence[str]


@dataclass(frozen=True)
class Experiment:
    """An ablation: `variants` is a list of (name, {config key: value}) pairs, in table order (the
    first is the reference the others are compared with); a variant's second element may be a
    `Derive` instead of overrides. Overrides apply in this order: base config, `common`, at --scale
    tiny `tiny`, the variant's, then at --scale tiny `tiny_variants[name]` (for a variant whose own
    overrides must shrink too). A prerequisite (`requires`: name -> config file) gets only
    `tiny` and `tiny_variants[name]`, at --scale tiny."""

    base: str                                   # config file, relative to the repository root
    variants: Sequence[tuple[str, dict]]
    seeds: int = 3
    common: dict = field(default_factory=dict)
    tiny: dict = field(default_factory=lambda: dict(TINY))
    tiny_variants: dict = field(default_factory=dict)
    tiny_seeds: int = 2
    measures: Sequence[Any] = ()                # lmlab.experiment.measure objects
    primary: str = "val_bpb"                    # the metric findings are judged on (bpb, or e.g. "bleu")
    table: Sequence[str] = ()                   # metric columns of the table; () = every metric
    plot: Callable | None = None                # plot(report, path): lmlab.experiment.plots; None: `primary` per variant
    analyze: Callable | None = None             # analyze(report) -> (markdown, json-able dict), e.g. a fit
    description: str = ""
    slurm: dict = field(default_factory=dict)   # sbatch options per array task, e.g. {"cpus-per-task": 2}
    requires: dict = field(default_factory=dict)  # prerequisite name -> config file, trained once first
    eval_metrics: Sequence[str] = ()            # more keys of each run's eval.json for the table (e.g. "bleu")


@dataclass(frozen=True)
class Job:
    index: int
    variant: str
    seed: int
    run_dir: pathlib.Path
    overrides: tuple[str, ...]                  # "key=value", as `lmlab train --config.key=value` takes them
    config: ml_collections.ConfigDict           # a derived run's: its source's (the command changes it)
    config_file: str = ""                       # what `lmlab train` reads, relative to the repository root
    kind: str = "train"                         # train | prerequisite | derive
    derive: tuple[str, ...] = ()                # kind derive: the `lmlab` arguments that make the run
    after: tuple[int, ...] = ()                 # indices of the jobs whose runs this one needs


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
    if not isinstance(experiment.requires, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in experiment.requires.items()):
        raise ConfigError(f"{path}: requires must be a dict {{name: config file}}; got {experiment.requires!r}")
    seen = set()
    for item in [*variants, *((name, {}) for name in experiment.requires)]:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                and isinstance(item[1], (dict, Derive))):
            raise ConfigError(f"{path}: each variant must be a (name, {{config key: value}} or Derive(...)) pair; "
                              f"got {item!r}")
        name = item[0]
        if not _NAME.match(name) or name in RESERVED:
            raise ConfigError(f"{path}: variant name {name!r} must be letters, digits, '_', '-' or '.', and "
                              f"none of {', '.join(sorted(RESERVED))}")
        if name in seen:
            raise ConfigError(f"{path}: variant name '{name}' is used twice (variants and requires share names)")
        seen.add(name)
    derived = {name: spec for name, spec in variants if isinstance(spec, Derive)}
    for name, spec in derived.items():
        if spec.source not in seen or spec.source in derived or spec.source in experiment.requires:
            raise ConfigError(f"{path}: derived variant '{name}' comes from '{spec.source}', which is not a "
                              "trained variant")
        if isinstance(spec.args, str) or not spec.args or not all(isinstance(a, str) for a in spec.args):
            raise ConfigError(f"{path}: derived variant '{name}': Derive args must be a non-empty list of strings")
    unknown = sorted(set(experiment.tiny_variants) - (seen - set(derived)))
    if unknown:
        raise ConfigError(f"{path}: tiny_variants names '{unknown[0]}', which is not a variant or prerequisite that trains")
    for key in ("seeds", "tiny_seeds"):
        value = getattr(experiment, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{path}: {key} must be a positive integer; got {value!r}")


def overrides_for(experiment: Experiment, variant: str, scale: str) -> dict:
    """{key: value} of a trained variant or a prerequisite, placeholders not yet resolved."""
    tiny = scale == "tiny"
    own = {} if variant in experiment.requires else dict(experiment.variants)[variant]
    layers = [{} if variant in experiment.requires else experiment.common, experiment.tiny if tiny else {}, own,
              experiment.tiny_variants.get(variant, {}) if tiny else {}]
    merged: dict = {}
    for layer in layers:
        merged.update(layer)
    return merged


@dataclass(frozen=True)
class _Layout:
    """Where every run of a plan lives and which job index it has: prerequisites first, then the
    variants in table order, each with its seeds."""

    experiment: Experiment
    exp_dir: pathlib.Path
    n_seeds: int

    def index(self, name: str, seed: int) -> int:
        if name in self.experiment.requires:
            return list(self.experiment.requires).index(name)
        names = [v for v, _ in self.experiment.variants]
        return len(self.experiment.requires) + names.index(name) * self.n_seeds + seed

    def run_dir(self, name: str, seed: int) -> pathlib.Path:
        if name in self.experiment.requires:
            return self.exp_dir / name
        return self.exp_dir / name / f"seed-{seed}"

    def resolve(self, variant: str, seed: int, overrides: dict) -> tuple[dict, tuple[int, ...]]:
        """Placeholders {NAME} in string values -> run directories; and the jobs they name."""
        known = set(self.experiment.requires) | {v for v, _ in self.experiment.variants} - {variant}
        after: list[int] = []

        def replace(match) -> str:
            name = match.group(1)
            if name not in known:
                raise ConfigError(f"placeholder '{{{name}}}' names no prerequisite or other variant "
                                  f"(known: {', '.join(sorted(known))})")
            after.append(self.index(name, seed))
            return str(self.run_dir(name, seed))

        resolved = {k: _PLACEHOLDER.sub(replace, v) if isinstance(v, str) else v for k, v in overrides.items()}
        return resolved, tuple(sorted(set(after)))


def plan(experiment: Experiment, name: str, root: pathlib.Path, *, scale: str, seeds: int | None,
         runs_dir: pathlib.Path) -> list[Job]:
    """Prerequisites, then one job per (variant, seed) in table order; configs resolved and validated."""
    if scale not in SCALES:
        raise ConfigError(f"--scale must be one of {', '.join(SCALES)}; got '{scale}'")
    n_seeds = seeds if seeds is not None else (experiment.tiny_seeds if scale == "tiny" else experiment.seeds)
    if n_seeds < 1:
        raise ConfigError(f"need --seeds >= 1, got {n_seeds}")
    layout = _Layout(experiment, experiment_dir(runs_dir, name, scale), n_seeds)
    jobs = []
    for req, config_file in experiment.requires.items():  # once, with the config's own seed
        overrides = tuple(f"{k}={format_value(v)}" for k, v in overrides_for(experiment, req, scale).items())
        config = _load(root / config_file, overrides, name, req)
        jobs.append(Job(len(jobs), req, config.seed, layout.run_dir(req, 0), overrides, config, config_file,
                        kind="prerequisite"))
    for variant, spec in experiment.variants:
        source = spec.source if isinstance(spec, Derive) else variant
        for seed in range(n_seeds):
            try:
                resolved, after = layout.resolve(source, seed, overrides_for(experiment, source, scale))
            except ConfigError as e:
                raise ConfigError(f"experiment '{name}', variant '{source}': {e}") from None
            overrides = (*(f"{k}={format_value(v)}" for k, v in resolved.items()), f"seed={seed}")
            config = _load(root / experiment.base, overrides, name, source)
            run_dir = layout.run_dir(variant, seed)
            if isinstance(spec, Derive):
                source_dir = layout.run_dir(source, seed)
                jobs.append(Job(len(jobs), variant, seed, run_dir, overrides, config, experiment.base, kind="derive",
                                derive=(spec.args[0], str(source_dir), *spec.args[1:], "--out", str(run_dir)),
                                after=(layout.index(source, seed),)))
            else:
                jobs.append(Job(len(jobs), variant, seed, run_dir, overrides, config, experiment.base, after=after))
    levels(jobs)  # refuses variants that wait for each other
    return jobs


def _load(path: pathlib.Path, overrides, name: str, variant: str) -> ml_collections.ConfigDict:
    try:
        return config_lib.load(path, list(overrides))
    except ConfigError as e:
        raise ConfigError(f"experiment '{name}', variant '{variant}': {e}") from None


def levels(jobs: list[Job]) -> list[list[Job]]:
    """Jobs in waves: each one's `after` jobs are all in earlier waves. ConfigError on a cycle."""
    level: dict[int, int] = {}

    def depth(job: Job, path: tuple[int, ...]) -> int:
        if job.index in path:
            raise ConfigError(f"variants wait for each other's runs: "
                              f"{' -> '.join(jobs[i].variant for i in (*path, job.index))}")
        if job.index not in level:
            level[job.index] = 1 + max((depth(jobs[i], (*path, job.index)) for i in job.after), default=-1)
        return level[job.index]

    for job in jobs:
        depth(job, ())
    return [[j for j in jobs if level[j.index] == n] for n in range(1 + max(level.values(), default=-1))]


def experiment_dir(runs_dir: pathlib.Path, name: str, scale: str) -> pathlib.Path:
    """runs/experiments/NAME (full) or runs/experiments/NAME-tiny: the scales never share runs."""
    return pathlib.Path(runs_dir) / (name if scale == "full" else f"{name}-{scale}")
