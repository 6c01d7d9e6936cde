"""Training windows read on the host from memory-mapped token files (`data.loader = "host"`).

For corpora larger than a device's (or the host's) memory: the token files stay on disk, mapped by
np.memmap (lmlab.data.token_file), and only the windows of each batch are read.

Determinism. The micro-batch at data position p (step x train.grad_accum + i, as on the device
path) is a pure function of (seed, p): a Philox generator keyed by the pair draws every row's
source (a mixture's weights) and start for the whole global batch, in every process. A process
then reads only its own rows (those its devices hold under the batch sharding, a contiguous
slice) and contributes them with `jax.make_array_from_process_local_data`. Any process count,
chunk size or resume therefore sees the same global batches: resuming at step s needs only s.

A background thread reads and places a few chunks ahead (a bounded queue); an error in it is
raised in the main thread as one HostLoaderError line naming the step, and `close` stops it.
"""

from __future__ import annotations

import queue
import threading
from typing import Sequence

import jax
import numpy as np

from lmlab.config import LOADERS
from lmlab.data.token_file import release_pages

# `auto` keeps the whole training token array on every device (lmlab.tasks.lm's on-device
# sampling) up to this size, a small share of any accelerator's memory: small corpora (the main
# job) keep the batches they always drew. On the 2-core CPU the two paths ran within noise of
# each other (docs/benchmarks.md); the host path adds a thread and a transfer per call.
AUTO_DEVICE_BYTES = 256 << 20


class HostLoaderError(OSError):
    """The loader thread failed (a read error, a corrupt file): one line, exit status 1 in the CLI."""


def choose_loader(setting: str, train_bytes: int) -> str:
    """"device" or "host" for data.loader `setting`; auto: device while the training tokens
    (all sources, as stored) take at most AUTO_DEVICE_BYTES."""
    if setting not in LOADERS:
        raise ValueError(f"data.loader must be one of {', '.join(LOADERS)}; got {setting!r}")
    if setting != "auto":
        return setting
    return "device" if train_bytes <= AUTO_DEVICE_BYTES else "host"


