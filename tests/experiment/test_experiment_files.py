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
from lmlab.experiment.runner import Context, train_command, trained
from lmlab.models import build_model

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIZES = ["L2-d32", "L2-d64", "L3-d96", "L4-d128", "L6-d192", "L8-d256", "L8-d384"]
FILES = {"positions": ["rope", "learned", "sinusoidal", "alibi", "none"],
         "attention_heads": ["mha", "gqa4", "gqa2", "mqa"],
         "scaling_law": [*SIZES, *(f"{s}-{d}" for d in ("D1.5M", "D0.74M") for s in SIZES[:-1])],
         "norms": ["rmsnorm", "layernorm", "rmsnorm-post", "layernorm-post"],
         "distillation": ["alone", "a0.5-T1", "a0.5-T2", "a0.9-T1", "a0.9-T2"],
         "quantization": ["float32", "bfloat16", "int8", "int4-g32", "int4-g64", "int4-g128", "qat", "qat-int4"],
         "label_smoothing": ["ls-0", "ls-0.1"],
         "tokenizers": ["bpe-2048", "char", "bpe-512", "bpe-8192", "char-time", "bpe-512-time", "bpe-8192-time"]}
CORPORA = {"label_smoothing": ("ui_en_fr", "jupyterlab_en_fr_tiny")}  # (full, tiny); the others Shakespeare's


def _params(config, vocab_size: int) -> int:
    abstract = nnx.eval_shape(lambda: build_model(config.model, vocab_size))
    return sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))


@pytest.mark.parametrize("name", FILES)
def test_every_variant_resolves_at_both_scales(name, tmp_path):
    for scale in ("full", "tiny"):
        ctx = Context.load(ROOT / "experiments" / f"{name}.py", scale=scale, seeds=None, runs_dir=tmp_path)
        jobs = ctx.jobs()
        assert [v for v, _ in ctx.experiment.variants] == FILES[name]
        assert {j.variant for j in jobs} == set(FILES[name]) | set(ctx.experiment.requires)
        seeds = ctx.experiment.seeds if scale == "full" else ctx.experiment.tiny_seeds
        assert len(jobs) == len(FILES[name]) * seeds + len(ctx.experiment.requires)
        full, tiny = CORPORA.get(name, ("shakespeare", "shakespeare_tiny"))
        if scale == "full":
            assert seeds >= 2 and all(j.config.data.corpus == full for j in jobs)
        else:
            assert all(j.config.train.steps <= 20 and j.config.data.corpus == tiny for j in jobs)


def test_positions_and_heads_grids():
    ctx = Context.load(ROOT / "experiments" / "positions.py", scale="full", seeds=1, runs_dir="/nonexistent")
    by = {j.variant: j.config for j in ctx.jobs()}
    assert {v: c.model.positions for v, c in by.items()} == {v: v for v in FILES["positions"]}
    assert by["learned"].model.max_len == by["learned"].data.seq_len == 128  # measured at 1x only
    assert all(by[v].model.max_len >= 8 * 128 for v in ("sinusoidal", "rope", "alibi", "none"))
    ctx = Context.load(ROOT / "experiments" / "attention_heads.py", scale="full", seeds=1, runs_dir="/nonexistent")
    heads = {j.variant: (j.config.model.d_model, j.config.model.n_heads, j.config.model.n_kv_heads) for j in ctx.jobs()}
    assert heads == {"mha": (128, 8, 8), "gqa4": (128, 8, 4), "gqa2": (128, 8, 2), "mqa": (128, 8, 1)}


def test_tokenizers_at_equal_time_scale_steps_by_measured_throughput():
    ctx = Context.load(ROOT / "experiments" / "tokenizers.py", scale="full", seeds=1, runs_dir="/nonexistent")
    by = {j.variant: j.config for j in ctx.jobs()}
    for name in ("char", "bpe-512", "bpe-8192"):
        same_steps, same_time = by[name].to_dict(), by[f"{name}-time"].to_dict()
        assert {**same_time, "train": {**same_time["train"], "steps": 2900}} == same_steps
    seconds = {v: c.train.steps / {"bpe-2048": 14421, "char-time": 18847, "bpe-512-time": 16118,
                                   "bpe-8192-time": 9638}[v] for v, c in by.items() if v == "bpe-2048" or v.endswith("-time")}
    assert max(seconds.values()) / min(seconds.values()) < 1.01  # equal time within the rounding to 20 steps
    assert by["char-time"].train.steps > by["bpe-512-time"].train.steps > 2900 > by["bpe-8192-time"].train.steps


