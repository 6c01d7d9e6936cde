"""The committed experiment files: every variant resolves at both scales (a typo in an override
fails here, not after hours of training), the grids are what the files say, and (slow) each one
runs end to end at --scale tiny."""

import json
import os
import pathlib

import jax
import pytest
from flax import nnx

from lmlab import cli
from lmlab.experiment.runner import Context
from lmlab.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
FILES = {"positions": ["rope", "learned", "sinusoidal", "alibi", "none"],
         "attention_heads": ["mha", "gqa4", "gqa2", "mqa"],
         "scaling_law": ["L2-d32", "L2-d64", "L3-d96", "L4-d128", "L6-d192", "L8-d256", "L8-d384"],
         "norms": ["rmsnorm", "layernorm"]}


def _params(config, vocab_size: int) -> int:
    abstract = nnx.eval_shape(lambda: build_model(config.model, vocab_size))
    return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("name", FILES)
def test_every_variant_resolves_at_both_scales(name, tmp_path):
    for scale in ("full", "tiny"):
        ctx = Context.load(ROOT / "experiments" / f"{name}.py", scale=scale, seeds=None, runs_dir=tmp_path)
        jobs = ctx.jobs()
        assert [v for v, _ in ctx.experiment.variants] == FILES[name]
        assert {j.variant for j in jobs} == set(FILES[name])
        seeds = ctx.experiment.seeds if scale == "full" else ctx.experiment.tiny_seeds
        assert len(jobs) == len(FILES[name]) * seeds
        if scale == "full":
            assert seeds >= 2 and all(j.config.data.corpus == "shakespeare" for j in jobs)
        else:
            assert all(j.config.train.steps <= 20 and j.config.data.corpus == "shakespeare_tiny" for j in jobs)


def test_positions_and_heads_grids():
    ctx = Context.load(ROOT / "experiments" / "positions.py", scale="full", seeds=1, runs_dir="/nonexistent")
    by = {j.variant: j.config for j in ctx.jobs()}
    assert {v: c.model.positions for v, c in by.items()} == {v: v for v in FILES["positions"]}
    assert by["learned"].model.max_len == by["learned"].data.seq_len == 128  # measured at 1x only
    assert all(by[v].model.max_len >= 8 * 128 for v in ("sinusoidal", "rope", "alibi", "none"))
    ctx = Context.load(ROOT / "experiments" / "attention_heads.py", scale="full", seeds=1, runs_dir="/nonexistent")
    heads = {j.variant: (j.config.model.d_model, j.config.model.n_heads, j.config.model.n_kv_heads) for j in ctx.jobs()}
    assert heads == {"mha": (128, 8, 8), "gqa4": (128, 8, 4), "gqa2": (128, 8, 2), "mqa": (128, 8, 1)}


def test_scaling_law_sizes_span_1e5_to_1e7_parameters_at_one_token_budget():
    ctx = Context.load(ROOT / "experiments" / "scaling_law.py", scale="full", seeds=1, runs_dir="/nonexistent")
    jobs = ctx.jobs()
    sizes = [_params(j.config, j.config.tokenizer.vocab_size) for j in jobs]
    assert sizes == sorted(sizes) and len(set(sizes)) >= 6
    assert 1e5 <= sizes[0] <= 3e5 and 1e7 <= sizes[-1] <= 3e7, sizes
    budgets = {j.config.train.steps * j.config.data.batch_size * j.config.data.seq_len for j in jobs}
    assert budgets == {2900 * 8 * 128}


@pytest.mark.slow
@pytest.mark.parametrize("name", FILES)
def test_runs_end_to_end_at_tiny_scale(name, tmp_path, capsys):
    runs = tmp_path / "runs"
    rc = cli.main(["experiment", str(ROOT / "experiments" / f"{name}.py"), "--scale", "tiny", "--seeds", "1",
                   "--jobs", str(min(2, os.cpu_count() or 1)), "--runs-dir", str(runs)])
    assert rc == 0, capsys.readouterr().err[-3000:]
    results = runs / f"{name}-tiny" / "results"
    md = (results / f"{name}.md").read_text()
    for variant in FILES[name]:
        assert f"\n| {variant} | 1 |" in md
    data = json.loads((results / f"{name}.json").read_text())
    assert {r["status"] for r in data["runs"]} == {"finished"} and len(data["runs"]) == len(FILES[name])
    if name == "scaling_law":
        assert data["analysis"] is not None and data["analysis"]["points"] == 7
    rc = cli.main(["experiment", str(ROOT / "experiments" / f"{name}.py"), "--scale", "tiny", "--seeds", "1",
                   "--runs-dir", str(runs)])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == len(FILES[name])
