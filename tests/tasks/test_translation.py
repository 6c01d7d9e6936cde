"""The translation task: data layout, masked teacher-forced loss, and a tiny end-to-end run."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import cli
from lmlab import config as config_lib
from lmlab.data.wheels import WheelUnavailableError
from lmlab.models import build_model
from lmlab.tasks import get_task
from lmlab.tasks.translation import TranslationTask, encode_pairs, pack_rows, teacher_forced_losses
from lmlab.train import loop

TINY = [
    "data.corpus=jupyterlab_en_fr_tiny", "data.batch_size=8", "data.src_len=24", "data.tgt_len=24",
    "tokenizer.vocab_size=400", "model.n_encoder_layers=1", "model.n_layers=1", "model.d_model=32",
    "model.n_heads=2", "model.n_kv_heads=2", "model.d_ff=64", "model.max_len=32", "train.steps=10",
    "train.steps_per_call=5", "train.eval_every=10", "train.checkpoint_every=10", "train.warmup_steps=2",
    "sample.beam_size=2",
]


def tiny_config(*extra):
    return config_lib.load("configs/translate_en_fr.py", [*TINY, *extra])


class Words:
    """A stand-in tokenizer: one id per word (ids 0-2 are pad, bos, eos, as in lmlab's)."""
    pad_id, bos_id, eos_id = 0, 1, 2

    def encode(self, text):
        return [3 + len(w) for w in text.split()]


def test_encode_pairs_layout_and_length_limits():
    pairs = [("a bb", "ccc"), ("a b c d e f", "x"), ("a", "y y y y y y")]
    src, tgt, kept = encode_pairs(Words(), Words(), pairs, 5, 5, drop_long=True)
    assert kept == [0]  # the other two do not fit (source + eos > 5, bos + target + eos > 5)
    np.testing.assert_array_equal(src, [[4, 5, 2, 0, 0]])      # x + eos, padded
    np.testing.assert_array_equal(tgt, [[1, 6, 2, 0, 0]])      # bos + y + eos, padded
    src, tgt, kept = encode_pairs(Words(), Words(), pairs, 5, 5, drop_long=False)
    assert kept == [0, 1, 2]  # evaluation keeps every pair, truncated, still ending in eos
    np.testing.assert_array_equal(src[1], [4, 4, 4, 4, 2])
    np.testing.assert_array_equal(tgt[2], [1, 4, 4, 4, 2])


def test_loss_masks_padding_and_packing_changes_only_the_layout():
    """Padded targets carry no loss, label smoothing changes only the objective, and packed rows
    (segment masks, per-pair positions) score exactly like one pair per row."""
    model = build_model(tiny_config().model, 50, seed=1)
    src = np.array([[5, 6, 7, 2, 0, 0, 0, 0], [8, 9, 2, 0, 0, 0, 0, 0], [10, 2, 0, 0, 0, 0, 0, 0]], np.int32)
    tgt = np.array([[1, 11, 12, 2, 0, 0, 0, 0], [1, 13, 2, 0, 0, 0, 0, 0], [1, 14, 15, 16, 2, 0, 0, 0]], np.int32)
    packed = pack_rows(src, tgt)
    assert len(packed["src"]) == 2  # 3 + 2 + 1 source / 4 + 3 + 5 target tokens: two rows of 8
    assert sorted(packed["src_seg"].max(axis=1).tolist()) == [1, 2]  # pairs per row
    loss = nnx.jit(lambda m, batch, ls: teacher_forced_losses(m, batch, label_smoothing=ls), static_argnums=2)
    as_device = lambda arrays: {k: jnp.asarray(v) for k, v in arrays.items()}  # noqa: E731
    objective, nll, n_tokens = loss(model, {"src": jnp.asarray(src), "tgt": jnp.asarray(tgt)}, 0.0)
    assert float(n_tokens) == 3 + 2 + 4 and float(objective) == pytest.approx(float(nll))
    np.testing.assert_allclose(loss(model, as_device(packed), 0.0), (objective, nll, n_tokens), rtol=1e-5)
    smoothed, nll_packed, _ = loss(model, as_device(packed), 0.1)
    np.testing.assert_allclose(nll_packed, nll, rtol=1e-5)
    assert float(smoothed) != pytest.approx(float(nll), rel=1e-4)  # mixes in cross-entropy to uniform


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("translate")
    try:
        summary = loop.train(tiny_config("model.shared_vocab=false"), run_dir, progress=False)
    except WheelUnavailableError as error:
        pytest.skip(str(error))
    return run_dir, summary


def test_tiny_run_writes_bleu_and_translates(tiny_run, capsys):
    run_dir, summary = tiny_run
    saved = json.loads((run_dir / "eval.json").read_text())
    for key in ("val_loss", "val_ppl", "test_loss", "bleu_greedy", "bleu_beam2", "bleu"):
        assert np.isfinite(saved[key]), key
    assert saved["bleu"] == saved["bleu_beam2"] and saved["test_pairs"] == 24 and saved["step"] == 10
    # Separate vocabularies: one BPE per language, both with exactly tokenizer.vocab_size ids.
    for name in ("tokenizer", "tokenizer_src"):
        assert json.loads((run_dir / name / "tokenizer.json").read_text())["vocab_size"] == 400
    data = TranslationTask(tiny_config("model.shared_vocab=false")).prepare(run_dir)  # reloaded, not rebuilt
    assert data.train["src"].shape[1] == 24 and np.all(data.train["tgt"][:, 0] == data.tokenizer.bos_id)
    assert data.train["src_seg"].max() > 1  # packed: several pairs per row
    assert data.extra["src_tokenizer"] is not data.tokenizer

    assert cli.main(["sample", str(run_dir), "--prompt", "Save the notebook", "--beam", "2", "--num-samples", "2"]) == 0
    out = capsys.readouterr().out.split("-" * 40)
    assert len(out) == 2  # the two best beams, each a (possibly empty) French string


def test_shared_vocabulary_prepare(tmp_path):
    config = tiny_config()
    try:
        data = get_task(config).prepare(tmp_path)
    except WheelUnavailableError as error:
        pytest.skip(str(error))
    assert not (tmp_path / "tokenizer_src").exists() and data.extra["src_tokenizer"] is data.tokenizer
    assert len(data.val["test"]["pairs"]) == 24 == len(data.val["test"]["src"])
    # Test sources are kept (truncated if needed); references are the untouched French strings.
    assert all(isinstance(t, str) and t for _, t in data.val["test"]["pairs"])
    batch = jax.jit(get_task(config).sample_batch)({k: jnp.asarray(v) for k, v in data.train.items()},
                                                   jax.random.key(0))
    assert batch["src"].shape == (8, 24) and batch["tgt"].shape == (8, 24)
