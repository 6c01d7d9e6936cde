"""train.init_from: a run starts from another run's parameters (fine-tuning, imported models)."""

import jax
import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab.runs import load_run
from lmlab.train import loop
from lmlab.train.init_from import load_init_params
from lmlab.train.state import init_state

TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char", "--config.data.seq_len=16",
    "--config.data.batch_size=2", "--config.model.n_layers=1", "--config.model.d_model=16",
    "--config.model.n_heads=2", "--config.model.n_kv_heads=2", "--config.model.d_ff=32",
    "--config.train.steps=4", "--config.train.steps_per_call=2", "--config.train.eval_every=4",
    "--config.train.checkpoint_every=4", "--config.train.eval_batches=1",
]


def tiny(*extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*TINY, *extra])


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("source")
    loop.train(tiny(), run_dir, progress=False)
    return run_dir


def test_init_from_copies_every_matching_parameter(source_run, tmp_path):
    source = load_run(source_run)
    _, _, _, state = init_state(tiny(), source.tokenizer.vocab_size)
    fresh = jax.tree.leaves(state["params"])
    state = load_init_params(state, source_run)
    for got, want in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(source.params)):
        np.testing.assert_array_equal(got, want)
    assert any(not np.array_equal(a, b) for a, b in zip(fresh, jax.tree.leaves(source.params)))


def test_fine_tuning_run_starts_from_the_source_parameters(source_run, tmp_path):
    """A whole run with train.init_from: its first loss is the source model's loss, not a fresh one's."""
    run_dir = tmp_path / "ft"
    loop.train(tiny(f"--config.train.init_from={source_run}", "--config.train.learning_rate=1e-9",
                    "--config.train.warmup_steps=0"), run_dir, progress=False)
    tuned, source = load_run(run_dir), load_run(source_run)
    for got, want in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(source.params)):
        np.testing.assert_allclose(got, want, atol=1e-6)  # lr ~ 0: still the source's weights


def test_fine_tuning_on_another_corpus_keeps_the_source_tokenizer(source_run, tmp_path):
    """The ids the source parameters were trained on must keep their meaning: the new run takes
    the source's tokenizer instead of training one on its own corpus (which would give the same
    vocabulary size and different ids, with no error)."""
    run_dir = tmp_path / "other_corpus"
    loop.train(tiny(f"--config.train.init_from={source_run}", "--config.data.corpus=shakespeare",
                    "--config.train.steps=2", "--config.train.eval_every=2", "--config.train.checkpoint_every=2"),
               run_dir, progress=False)
    assert (run_dir / "tokenizer" / "tokenizer.json").read_bytes() == \
        (source_run / "tokenizer" / "tokenizer.json").read_bytes()
    text = "ROMEO: what light"
    assert load_run(run_dir).tokenizer.encode(text) == load_run(source_run).tokenizer.encode(text)


def test_init_from_a_directory_without_a_tokenizer_is_a_config_error(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="not a trained run"):
        loop.train(tiny(f"--config.train.init_from={tmp_path}"), tmp_path / "new", progress=False)
    assert not (tmp_path / "new").exists()  # the failed start left nothing behind


def test_init_from_with_a_different_shape_is_a_config_error(source_run):
    source = load_run(source_run)
    _, _, _, state = init_state(tiny("--config.model.d_model=32"), source.tokenizer.vocab_size)
    with pytest.raises(config_lib.ConfigError, match="shape"):
        load_init_params(state, source_run)


def test_init_from_log_names_fresh_parameters_only_when_there_are_some(source_run, caplog):
    vocab = load_run(source_run).tokenizer.vocab_size
    with caplog.at_level("INFO", logger="lmlab"):
        load_init_params(init_state(tiny(), vocab)[3], source_run)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("initialised")]
    assert "fresh" not in line  # was "...; 0 fresh: " with nothing after it
    caplog.clear()
    with caplog.at_level("INFO", logger="lmlab"):
        load_init_params(init_state(tiny("--config.model.positions=learned"), vocab)[3], source_run)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("initialised")]
    assert "; 1 fresh: pos_embed" in line