def window_starts(seed: int, position: int, batch: int, seq_len: int, lengths_S: Sequence[int],
                  weights_S: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """(source_B, start_B) of the global micro-batch at data `position`: each row's source drawn
    with probability `weights_S`, then a uniform start with a whole window of seq_len + 1 tokens
    inside that source. Philox keyed by (seed, position): independent streams per position."""
    key = np.asarray([seed % (1 << 64), position], np.uint64)
    rng = np.random.Generator(np.random.Philox(key=key))
    lengths_S = np.asarray(lengths_S, np.int64)
    if len(lengths_S) == 1:
        source_B = np.zeros(batch, np.int64)
    else:
        source_B = rng.choice(len(lengths_S), size=batch, p=np.asarray(weights_S, np.float64))
    start_B = rng.integers(0, lengths_S[source_B] - seq_len)
    return source_B, start_B


def read_windows(sources: Sequence[np.ndarray], source_B: np.ndarray, start_B: np.ndarray,
                 seq_len: int) -> np.ndarray:
    """[rows, seq_len + 1] int32 windows, each a slice of its source (a memmap reads just those pages)."""
    out_BT1 = np.empty((len(start_B), seq_len + 1), np.int32)
    for row, (source, start) in enumerate(zip(source_B, start_B)):
        out_BT1[row] = sources[source][start:start + seq_len + 1]
    return out_BT1


def read_chunk(sources: Sequence[np.ndarray], weights_S, *, seed: int, step: int, steps: int, accum: int, batch: int,
               seq_len: int, rows: slice) -> np.ndarray:
    """`rows` of the global micro-batches of steps step..step+steps-1, [steps, accum, rows, seq_len + 1]:
    micro-batch i of step s is the one at data position s * accum + i. The pages read are unmapped
    after each micro-batch (lmlab.data.token_file.release_pages): resident memory stays flat."""
    lengths_S = [len(source) for source in sources]
    n_rows = len(range(batch)[rows])
    out = np.empty((steps, accum, n_rows, seq_len + 1), np.int32)
    for s in range(steps):
        for i in range(accum):
            source_B, start_B = window_starts(seed, (step + s) * accum + i, batch, seq_len, lengths_S, weights_S)
            out[s, i] = read_windows(sources, source_B[rows], start_B[rows], seq_len)
            for source in sources:  # a fault maps a whole page-cache folio (up to 2 MiB), not a window
                release_pages(source)
    return out


def process_rows(batch_sharding, global_shape: tuple[int, ...], axis: int) -> slice:
    """The rows (along `axis`) of a global batch that this process's devices hold: a contiguous
    slice (all rows when the batch axes do not span processes)."""
    index_map = batch_sharding.addressable_devices_indices_map(global_shape)
    ranges = sorted({index[axis].indices(global_shape[axis])[:2] for index in index_map.values()})
    lo, hi = ranges[0][0], max(stop for _, stop in ranges)
    covered = sum(stop - start for start, stop in ranges)
    if covered != hi - lo:
        raise ValueError(f"this process's batch rows {ranges} are not one contiguous slice")
    return slice(lo, hi)


class HostLoader:
    """Iterator of global arrays [steps_per_call, grad_accum, batch, seq_len + 1] (int32), one per
    jitted chunk, from step `start_step` on, placed with `batch_sharding` (split on the batch
    axis, lmlab.sharding.stacked_batch_sharding). `ahead` chunks are read in advance."""

    host = True  # what lmlab.train.inputs' iterators say: it yields batches, not arrays to draw from

    def __init__(self, sources: Sequence[np.ndarray], weights_S, *, seed: int, batch_size: int, seq_len: int,
                 grad_accum: int, steps_per_call: int, start_step: int, batch_sharding, ahead: int = 2):
        self.sources, self.weights_S = list(sources), np.asarray(weights_S, np.float64)
        too_short = [len(s) for s in self.sources if len(s) <= seq_len]
        if too_short:
            raise ValueError(f"a training source has {too_short[0]} tokens, fewer than data.seq_len + 1")
        self.seed, self.batch, self.seq_len = seed, batch_size, seq_len
        self.accum, self.k = grad_accum, steps_per_call
        self.global_shape = (steps_per_call, grad_accum, batch_size, seq_len + 1)
        self.sharding = batch_sharding
        self.rows = process_rows(batch_sharding, self.global_shape, axis=2)
        self.example = jax.ShapeDtypeStruct(self.global_shape, np.int32, sharding=batch_sharding)
        self._queue: queue.Queue = queue.Queue(maxsize=max(ahead, 1))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(start_step,), name="lmlab-host-loader", daemon=True)
        self._thread.start()

    def local_chunk(self, step: int) -> np.ndarray:
        """This process's rows of the chunk starting at `step`: [k, accum, rows, seq_len + 1]."""
        return read_chunk(self.sources, self.weights_S, seed=self.seed, step=step, steps=self.k, accum=self.accum,
                          batch=self.batch, seq_len=self.seq_len, rows=self.rows)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, step: int) -> None:
        try:
            while not self._stop.is_set():
                local = self.local_chunk(step)
                placed = jax.make_array_from_process_local_data(self.sharding, local, self.global_shape)
                if not self._put((step, placed)):
                    return
                step += self.k
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            self._put((step, e))

    def __iter__(self):
        return self

    def __next__(self) -> jax.Array:
        while True:
            try:
                step, item = self._queue.get(timeout=1.0)  # chunks come in order: one producer, FIFO
                break
            except queue.Empty:
                if not self._thread.is_alive():
                    raise HostLoaderError("host loader thread stopped without a batch") from None
        if isinstance(item, BaseException):
            self.close()
            first_line = (str(item).strip().splitlines() or [""])[0]
            raise HostLoaderError(f"host loader failed reading the batches from step {step + 1}: "
                                  f"{type(item).__name__}: {first_line}") from item
        return item

    def close(self) -> None:
        """Stops the thread (it finishes the chunk it is reading) and drops what it read ahead."""
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
