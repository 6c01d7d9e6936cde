"""LoRA runs through the trainer: only the adapters are trained, optimized and checkpointed; the
base run is the frozen model 'base' and never changes; `lmlab lora merge` gives a plain run with
the adapted model's logits."""

import hashlib
import json
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from lmlab import config as config_lib
from lmlab.nn import lora
from lmlab.runs import load_run
from lmlab.train import loop
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.state import build_trained_model

TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char",
    "--config.data.seq_len=32", "--config.data.batch_size=4",
    "--config.model.n_layers=2", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.warmup_steps=2", "--config.train.log_every=1", "--config.train.steps_per_call=4",
    "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2",
    "--config.sample.prompts=()",
]


def tiny(steps, *extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*TINY, f"--config.train.steps={steps}", *extra])


def digest(directory: pathlib.Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return h.hexdigest()


def adapted_config(base, *extra):
    return tiny(16, f"--config.train.init_from={base}", "--config.lora.rank=4", "--config.lora.alpha=8",
                "--config.lora.targets=attn/qkv|mlp/down", "--config.train.learning_rate=1e-2", *extra)


def losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base, adapted = root / "base", root / "adapted"
    loop.train(tiny(8), base, progress=False)
    before = digest(base / "checkpoints")
    summary = loop.train(adapted_config(base), adapted, progress=False)
    return base, adapted, before, summary


def test_base_run_is_untouched_and_only_adapters_are_checkpointed(runs):
    base, adapted, before, _ = runs
    assert digest(base / "checkpoints") == before
    meta = ocp.StandardCheckpointHandler().metadata(adapted / "checkpoints" / "16" / "state").tree
    names = {"/".join(map(str, path)) for path, _ in jax.tree_util.tree_flatten_with_path(
        meta["params"], is_leaf=lambda x: hasattr(x, "shape"))[0]}
    names = {n.replace("['", "").replace("']", "/") for n in names}
    assert names and all("lora_" in n for n in names) and len(names) == 2 * 2 * 2  # 2 layers x qkv, down x A, B
    # Adam's moments: adapter-shaped only.
    moments = jax.tree.leaves(meta["opt_state"], is_leaf=lambda x: hasattr(x, "shape"))
    adapter_shapes = {tuple(x.shape) for x in jax.tree.leaves(meta["params"], is_leaf=lambda x: hasattr(x, "shape"))}
    assert {tuple(m.shape) for m in moments if len(m.shape) == 2} <= adapter_shapes
    frozen = json.loads((adapted / "frozen.json").read_text())
    assert frozen["base"]["run_dir"] == str(base.resolve()) and frozen["base"]["step"] == 8


def test_adapters_learn_and_the_base_weights_stay_bit_identical(runs):
    base, adapted, _, summary = runs
    base_run, lora_run = load_run(base), load_run(adapted)
    base_kernel = base_run.params["blocks"][0]["attn"]["qkv"]["kernel"]
    np.testing.assert_array_equal(lora_run.params["blocks"][0]["attn"]["qkv"]["kernel"], base_kernel)
    b = lora_run.params["blocks"][0]["attn"]["qkv"]["lora_b"]
    assert float(jnp.abs(b).max()) > 0  # B started at zero: it has been trained
    assert "lora_a" not in lora_run.params["blocks"][0]["attn"]["out"]  # not a target
    trained = losses(adapted)
    assert trained[-1] < trained[0] and summary["val_loss"] < json.loads((base / "eval.json").read_text())["val_loss"]


def test_lora_dropout_draws_masks_in_training_only(runs, tmp_path):
    """lora.dropout with model.dropout 0: the trainer passes dropout keys. The first step matches
    the run without it (B = 0: the adapters add nothing yet), the later ones do not; the base
    weights stay frozen and a run opened for evaluation never drops."""
    base, adapted, _, _ = runs
    dropped = tmp_path / "dropped"
    loop.train(adapted_config(base, "--config.lora.dropout=0.5"), dropped, progress=False)
    plain, with_dropout = losses(adapted), losses(dropped)
    assert len(plain) == len(with_dropout) == 16 and with_dropout[0] == pytest.approx(plain[0], rel=1e-6)
    # Adam's first update is the sign of the gradient, which dropout rarely flips: step 2 may
    # match too. From step 3 the adapters differ.
    assert all(abs(a - b) > 1e-5 for a, b in zip(plain[2:], with_dropout[2:]))
    run = load_run(dropped)
    np.testing.assert_array_equal(run.params["blocks"][0]["attn"]["qkv"]["kernel"],
                                  load_run(base).params["blocks"][0]["attn"]["qkv"]["kernel"])
    layer = run.model.blocks[0].attn.qkv
    tokens = jnp.asarray(run.tokenizer.encode("ROMEO: what light"))[None]
    evaluated = run.model(tokens)[0]
    assert layer.lora_dropout == 0.5
    for layer in lora.linear_paths(run.model).values():
        layer.lora_dropout = 0.0
    np.testing.assert_array_equal(run.model(tokens)[0], evaluated)  # opening a run for eval never drops


def test_merged_run_has_the_adapted_logits(runs, tmp_path):
    _, adapted, _, _ = runs
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "lora", "merge", str(adapted), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    merged, lora_run = load_run(out), load_run(adapted)
    assert config_lib.load_run_config(out).lora.rank == 0 and not Checkpointer(out / "checkpoints").steps() == []
    tokens = jnp.asarray(lora_run.tokenizer.encode("ROMEO: what light"))[None]
    np.testing.assert_allclose(merged.model(tokens)[0], lora_run.model(tokens)[0], rtol=1e-4, atol=1e-4)
    again = subprocess.run([sys.executable, "-m", "lmlab.cli", "lora", "merge", str(out), "--out", str(tmp_path / "x")],
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 1 and "is not a LoRA run" in again.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("extra, words", [
    (["--config.lora.targets=attention"], "lora.targets='attention' matches no dense layer"),
    (["--config.lora.targets=("], "config key 'lora.targets' must be a regular expression"),
    (["--config.lora.dropout=1.0"], "config key 'lora.dropout' must be in [0, 1); got 1.0"),
])
def test_bad_lora_settings_are_one_line(runs, tmp_path, extra, words):
    base = runs[0]
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *TINY,
                           f"--config.train.init_from={base}", "--config.lora.rank=2", *extra,
                           "--workdir", str(tmp_path / "run"), "--no-progress"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    assert words in proc.stderr.strip().splitlines()[-1] and not (tmp_path / "run").exists()


def test_lora_needs_a_base_run():
    with pytest.raises(config_lib.ConfigError, match="set train.init_from to the base run"):
        tiny(8, "--config.lora.rank=2")


def test_lora_dropout_needs_a_model_that_passes_keys_to_its_dense_layers():
    config = config_lib.load("configs/bert_shakespeare.py", ["model.n_layers=1", "model.d_model=16", "model.n_heads=2",
                                                             "model.n_kv_heads=2", "model.d_ff=32", "lora.rank=2",
                                                             "train.init_from=runs/bert", "lora.dropout=0.1"])
    with pytest.raises(config_lib.ConfigError, match="'lora.dropout' needs a model that passes dropout keys to its "
                                                     "dense layers .*; model.family is bert"):
        build_trained_model(config, 50)
