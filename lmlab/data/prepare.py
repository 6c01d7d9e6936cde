"""Corpus -> tokenizer -> token files, once per run directory (`lmlab prepare`, or the first `train`).

The tokenizer is trained on the training split only (held-out plays stay unseen) and stored in
`<run>/tokenizer`; token ids go to `<run>/data/{train,val}.bin` (a mixture: `{train,val}.<label>.bin`
per source, lmlab.data.mixture), read back by memory map, and `<run>/data/manifest.json` records
documents, bytes, tokens and hashes per split. Documents are separated by the end-of-text id, which
decodes to no bytes. Documents are tokenized on every core (lmlab.data.encode). A failure (a bad
file, a corpus shorter than one window) leaves no tokenizer or token file of this call behind.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import pathlib
import shutil
import sys
import time
from dataclasses import dataclass

import numpy as np

from lmlab.config import ConfigError
from lmlab.data.corpora import DOC_SEPARATOR, Corpus, get_corpus
from lmlab.data.encode import encode_docs
from lmlab.data.filters import FilterCounts, filter_corpus
from lmlab.data.mixture import parse_mixture
from lmlab.data.token_file import max_token, metadata_path, read_token_file, write_token_file
from lmlab.files import atomic_write
from lmlab.tokenizers import Tokenizer, load_tokenizer, train_tokenizer

log = logging.getLogger("lmlab")


def tokenizer_sources(config) -> dict[str, pathlib.Path]:
    """{config key: run directory} of the runs whose token ids this run must share: the run it
    starts from (train.init_from) and a distillation teacher (distill.teacher, or the offline cache
    of one, distill.cache, which holds the teacher's tokenizer directory as a run does)."""
    keys = {"train.init_from": config.train.get("init_from")}
    if "distill" in config:
        keys["distill.teacher"] = config.distill.get("teacher")
        keys["distill.cache"] = config.distill.get("cache")
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
    """Token ids of the splits: arrays, or for a mixture {label: array} in the mixture's order."""
    tokenizer: Tokenizer
    train_tokens: np.ndarray | dict[str, np.ndarray]
    val_tokens: np.ndarray | dict[str, np.ndarray]


MANIFEST = "manifest.json"


def corpus_sources(data_config) -> dict[str, str]:
    """{label: corpus} of the run's data: a mixture's sources, or {"": data.corpus}."""
    mixture = data_config.get("mixture", "")
    if mixture:
        return {label: spec for label, (spec, _) in parse_mixture(mixture).items()}
    return {"": data_config.corpus}


def token_paths(data_dir: pathlib.Path, label: str) -> tuple[pathlib.Path, pathlib.Path]:
    suffix = f".{label}" if label else ""
    return data_dir / f"train{suffix}.bin", data_dir / f"val{suffix}.bin"


def _utf8_bytes(docs) -> int:
    return sum(len(doc.encode("utf-8")) for doc in docs)


def load_corpus(spec: str, data_config) -> tuple[Corpus, FilterCounts]:
    """The corpus `spec` names, through the data.* filters (and what they removed), its split logged."""
    t0 = time.time()
    corpus, counts = filter_corpus(get_corpus(spec), dedupe=bool(data_config.get("dedupe", False)),
                                   min_chars=int(data_config.get("min_chars", 0)),
                                   min_printable=float(data_config.get("min_printable", 0.0)))
    if counts:
        log.info("corpus %s: filters removed %d duplicate(s), %d shorter than data.min_chars, %d below "
                 "data.min_printable", corpus.name, counts.duplicates, counts.too_short, counts.not_printable)
    log.info("corpus %s: %d train docs (%s bytes), %d held-out docs (%s bytes) [%.1fs]", corpus.name,
             len(corpus.train_docs), f"{_utf8_bytes(corpus.train_docs):,}", len(corpus.val_docs),
             f"{_utf8_bytes(corpus.val_docs):,}", time.time() - t0)
    return corpus, counts


def _read_ids(path: pathlib.Path, tokenizer: Tokenizer) -> np.ndarray:
    """A prepared token file, checked against the run's tokenizer: a file overwritten with other
    data of the same length would otherwise index past the embedding table without an error."""
    tokens = read_token_file(path)
    top = max_token(tokens)  # piecewise: the file may be larger than memory
    if top >= tokenizer.vocab_size:
        raise ValueError(f"{path}: token id {top} is outside the tokenizer's vocabulary "
                         f"({tokenizer.vocab_size} ids); the file is corrupt (delete {path.parent} to rebuild it)")
    return tokens


def _done(path: pathlib.Path) -> bool:
    return path.exists() and metadata_path(path).exists()


def _unpack(sources: dict[str, str], by_label: dict[str, np.ndarray]):
    """A single corpus's array as it is; a mixture's as {label: array}."""
    return by_label[""] if list(sources) == [""] else by_label


@contextlib.contextmanager
def _removed_on_error(paths: list[pathlib.Path]):
    """Removes those of `paths` that did not exist before, if the block fails: a failed prepare
    leaves nothing half-made for the next one to trust."""
    new = [path for path in paths if not path.exists()]
    try:
        yield
    except BaseException:
        for path in new:
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        raise


def prepare_heldout(config, run_dir: pathlib.Path) -> PreparedData:
    """The run's tokenizer and held-out ids only (train_tokens empty), for evaluating a run: the
    training split, which can be large (an imported model on a big corpus), is not tokenized.
    A later `prepare` of the run (training it further) writes both files."""
    run_dir = pathlib.Path(run_dir)
    tokenizer = load_tokenizer(run_dir / "tokenizer")
    sources, val = corpus_sources(config.data), {}
    for label, spec in sources.items():
        val_path = token_paths(run_dir / "data", label)[1]
        if not _done(val_path):
            ids, _ = heldout_ids(spec, config.data, tokenizer, run_dir / "tokenizer", desc=f"{label or spec} val")
            with _removed_on_error([val_path, metadata_path(val_path)]):
                write_token_file(val_path, ids, vocab_size=tokenizer.vocab_size)
        val[label] = _read_ids(val_path, tokenizer)
    return PreparedData(tokenizer, np.zeros((0,), np.int32), _unpack(sources, val))


def heldout_ids(spec: str, data_config, tokenizer: Tokenizer, tokenizer_dir: pathlib.Path, *,
                desc: str = "") -> tuple[np.ndarray, Corpus]:
    """The held-out split of corpus `spec` (the documents every run on it holds out, through the
    data.* filters of `data_config`) as `tokenizer`'s ids, documents joined as `prepare` joins them;
    and the corpus. Nothing is written."""
    t0 = time.time()
    corpus, _ = load_corpus(spec, data_config)
    ids = encode_docs(tokenizer, corpus.val_docs, tokenizer_dir=tokenizer_dir, desc=desc or f"{spec} val")
    log.info("corpus %s: held-out split tokenized [%.1fs]", corpus.name, time.time() - t0)
    return np.asarray(ids), corpus


def prepare(config, run_dir: pathlib.Path, *, min_train_tokens: int = 0) -> PreparedData:
    """Tokenizer and token files of the run (made once; later calls read them back). Every
    source's training split must have at least `min_train_tokens` tokens (the task's window)."""
    run_dir = pathlib.Path(run_dir)
    tok_dir, data_dir = run_dir / "tokenizer", run_dir / "data"
    sources = corpus_sources(config.data) if config is not None else {"": ""}  # None: read back a prepared run
    paths = {label: token_paths(data_dir, label) for label in sources}
    if (tok_dir / "tokenizer.json").exists() and all(_done(p) for pair in paths.values() for p in pair):
        tokenizer = load_tokenizer(tok_dir)
        return PreparedData(tokenizer, _unpack(sources, {k: _read_ids(p[0], tokenizer) for k, p in paths.items()}),
                            _unpack(sources, {k: _read_ids(p[1], tokenizer) for k, p in paths.items()}))
    written = [tok_dir, data_dir, data_dir / MANIFEST] + [f for pair in paths.values() for p in pair for f in (p, metadata_path(p))]
    with _removed_on_error(written):
        return _prepare_files(config, run_dir, sources, paths, min_train_tokens)


def _prepare_files(config, run_dir, sources, paths, min_train_tokens) -> PreparedData:
    tok_dir = run_dir / "tokenizer"
    copy_init_tokenizers(config, run_dir)
    loaded = {label: load_corpus(spec, config.data) for label, spec in sources.items()}
    corpora = {label: corpus for label, (corpus, _) in loaded.items()}
    t0 = time.time()
    if (tok_dir / "tokenizer.json").exists():  # an imported model's, or the init_from run's
        tokenizer = load_tokenizer(tok_dir)
    else:
        text = DOC_SEPARATOR.join(corpus.train_text for corpus in corpora.values())
        tokenizer = train_tokenizer(config.tokenizer.kind, text, vocab_size=config.tokenizer.vocab_size,
                                    special_tokens=tuple(config.tokenizer.special_tokens), out_dir=tok_dir)
    log.info("tokenizer %s: vocab %d [%.1fs]", tokenizer.kind, tokenizer.vocab_size, time.time() - t0)
    t0 = time.time()
    ids = {(label, split): encode_docs(tokenizer, getattr(corpus, f"{split}_docs"), tokenizer_dir=tok_dir,
                                       desc=f"{label or corpus.name} {split}")
           for label, corpus in corpora.items() for split in ("train", "val")}
    for label, corpus in corpora.items():
        n = len(ids[label, "train"])
        if n < min_train_tokens:
            raise ValueError(f"corpus {corpus.name}: its training split has {n} tokens, fewer than one training "
                             f"window needs ({min_train_tokens}: data.seq_len + 2); add text or lower data.seq_len")
    for (label, split), split_ids in ids.items():
        write_token_file(paths[label][split == "val"], split_ids, vocab_size=tokenizer.vocab_size)
    train = {label: read_token_file(paths[label][0]) for label in sources}
    val = {label: read_token_file(paths[label][1]) for label in sources}
    n_train, n_bytes = sum(map(len, train.values())), sum(_utf8_bytes(c.train_docs) for c in corpora.values())
    log.info("tokens: %d train, %d held-out (%.2f bytes/token) [%.1fs]", n_train, sum(map(len, val.values())),
             n_bytes / max(n_train, 1), time.time() - t0)
    write_manifest(run_dir, config, tokenizer, loaded, paths)
    return PreparedData(tokenizer, _unpack(sources, train), _unpack(sources, val))


def _text_sha256(docs) -> str:
    digest = hashlib.sha256()
    for doc in docs:
        digest.update(hashlib.sha256(doc.encode("utf-8")).digest())
    return digest.hexdigest()


def _tokenizer_sha256(tok_dir: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in tok_dir.rglob("*") if p.is_file()):
        digest.update(path.relative_to(tok_dir).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def write_manifest(run_dir: pathlib.Path, config, tokenizer: Tokenizer,
                   corpora: dict[str, tuple[Corpus, FilterCounts]], paths) -> dict:
    """`<run>/data/manifest.json`: per source, the documents the filters removed, and per split,
    documents, UTF-8 bytes, tokens, the token file's sha256 and a sha256 of the documents' text
    (the same text gives the same hash)."""
    d = config.data
    sources = []
    for label, (corpus, removed) in corpora.items():
        entry = {"label": label, "corpus": corpus.name, "removed": dataclasses.asdict(removed)}
        for split, path in zip(("train", "val"), paths[label]):
            docs = getattr(corpus, f"{split}_docs")
            meta = json.loads(metadata_path(path).read_text())
            entry[split] = {"documents": len(docs), "bytes": _utf8_bytes(docs), "tokens": meta["n_tokens"],
                            "file": path.name, "sha256": meta["sha256"], "text_sha256": _text_sha256(docs)}
        sources.append(entry)
    manifest = {
        "corpus": d.get("mixture", "") or d.corpus,
        "python": sys.version.split()[0],  # python_stdlib depends on it
        "filters": {"dedupe": bool(d.get("dedupe", False)), "min_chars": int(d.get("min_chars", 0)),
                    "min_printable": float(d.get("min_printable", 0.0))},
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size,
                      "sha256": _tokenizer_sha256(run_dir / "tokenizer")},
        "sources": sources,
    }
    with atomic_write(run_dir / "data" / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    return manifest
