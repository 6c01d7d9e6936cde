"""Documents -> one token stream, each document followed by the end-of-text id, on every core.

Workers are separate processes (started fresh, not forked: the trainer has JAX's threads running
by then) that each load the tokenizer from its directory and encode whole documents; results come
back in document order, so the stream is the same as a serial encode, id for id. Small inputs are
encoded in this process: starting workers costs more than it saves.

Fresh processes import the main module again, as Python's multiprocessing does: a script that
calls lmlab's preparation or training must keep its work under `if __name__ == "__main__":`. If
the workers cannot start, the documents are encoded in this process, with a warning.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import sys

import numpy as np
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from tqdm import tqdm

from lmlab.tokenizers import Tokenizer, load_tokenizer

log = logging.getLogger("lmlab")

# Below this, one process: on the 2-core machine 2 workers lost to one process up to ~10 MB of text
# and won 1.4x (sentencepiece) at 32 MB (docs/benchmarks.md); the main job's 4.3 MB stays serial.
PARALLEL_MIN_CHARS = 16_000_000
_worker_tokenizer: Tokenizer | None = None


def available_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _encode_one(tokenizer: Tokenizer, doc: str) -> np.ndarray:
    return np.asarray([*tokenizer.encode(doc), tokenizer.eos_id], np.int32)


def _init_worker(tokenizer_dir: str) -> None:
    global _worker_tokenizer
    _worker_tokenizer = load_tokenizer(tokenizer_dir)


def _encode_in_worker(doc: str) -> np.ndarray:
    return _encode_one(_worker_tokenizer, doc)


def _bar(docs, desc: str | None):
    return tqdm(total=sum(map(len, docs)), desc=desc, unit="char", unit_scale=True, file=sys.stderr,
                disable=None if desc else True, mininterval=0.5, dynamic_ncols=True)


def _encode_serially(tokenizer: Tokenizer, docs: list[str], bar) -> list[np.ndarray]:
    pieces = []
    for doc in docs:
        pieces.append(_encode_one(tokenizer, doc))
        bar.update(len(doc))
    return pieces


def _encode_in_workers(tokenizer_dir, docs: list[str], workers: int, bar) -> list[np.ndarray]:
    pieces = []
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(str(tokenizer_dir),)) as pool:
        chunk = max(1, min(64, len(docs) // (8 * workers)))
        for doc, ids in zip(docs, pool.map(_encode_in_worker, docs, chunksize=chunk)):
            pieces.append(ids)
            bar.update(len(doc))
    return pieces


def encode_docs(tokenizer: Tokenizer, docs, *, tokenizer_dir: str | pathlib.Path | None = None, workers: int = 0,
                desc: str | None = None) -> np.ndarray:
    """The documents' ids, each followed by eos. With `tokenizer_dir` (where `tokenizer` was saved)
    and enough text, `workers` processes (0: every core) encode them; `desc` labels the progress bar
    on stderr (none without it, or when stderr is not a terminal)."""
    docs = list(docs)
    workers = min(workers or available_cores(), len(docs))
    with _bar(docs, desc) as bar:
        if tokenizer_dir is None or workers < 2 or sum(map(len, docs)) < PARALLEL_MIN_CHARS:
            pieces = _encode_serially(tokenizer, docs, bar)
        else:
            try:
                pieces = _encode_in_workers(tokenizer_dir, docs, workers, bar)
            except BrokenProcessPool as e:
                log.warning("tokenizer worker processes failed (%s); encoding in this process instead (a script "
                            "that calls lmlab must guard its work with `if __name__ == \"__main__\":`)", e)
                bar.reset()
                pieces = _encode_serially(tokenizer, docs, bar)
    return np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)
