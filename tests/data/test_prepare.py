"""prepare_heldout: a trained run's held-out ids without tokenizing its training split."""

import json
import shutil

import numpy as np
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab.data import get_corpus
from lmlab.data.prepare import prepare, prepare_heldout
from lmlab.data.token_file import read_token_metadata
from lmlab.runs import load_run
from lmlab.tasks import get_task
from tests.tiny_runs import BERT, GPT, write_tiny_run


@pytest.mark.parametrize("kind", [GPT, BERT], ids=["lm", "mlm"])
def test_heldout_only_preparation_evaluates_like_the_full_one(tmp_path, kind):
    run_dir = write_tiny_run(tmp_path / "run", kind)
    run = load_run(run_dir)
    task = get_task(run.config)
    graphdef, _ = nnx.split(run.model)
    heldout = task.prepare_heldout(run_dir)
    assert (run_dir / "data" / "val.bin").exists() and not (run_dir / "data" / "train.bin").exists()
    assert len(heldout.train) == 0
    got = task.make_evaluator(graphdef, heldout)(run.params, full=True)

    full_dir = tmp_path / "full"
    shutil.copytree(run_dir, full_dir, ignore=shutil.ignore_patterns("data"))
    full_task = get_task(run.config)
    want = full_task.make_evaluator(graphdef, full_task.prepare(full_dir))(run.params, full=True)
    assert got == want
    np.testing.assert_array_equal(prepare_heldout(run.config, run_dir).val_tokens,
                                  prepare(run.config, full_dir).val_tokens)
    assert (full_dir / "data" / "train.bin").exists()


# --- a user's own files, mixtures, filters, manifest ------------------------------------------

CHAR = ["--config.tokenizer.kind=char", "--config.data.seq_len=16"]


def text_folder(root, n=12, repeat=20):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (root / f"doc{i:02d}.txt").write_text(f"line {i} of a text\n" * repeat)
    return root


def load(*overrides):
    return config_lib.load("configs/gpt_shakespeare.py", [*CHAR, *overrides])


def test_a_folder_is_prepared_with_a_manifest_that_matches_the_files(tmp_path):
    folder = text_folder(tmp_path / "docs")
    data = get_task(load(f"--config.data.corpus={folder}")).prepare(tmp_path / "run")
    manifest = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())
    (source,) = manifest["sources"]
    corpus = get_corpus(str(folder))
    for split, tokens, docs in (("train", data.train["tokens"], corpus.train_docs), ("val", data.val, corpus.val_docs)):
        meta = read_token_metadata(tmp_path / "run" / "data" / f"{split}.bin")
        assert source[split]["documents"] == len(docs) and source[split]["tokens"] == len(tokens) == meta["n_tokens"]
        assert source[split]["bytes"] == sum(len(d.encode()) for d in docs)
        assert source[split]["sha256"] == meta["sha256"]
        assert len(tokens) == sum(len(d) for d in docs) + len(docs)  # char tokenizer: a char each, plus eos
    assert manifest["tokenizer"]["vocab_size"] == data.tokenizer.vocab_size
    assert source["removed"] == {"duplicates": 0, "too_short": 0, "not_printable": 0}


def test_dedupe_and_filters_are_applied_and_counted_in_the_manifest(tmp_path):
    folder = text_folder(tmp_path / "docs")
    (folder / "copy.txt").write_text((folder / "doc03.txt").read_text())
    (folder / "short.txt").write_text("hi\n")
    get_task(load(f"--config.data.corpus={folder}", "--config.data.dedupe=true", "--config.data.min_chars=10")
             ).prepare(tmp_path / "run")
    (source,) = json.loads((tmp_path / "run" / "data" / "manifest.json").read_text())["sources"]
    assert source["removed"] == {"duplicates": 1, "too_short": 1, "not_printable": 0}
    assert source["train"]["documents"] + source["val"]["documents"] == 12


def test_a_corpus_shorter_than_one_window_fails_and_leaves_nothing(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for name in ("a.txt", "b.txt"):
        (folder / name).write_text("tiny\n")
    run = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"corpus {folder}: its training split has 6 tokens, fewer than one"):
        get_task(load(f"--config.data.corpus={folder}")).prepare(run)
    assert not (run / "tokenizer").exists() and not (run / "data").exists()


def test_a_binary_file_fails_before_anything_is_written(tmp_path):
    folder = text_folder(tmp_path / "docs")
    (folder / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ValueError, match="img.png: not a text file"):
        get_task(load(f"--config.data.corpus={folder}")).prepare(tmp_path / "run")
    assert not (tmp_path / "run" / "tokenizer").exists() and not (tmp_path / "run" / "data").exists()


def test_a_mixture_writes_one_pair_of_files_per_source_and_heldout_reads_them_back(tmp_path):
    a, b = text_folder(tmp_path / "a"), text_folder(tmp_path / "b", n=6, repeat=40)
    config = load(f"--config.data.mixture=first={a}:3,{b}:1")
    data = prepare(config, tmp_path / "run", min_train_tokens=18)
    assert list(data.train_tokens) == list(data.val_tokens) == ["first", "b"]
    files = sorted(p.name for p in (tmp_path / "run" / "data").glob("*.bin"))
    assert files == ["train.b.bin", "train.first.bin", "val.b.bin", "val.first.bin"]
    heldout = prepare_heldout(config, tmp_path / "run")
    for label in ("first", "b"):
        np.testing.assert_array_equal(heldout.val_tokens[label], data.val_tokens[label])
    ids = [int(t) for t in data.train_tokens["b"] if t != data.tokenizer.eos_id]
    assert data.tokenizer.decode(ids) == "".join(get_corpus(str(b)).train_docs)
    shutil.rmtree(tmp_path / "run" / "data")
    again = prepare_heldout(config, tmp_path / "run")  # rebuilt, only the held-out files
    np.testing.assert_array_equal(again.val_tokens["b"], data.val_tokens["b"])
    assert not (tmp_path / "run" / "data" / "train.b.bin").exists()


def test_a_failure_while_writing_removes_the_files_already_written(tmp_path, monkeypatch):
    from lmlab.data import prepare as prepare_module

    real, calls = prepare_module.write_token_file, []

    def fails_on_the_second(path, ids, *, vocab_size):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(f"{path}: No space left on device")
        real(path, ids, vocab_size=vocab_size)

    monkeypatch.setattr(prepare_module, "write_token_file", fails_on_the_second)
    folder = text_folder(tmp_path / "docs")
    with pytest.raises(OSError, match="No space left"):
        get_task(load(f"--config.data.corpus={folder}")).prepare(tmp_path / "run")
    assert (tmp_path / "run").exists() is False or not any((tmp_path / "run").iterdir())
    assert len(calls) == 2 and calls[0].name == "train.bin"
