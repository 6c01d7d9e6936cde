"""The host loader: batches a pure function of (seed, data position), each process's rows a slice of
the global batch, mixture weights, the background thread (order, errors, shutdown), and resident
memory that stays flat on a token file larger than the budget (slow)."""

import json
import os
import pathlib
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from lmlab import sharding
from lmlab.data.host_loader import (AUTO_DEVICE_BYTES, HostLoader, HostLoaderError, choose_loader, read_chunk,
                                    window_starts)

ROOT = pathlib.Path(__file__).resolve().parents[2]


def chunk(sources, step, steps=2, accum=1, batch=8, seq_len=16, rows=slice(None), seed=5, weights=(1.0,)):
    return read_chunk(sources, np.asarray(weights), seed=seed, step=step, steps=steps, accum=accum, batch=batch,
                      seq_len=seq_len, rows=rows)


def test_a_batch_depends_on_seed_and_position_alone_and_holds_real_windows():
    tokens = np.arange(10_000, dtype=np.uint16)
    a, b = chunk([tokens], step=3, steps=3, accum=2), chunk([tokens], step=3, steps=3, accum=2)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (3, 2, 8, 17) and a.dtype == np.int32
    # Chunked differently (a resume at step 4, one step per call): the same micro-batches.
    one_by_one = np.concatenate([chunk([tokens], step=s, steps=1, accum=2) for s in (3, 4, 5)])
    np.testing.assert_array_equal(one_by_one, a)
    # Each row is the window of seq_len + 1 tokens at its drawn start.
    source_B, start_B = window_starts(5, 3 * 2 + 1, 8, 16, [len(tokens)], [1.0])
    assert not source_B.any()
    np.testing.assert_array_equal(a[0, 1], start_B[:, None] + np.arange(17))
    # Another position or seed: another batch.
    assert not np.array_equal(chunk([tokens], step=3, steps=1), chunk([tokens], step=4, steps=1))
    assert not np.array_equal(chunk([tokens], step=3, steps=1), chunk([tokens], step=3, steps=1, seed=6))


def test_starts_reach_both_ends_of_the_source_and_no_further():
    tokens = np.arange(19, dtype=np.uint16)  # seq_len 16: starts 0, 1, 2
    starts = np.concatenate([window_starts(0, p, 8, 16, [19], [1.0])[1] for p in range(50)])
    assert set(starts.tolist()) == {0, 1, 2}
    assert int(chunk([tokens], step=0, steps=50).max()) == 18


def test_mixture_weights_hold_within_sampling_error_and_windows_stay_in_their_source():
    small, large = np.full(1_000, 7, np.uint16), np.full(50_000, 9, np.uint16)
    batches = chunk([small, large], step=0, steps=500, batch=8, weights=(0.3, 0.7))  # 4000 rows
    rows = batches.reshape(-1, 17)
    assert set(np.unique(rows)) == {7, 9} and (rows == rows[:, :1]).all()  # never spans two sources
    share = float((rows[:, 0] == 7).mean())
    assert abs(share - 0.3) < 4 * np.sqrt(0.3 * 0.7 / len(rows))  # 4 sigma, whatever the sizes


def test_each_process_rows_concatenate_to_the_global_batch():
    tokens = np.arange(5_000, dtype=np.uint16)
    whole = chunk([tokens], step=7, accum=2)
    halves = [chunk([tokens], step=7, accum=2, rows=slice(0, 4)), chunk([tokens], step=7, accum=2, rows=slice(4, 8))]
    np.testing.assert_array_equal(np.concatenate(halves, axis=2), whole)
    quarters = [chunk([tokens], step=7, accum=2, rows=slice(i, i + 2)) for i in range(0, 8, 2)]
    np.testing.assert_array_equal(np.concatenate(quarters, axis=2), whole)


def test_auto_puts_the_tokens_on_device_up_to_the_threshold():
    assert choose_loader("auto", AUTO_DEVICE_BYTES) == "device"
    assert choose_loader("auto", AUTO_DEVICE_BYTES + 1) == "host"
    assert choose_loader("host", 10) == "host" and choose_loader("device", 1 << 40) == "device"
    with pytest.raises(ValueError, match="data.loader"):
        choose_loader("disk", 10)


def loader(sources, start_step=0, **kwargs):
    mesh = sharding.make_mesh(None)
    settings = dict(seed=5, batch_size=8, seq_len=16, grad_accum=1, steps_per_call=2, start_step=start_step,
                    batch_sharding=sharding.stacked_batch_sharding(mesh))
    return HostLoader(sources, [1.0], **{**settings, **kwargs})


def test_loader_yields_placed_chunks_in_order_from_the_start_step():
    tokens = np.arange(5_000, dtype=np.uint16)
    with loader([tokens], start_step=4) as it:
        first, second = next(it), next(it)
        assert isinstance(first, jax.Array) and first.shape == it.example.shape == (2, 1, 8, 17)
        assert first.sharding == it.example.sharding
        np.testing.assert_array_equal(np.asarray(first), chunk([tokens], step=4))
        np.testing.assert_array_equal(np.asarray(second), chunk([tokens], step=6))


