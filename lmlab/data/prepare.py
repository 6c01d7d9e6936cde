"""Corpus -> tokenizer -> token files, once per run directory.

The tokenizer is trained on the training split only (held-out plays stay unseen) and stored in
`<run>/tokenizer`; token ids go to `<run>/data/{train,val}.bin`, read back by memory map.
Documents are separated by the end-of-text id, which decodes to no bytes.
"""

from __future__ import annotations

import logging
import pathlib
import shutil
import time
from dataclasses import dataclass

import numpy as np

from lmlab.config import ConfigError
from lmlab.data.corpora import get_corpus
from lmlab.data.token_file import metadata_path, read_token_file, write_token_file
from lmlab.tokenizers import Tokenizer, load_tokenizer, train_tokenizer

log = logging.getLogger("lmlab")


def tokenizer_sources(config) -> dict[str, pathlib.Path]:
    """{config key: run directory} of the runs whose token ids this run must share: the run it
    starts from (train.init_from) and a distillation teacher (distill.teacher)."""
    keys = {"train.init_from": config.train.get("init_from")}
    if "distill" in config:
        keys["distill.teacher"] = config.distill.get("teacher")
    return {key: pathlib.Path(value) for key, value in keys.items() if value}


def same_files(dir_a: pathlib.Path, dir_b: pathlib.Path) -> bool:
    """Whether two tokenizer directories hold the same files, byte for byte."""
    names_a = sorted(p.relative_to(dir_a) for p in dir_a.rglob("*") if p.is_file())
    names_b = sorted(p.relative_to(dir_b) for p in dir_b.rglob("*") if p.is_file())
    return names_a == names_b and all((dir_a / n).read_bytes() == (dir_b / n).read_bytes() for n in names_a)


def copy_init_tokenizers(config, run_dir: pathlib.Path, names=("tokenizer",)) -> None:
    """Fine-tuning (train.init_from) and distillation (distill.teacher): a new run takes the source
    run's tokenizer directories, so token ids mean what they meant when its parameters were
    trained. Two sources must agree. A tokenizer the run already has is kept (a resume, or a
    prepared run)."""
    sources = tokenizer_sources(config)
    run_dir = pathlib.Path(run_dir)
    for name in names:
        present = [(key, source) for key, source in sources.items() if (source / name / "tokenizer.json").exists()]
        for key, source in sources.items():
            if (source, name) not in {(s, name) for _, s in present}:
                raise ConfigError(f"{key}={source} is not a trained run (no {name}/tokenizer.json); "
                                  "train or import it first")
        for (key_a, a), (key_b, b) in zip(present, present[1:]):
            if not same_files(a / name, b / name):
                raise ConfigError(f"{key_a}={a} and {key_b}={b} have different tokenizers; their token ids "
                                  "mean different things, so one run cannot use both")
        if (run_dir / name / "tokenizer.json").exists() or not present:
            continue
        key, source = present[0]
        shutil.copytree(source / name, run_dir / name, dirs_exist_ok=True)
        log.info("%s copied from %s (%s)", name, source, key)


@dataclass
class PreparedData:
    tokenizer: Tokenizer
    train_tokens: np.ndarray
    val_tokens: np.ndarray


def encode_docs(tokenizer: Tokenizer, docs) -> np.ndarray:
    pieces = []
    for doc in docs:
        pieces.append(np.asarray(tokenizer.encode(doc), np.int32))
        pieces.append(np.asarray([tokenizer.eos_id], np.int32))
    return np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)


def _read_ids(path: pathlib.Path, tokenizer: Tokenizer) -> np.ndarray:
    """A prepared token file, checked against the run's tokenizer: a file overwritten with other
    data of the same length would otherwise index past the embedding table without an error."""
    tokens = read_token_file(path)
    if len(tokens) and int(tokens.max()) >= tokenizer.vocab_size:
        raise ValueError(f"{path}: token id {int(tokens.max())} is outside the tokenizer's vocabulary "
                         f"({tokenizer.vocab_size} ids); the file is corrupt (delete {path.parent} to rebuild it)")
    return tokens


def prepare_heldout(config, run_dir: pathlib.Path) -> PreparedData:
    """The run's tokenizer and held-out ids only (train_tokens empty), for evaluating a run: the
    training split, which can be large (an imported model on a big corpus), is not tokenized.
    A later `prepare` of the run (training it further) writes both files."""
    run_dir = pathlib.Path(run_dir)
    val_path = run_dir / "data" / "val.bin"
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    if not (val_path.exists() and metadata_path(val_path).exists()):
        t0 = time.time()
        corpus = get_corpus(config.data.corpus)
        val_path.parent.mkdir(parents=True, exist_ok=True)
        write_token_file(val_path, encode_docs(tokenizer, corpus.val_docs), vocab_size=tokenizer.vocab_size)
        log.info("corpus %s: %d held-out docs (%.1f MB) tokenized [%.1fs]", corpus.name, len(corpus.val_docs),
                 len(corpus.val_text) / 1e6, time.time() - t0)
    return PreparedData(tokenizer, np.zeros((0,), np.int32), _read_ids(val_path, tokenizer))


def prepare(config, run_dir: pathlib.Path) -> PreparedData:
    run_dir = pathlib.Path(run_dir)
    tok_dir, data_dir = run_dir / "tokenizer", run_dir / "data"
    train_path, val_path = data_dir / "train.bin", data_dir / "val.bin"
    done = [tok_dir / "tokenizer.json", train_path, val_path, metadata_path(train_path), metadata_path(val_path)]
    if all(path.exists() for path in done):
        tokenizer = load_tokenizer(tok_dir)
        return PreparedData(tokenizer, _read_ids(train_path, tokenizer), _read_ids(val_path, tokenizer))

    copy_init_tokenizers(config, run_dir)
    t0 = time.time()
    corpus = get_corpus(config.data.corpus)
    log.info("corpus %s: %d train docs (%.1f MB), %d held-out docs (%.1f MB) [%.1fs]", corpus.name,
             len(corpus.train_docs), len(corpus.train_text) / 1e6, len(corpus.val_docs),
             len(corpus.val_text) / 1e6, time.time() - t0)
    t0 = time.time()
    if (tok_dir / "tokenizer.json").exists():  # an imported model's, or the init_from run's
        tokenizer = load_tokenizer(tok_dir)
    else:
        tokenizer = train_tokenizer(config.tokenizer.kind, corpus.train_text, vocab_size=config.tokenizer.vocab_size,
                                    special_tokens=tuple(config.tokenizer.special_tokens), out_dir=tok_dir)
    log.info("tokenizer %s: vocab %d [%.1fs]", tokenizer.kind, tokenizer.vocab_size, time.time() - t0)
    t0 = time.time()
    data_dir.mkdir(parents=True, exist_ok=True)
    write_token_file(train_path, encode_docs(tokenizer, corpus.train_docs), vocab_size=tokenizer.vocab_size)
    write_token_file(val_path, encode_docs(tokenizer, corpus.val_docs), vocab_size=tokenizer.vocab_size)
    train_tokens, val_tokens = read_token_file(train_path), read_token_file(val_path)
    log.info("tokens: %d train, %d held-out (%.2f bytes/token) [%.1fs]", len(train_tokens), len(val_tokens),
             len(corpus.train_text.encode()) / max(len(train_tokens), 1), time.time() - t0)
    return PreparedData(tokenizer, train_tokens, val_tokens)