def test_distillation_teacher_is_the_runs_own_command_and_counts_once_trained(tmp_path):
    """At full scale the teacher is exactly `lmlab train configs/gpt_shakespeare_teacher.py
    --workdir runs/experiments/distillation/teacher` (no overrides): a run trained by hand with that
    command is recognised by its eval.json and not trained again. At tiny scale it is shrunk, but
    stays larger than the students."""
    ctx = Context.load(ROOT / "experiments" / "distillation.py", scale="full", seeds=None, runs_dir=tmp_path)
    jobs = ctx.jobs()
    teacher = jobs[0]
    assert (teacher.kind, teacher.run_dir, teacher.overrides) == ("prerequisite", tmp_path / "distillation" / "teacher", ())
    assert train_command(ctx, teacher)[3:6] == ["train", str(ROOT / "configs" / "gpt_shakespeare_teacher.py"),
                                                "--workdir"]
    assert not any(arg.startswith("--config") for arg in train_command(ctx, teacher))
    students = jobs[1:]
    assert all(j.config.train.steps == 1000 and j.config.model.d_model == 128 for j in students)
    assert {(j.config.distill.alpha, j.config.distill.temperature) for j in students if j.config.distill.teacher} == {
        (0.5, 1.0), (0.5, 2.0), (0.9, 1.0), (0.9, 2.0)}
    assert all(j.config.distill.teacher in ("", str(teacher.run_dir)) for j in students)
    teacher.run_dir.mkdir(parents=True)
    (teacher.run_dir / "eval.json").write_text(json.dumps({"step": teacher.config.train.steps, "val_bpb": 1.9}))
    assert trained(teacher)
    tiny = Context.load(ROOT / "experiments" / "distillation.py", scale="tiny", seeds=1, runs_dir=tmp_path).jobs()
    assert _params(tiny[0].config, 65) > _params(tiny[1].config, 65)


def test_quantization_derives_from_each_seeds_float_run(tmp_path):
    ctx = Context.load(ROOT / "experiments" / "quantization.py", scale="full", seeds=None, runs_dir=tmp_path)
    by = {(j.variant, j.seed): j for j in ctx.jobs()}
    exp = tmp_path / "quantization"
    assert by["int4-g32", 1].derive == ("quantize", str(exp / "float32" / "seed-1"), "--weights", "int4",
                                        "--group", "32", "--out", str(exp / "int4-g32" / "seed-1"))
    qat = by["qat", 1].config
    assert (qat.train.init_from, qat.quant.qat, qat.quant.group) == (str(exp / "float32" / "seed-1"), "int4", 64)
    assert by["qat-int4", 0].derive[:2] == ("quantize", str(exp / "qat" / "seed-0"))
    assert {j.kind for j in ctx.jobs() if j.variant in ("float32", "qat")} == {"train"}


def test_scaling_law_sizes_span_1e5_to_1e7_parameters_and_six_of_them_three_budgets():
    ctx = Context.load(ROOT / "experiments" / "scaling_law.py", scale="full", seeds=1, runs_dir="/nonexistent")
    jobs = ctx.jobs()
    full = [j for j in jobs if j.variant in SIZES]
    sizes = [_params(j.config, j.config.tokenizer.vocab_size) for j in full]
    assert sizes == sorted(sizes) and len(set(sizes)) >= 6
    assert 1e5 <= sizes[0] <= 3e5 and 1e7 <= sizes[-1] <= 3e7, sizes
    tokens = {j.variant: j.config.train.steps * j.config.data.batch_size * j.config.data.seq_len for j in jobs}
    assert {tokens[v] for v in SIZES} == {2900 * 8 * 128}
    for size in SIZES[:-1]:  # a shorter budget changes the steps and nothing else
        assert (tokens[f"{size}-D1.5M"], tokens[f"{size}-D0.74M"]) == (1440 * 1024, 720 * 1024)
        by = {j.variant: j.config.to_dict() for j in jobs if j.variant.startswith(size + "-") or j.variant == size}
        for budget in ("D1.5M", "D0.74M"):
            shorter = by[f"{size}-{budget}"]
            assert {**shorter, "train": {**shorter["train"], "steps": 2900}} == by[size]


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
    n_runs = len(FILES[name]) + len(data["prerequisites"])
    assert {r["status"] for r in data["runs"]} == {"finished"} and len(data["runs"]) == n_runs
    if name == "scaling_law":
        assert data["analysis"]["points"] == 7 and data["analysis"]["joint"]["n"] == len(FILES[name])
    for req in data["prerequisites"]:  # the distillation teacher's row
        assert f"\n| {req} (prerequisite) | 1 |" in md
    metrics = {r["variant"]: r["metrics"] for r in data["runs"]}
    if name == "quantization":  # derived runs: made, evaluated and measured
        weight_bytes = {v: m["weight_bytes"] for v, m in metrics.items()}
        assert weight_bytes["int4-g64"] < weight_bytes["int8"] < weight_bytes["bfloat16"] < weight_bytes["float32"]
        assert 2 * weight_bytes["bfloat16"] == weight_bytes["float32"] == weight_bytes["qat"]
        assert weight_bytes["qat-int4"] == weight_bytes["int4-g64"] and metrics["int8"]["val_bpb"] is not None
    if name == "label_smoothing":
        assert all(m["bleu"] is not None and m["test_loss"] > 0 for m in metrics.values())
    rc = cli.main(["experiment", str(ROOT / "experiments" / f"{name}.py"), "--scale", "tiny", "--seeds", "1",
                   "--runs-dir", str(runs)])
    assert rc == 0 and json.loads(capsys.readouterr().out.strip().splitlines()[-1])["skipped"] == n_runs
    if name == "quantization":  # a derived run cut short (no eval.json yet) is made again from its source
        int8 = runs / f"{name}-tiny" / "int8" / "seed-0"
        (int8 / "eval.json").unlink()
        rc = cli.main(["experiment", str(ROOT / "experiments" / f"{name}.py"), "--scale", "tiny", "--seeds", "1",
                       "--runs-dir", str(runs)])
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert rc == 0 and (result["done"], result["skipped"]) == (1, n_runs - 1)
        remade = json.loads((int8 / "eval.json").read_text())
        assert remade["val_bpb"] == metrics["int8"]["val_bpb"] and remade["derive_output"]["policy"]