class FailingSource:
    """A token source whose reads fail after `good` of them, like a file on a dying disk."""

    def __init__(self, n, good):
        self.n, self.good = n, good

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        if self.good <= 0:
            raise OSError("[Errno 5] Input/output error\n(details on a second line)")
        self.good -= 1
        return np.arange(index.start, index.stop)


def test_an_error_in_the_thread_surfaces_in_the_main_thread_as_one_line():
    it = loader([FailingSource(1_000, good=8 * 2 * 2)])  # two chunks of 2 steps x 8 rows read, then failures
    next(it), next(it)
    with pytest.raises(HostLoaderError) as info:
        next(it)
    message = str(info.value)
    assert "\n" not in message and "Input/output error" in message and "step 5" in message
    assert isinstance(info.value.__cause__, OSError)
    it._thread.join(timeout=10)
    assert not it._thread.is_alive()


def test_close_stops_the_thread_that_waits_on_a_full_queue():
    before = threading.active_count()
    it = loader([np.arange(1_000, dtype=np.uint16)], ahead=1)
    next(it)
    it.close()
    assert not it._thread.is_alive() and threading.active_count() == before


def test_a_source_shorter_than_a_window_is_refused():
    with pytest.raises(ValueError, match="fewer than data.seq_len"):
        loader([np.arange(16, dtype=np.uint16)])


# ------------------------------------------------------------------- resident memory (slow)

def _write_synthetic_tokens(path: pathlib.Path, n_tokens: int, vocab: int) -> None:
    """A token file of pseudo-random ids in [0, vocab), written piecewise (never whole in memory)
    with the metadata lmlab.data.token_file reads."""
    import hashlib

    digest, rng = hashlib.sha256(), np.random.default_rng(0)
    with open(path, "wb") as f:
        for start in range(0, n_tokens, 1 << 22):
            piece = rng.integers(0, vocab, min(1 << 22, n_tokens - start)).astype("<u2").tobytes()
            digest.update(piece)
            f.write(piece)
    meta = {"dtype": "uint16", "n_tokens": n_tokens, "vocab_size": vocab, "sha256": digest.hexdigest()}
    path.with_name(path.name + ".json").write_text(json.dumps(meta))


RSS_CHILD = """
import json, pathlib, sys
from lmlab import config as config_lib
from lmlab.train import loop

def vm(name):
    return int(next(l.split()[1] for l in open("/proc/self/status") if l.startswith(name + ":"))) * 1024

run_dir, loader = pathlib.Path(sys.argv[1]), sys.argv[2]
config = config_lib.load("configs/gpt_shakespeare.py", sys.argv[3:] + [f"data.loader={loader}"])
loop.train(config, run_dir, progress=False)
print(json.dumps({"peak": vm("VmHWM")}))
"""


def _peak_rss(run_dir, train_tokens, vocab, loader):
    from lmlab.tokenizers import train_tokenizer

    text = "".join(chr(65 + i % 58) for i in range(58))
    tokenizer = train_tokenizer("char", text, vocab_size=0, special_tokens=("<|endoftext|>",),
                                out_dir=run_dir / "tokenizer")
    assert tokenizer.vocab_size == vocab
    (run_dir / "data").mkdir()
    _write_synthetic_tokens(run_dir / "data" / "train.bin", train_tokens, vocab)
    _write_synthetic_tokens(run_dir / "data" / "val.bin", 4_000, vocab)
    overrides = ["tokenizer.kind=char", "data.seq_len=64", "data.batch_size=16", "model.n_layers=1",
                 "model.d_model=32", "model.n_heads=2", "model.n_kv_heads=2", "model.d_ff=64", "model.max_len=64",
                 "train.steps=100", "train.steps_per_call=20", "train.eval_every=100", "train.checkpoint_every=100",
                 "train.eval_batches=1", "train.log_every=20"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(run_dir), loader, *overrides], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])["peak"]


@pytest.mark.slow
def test_peak_resident_memory_stays_flat_on_a_token_file_larger_than_the_budget(tmp_path):
    """Training (100 steps, 1,600 windows) with the host loader on a 512 MiB token file (8 x a 64 MiB
    budget for the data's resident memory) peaks within that budget of the same training on a 2 MiB
    file: memory does not grow with the file. Windows come from everywhere in the file, and its
    preparation checks (sha256, largest id) read all of it."""
    vocab = 3 + 1 + 58 + 256  # char tokenizer: special ids, 58 characters, byte fallback
    small = _peak_rss(tmp_path / "small", 1 << 20, vocab, "host")
    large = _peak_rss(tmp_path / "large", 256 << 20, vocab, "host")
    budget = 64 << 20
    assert (256 << 20) * 2 >= 8 * budget
    assert large - small < budget, (small, large)
