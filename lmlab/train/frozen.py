"""Frozen models: parameter trees a task reads but never trains (a distillation teacher, a DPO reference).

A task names them by run directory (`Task.frozen_sources`). The trainer loads each read-only from
its newest checkpoint, placed with the shardings its logical axes give on this run's mesh (the
same rules as this run's parameters: lmlab.sharding.RULES), and passes the parameter trees into
the jitted train step as an argument. They are never in the optimizer state, never in this run's
checkpoints, and receive no gradient.

Their provenance (run directory, step, a fingerprint of the parameters) is written to
`<run>/frozen.json` when the run starts; a resume reloads them and refuses, in one line, when a
source changed (trained on, replaced, or gone), since the steps already taken depended on it.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from dataclasses import dataclass

import jax
from flax import nnx

from lmlab.config import ConfigError
from lmlab.data.prepare import same_files
from lmlab.files import atomic_write
from lmlab.runs import load_run
from lmlab.train.checksums import tree_checksums
from lmlab.train.state import BASE, uses_lora

RECORD_FILE = "frozen.json"


@dataclass
class FrozenModel:
    graphdef: nnx.GraphDef
    params: dict
    tokenizer: object
    config: object
    source: dict  # {"run_dir", "step", "fingerprint"}


def fingerprint(params) -> str:
    """A digest of a parameter tree's paths, shapes and values: the per-array checksums that
    checkpoints carry (lmlab.train.checksums), the same however the arrays are sharded."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    names = [f"{jax.tree_util.keystr(path)}{tuple(leaf.shape)}" for path, leaf in leaves]
    sums = tree_checksums([leaf for _, leaf in leaves], names)
    return hashlib.sha256(json.dumps(sums, sort_keys=True).encode()).hexdigest()[:32]


def run_frozen_sources(task, config) -> dict[str, str]:
    """The frozen models of a run: its task's, and a LoRA run's base (the train.init_from run)."""
    sources = dict(task.frozen_sources())
    if uses_lora(config):
        sources[BASE] = config.train.init_from
    return sources


def task_frozen(frozen: dict[str, "FrozenModel"]) -> dict[str, "FrozenModel"]:
    """The frozen models the task itself reads (a LoRA base is part of the trained model instead)."""
    return {name: model for name, model in frozen.items() if name != BASE}


def load_frozen(sources: dict[str, str], mesh) -> dict[str, FrozenModel]:
    """Each named run's newest parameters on `mesh`, sharded by their logical axes."""
    frozen = {}
    for name, run_dir in sources.items():
        if not run_dir:
            raise ConfigError(f"frozen model '{name}' names no run directory")
        try:
            run = load_run(run_dir, mesh=mesh)
        except FileNotFoundError as e:
            raise ConfigError(f"frozen model '{name}': {e}") from None
        source = {"run_dir": str(pathlib.Path(run_dir).resolve()), "step": int(run.step),
                  "fingerprint": fingerprint(run.params)}
        frozen[name] = FrozenModel(nnx.graphdef(run.model), run.params, run.tokenizer, run.config, source)
    return frozen


def check_or_record(run_dir: pathlib.Path, frozen: dict[str, FrozenModel], *, resuming: bool, write: bool) -> None:
    """Writes the sources of a new run; on a resume refuses if one differs from what was recorded."""
    path = pathlib.Path(run_dir) / RECORD_FILE
    now = {name: model.source for name, model in frozen.items()}
    if resuming and path.exists():
        try:
            was = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path} is not valid JSON ({e}); it records this run's frozen models") from None
        for name in sorted(set(was) | set(now)):
            before, after = was.get(name), now.get(name)
            if before != after:
                raise ConfigError(f"frozen model '{name}' changed since this run started ({_describe(before)} -> "
                                  f"{_describe(after)}); the steps taken so far used the old one: restore it, "
                                  "or use another --workdir to start a new run")
        return
    if write:
        with atomic_write(path, "w", encoding="utf-8") as f:
            f.write(json.dumps(now, indent=2, sort_keys=True) + "\n")


def check_tokenizers(frozen: dict[str, FrozenModel], run_dir: pathlib.Path) -> None:
    """A frozen model reads this run's token ids: its tokenizer must be this run's, file for file."""
    mine = pathlib.Path(run_dir) / "tokenizer"
    for name, model in frozen.items():
        theirs = pathlib.Path(model.source["run_dir"]) / "tokenizer"
        if not same_files(mine, theirs):
            raise ConfigError(f"frozen model '{name}' ({model.source['run_dir']}) has another tokenizer than this "
                              "run; its token ids would mean different things (start the run from it, e.g. "
                              "train.init_from, or leave init_from empty to take its tokenizer)")


def _describe(source: dict | None) -> str:
    if source is None:
        return "none"
    return f"{source['run_dir']} at step {source['step']}, parameters {source['fingerprint'][:12]}"


def params_of(frozen: dict[str, FrozenModel]) -> dict:
    """The argument the jitted step takes: {name: parameter tree}."""
    return {name: model.params for name, model in frozen.items()}


def graphdefs_of(frozen: dict[str, FrozenModel]) -> dict:
    return {name: model.graphdef for name, model in frozen.items()}
