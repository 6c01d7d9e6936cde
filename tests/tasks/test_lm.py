"""The LM task's batches and held-out metrics: the single-corpus path unchanged, mixtures per source."""

import hashlib
import math

import jax
import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.tasks import get_task
from lmlab.tasks.lm import sample_windows

# sha256 of the first four training batches the default config (configs/gpt_shakespeare.py) draws from
# the synthetic stream below, computed with the code before mixtures existed (commit 26532e0): adding
# data.mixture must not move a single token of the main job's batches.
DEFAULT_BATCHES_SHA256 = "7c55656a9fbf3232d3a441f2cb62dfb12933da8fd1b4b3e784960979e270344e"


def test_the_default_configs_training_batches_are_unchanged():
    config = config_lib.load("configs/gpt_shakespeare.py")
    task = get_task(config)
    tokens = jax.numpy.asarray((np.arange(300_007) * 7919 % 2048).astype(np.uint16))
    sample = jax.jit(lambda arrays, key: task.sample_batch(arrays, key))
    digest = hashlib.sha256()
    for step in range(4):
        key = jax.random.fold_in(jax.random.key(config.seed), step)
        batch = np.asarray(sample({"tokens": tokens}, key))
        np.testing.assert_array_equal(batch, sample_windows(tokens, key, 8, 128))
        digest.update(batch.astype("<i4").tobytes())
    assert batch.shape == (8, 129)
    assert digest.hexdigest() == DEFAULT_BATCHES_SHA256


def _folder(root, n, text):
    root.mkdir()
    for i in range(n):
        (root / f"d{i}.txt").write_text(f"{text} {i}\n" * 30)
    return str(root)


def test_a_mixture_is_evaluated_per_source_and_as_the_weighted_mixture(tmp_path):
    a, b = _folder(tmp_path / "a", 10, "to be or not to be"), _folder(tmp_path / "b", 10, "def f(x): return x")
    small = ["--config.tokenizer.kind=char", "--config.data.seq_len=16", "--config.data.batch_size=4",
             "--config.model.n_layers=1", "--config.model.d_model=16", "--config.model.n_heads=2",
             "--config.model.n_kv_heads=2", "--config.model.d_ff=32", "--config.train.eval_batches=2"]
    config = config_lib.load("configs/gpt_shakespeare.py", [*small, f"--config.data.mixture={a}:0.8,{b}:0.2"])
    task = get_task(config)
    data = task.prepare(tmp_path / "run")
    assert set(data.train) == {"tokens", "source_starts", "source_lengths"}
    batch = np.asarray(task.sample_batch(jax.tree.map(jax.numpy.asarray, data.train), jax.random.key(1)))
    assert batch.shape == (4, 17)
    model = build_model(config.model, data.tokenizer.vocab_size, seed=0)
    graphdef, params = nnx.split(model)
    params = nnx.to_pure_dict(params)
    got = task.make_evaluator(graphdef, data)(params, full=True)

    single = config_lib.load("configs/gpt_shakespeare.py", [*small, f"--config.data.corpus={a}"])
    alone = {label: get_task(single).make_evaluator(graphdef, type(data)(data.tokenizer, {}, tokens))(params, full=True)
             for label, tokens in data.val.items()}
    assert got["val_bpb/a"] == alone["a"]["val_bpb"] and got["val_loss/b"] == alone["b"]["val_loss"]
    assert got["val_loss"] == pytest.approx(0.8 * alone["a"]["val_loss"] + 0.2 * alone["b"]["val_loss"])
    assert got["val_ppl"] == pytest.approx(math.exp(got["val_loss"]))


def test_loader_host_keeps_each_source_memory_mapped_and_auto_keeps_small_data_on_device(tmp_path):
    a, b = _folder(tmp_path / "a", 10, "to be or not to be"), _folder(tmp_path / "b", 10, "def f(x): return x")
    small = ["--config.tokenizer.kind=char", "--config.data.seq_len=16", f"--config.data.mixture={a}:0.8,{b}:0.2"]
    host = get_task(config_lib.load("configs/gpt_shakespeare.py", [*small, "--config.data.loader=host"]))
    data = host.prepare(tmp_path / "run")
    assert data.train == {}
    maps = data.extra["host_sources"]
    assert [type(m) for m in maps] == [np.memmap, np.memmap]
    assert [str(m.filename) for m in maps] == [str(tmp_path / "run" / "data" / f"train.{label}.bin") for label in "ab"]
    auto = get_task(config_lib.load("configs/gpt_shakespeare.py", small)).prepare(tmp_path / "run")
    assert "host_sources" not in auto.extra
    assert len(auto.train["tokens"]) == sum(len(m) for m in maps)  # the same files, end to end on device
