import asyncio
import gc
import json
import os
import re
import subprocess
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src import asyncio_utils

from lmlab.train import checkpoint, checksums
from lmlab.train.checkpoint import Checkpointer


def test_keeps_latest_n_and_the_best_by_val_loss(tmp_path):
    ckpt = Checkpointer(tmp_path, keep=2)
    losses = {1: 3.0, 2: 1.0, 3: 2.5, 4: 2.0, 5: 2.2, 6: 2.4}  # best is step 2
    for step, loss in losses.items():
        ckpt.save(step, {"w": jnp.full((3,), float(step))}, {"step": step}, val_loss=loss)
        ckpt.wait()
    assert ckpt.steps() == [2, 5, 6]
    step, state, record = ckpt.restore_latest({"w": jnp.zeros(3)})
    assert step == 6 and record == {"step": 6}
    np.testing.assert_array_equal(state["w"], [6.0, 6.0, 6.0])
    ckpt.close()


def test_the_best_checkpoint_survives_a_resume(tmp_path):
    """A resumed run reopens the directory: the best step must still be known as the best."""
    state = {"w": jnp.ones(3)}
    ckpt = Checkpointer(tmp_path, keep=1)
    for step, loss in ((1, 1.0), (2, 2.0), (3, None), (4, None)):
        ckpt.save(step, state, {"step": step}, val_loss=loss)
    ckpt.close()
    assert Checkpointer(tmp_path, keep=1).steps() == [1, 4]
    resumed = Checkpointer(tmp_path, keep=1)
    for step in (5, 6):
        resumed.save(step, state, {"step": step})
    resumed.wait()
    assert resumed.steps() == [1, 6]
    resumed.close()


def test_empty_directory_restores_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "none")
    assert ckpt.restore_latest({"w": jnp.zeros(3)}) is None
    ckpt.close()



def test_a_failed_orbax_call_waits_for_its_other_tasks():
    """orbax runs each restore in a fresh event loop; when one of the gathered reads fails, the
    others must finish before that loop closes, or each later calls back into the closed loop
    ("RuntimeError: Event loop is closed", printed as an ignored exception)."""
    finished = []

    async def read_ok():
        await asyncio.sleep(0.05)
        finished.append(True)

    async def read_damaged():
        raise ValueError("DATA_LOSS")

    async def restore():
        await asyncio.gather(read_ok(), read_damaged(), read_ok())

    with checkpoint._orbax_drains_tasks_on_error(), pytest.raises(ValueError, match="DATA_LOSS"):
        asyncio_utils.run_sync(restore())
    assert finished == [True, True]
    assert asyncio_utils._run_sync_via_new_loop is not checkpoint._run_sync_draining_tasks  # put back


def test_damaged_checkpoint_falls_back_quietly(tmp_path, caplog):
    """The newest checkpoint is unreadable: the previous one is restored, with one warning and no
    stray "Event loop is closed" or "Task exception was never retrieved" from orbax's other reads."""
    state = {f"w{i}": jnp.full((1024,), float(i)) for i in range(200)}
    ckpt = Checkpointer(tmp_path)
    for step in (1, 2):
        ckpt.save(step, state, {"step": step})
    ckpt.wait()
    for path in (tmp_path / "2").rglob("*"):
        if path.is_file() and "ocdbt" in str(path) and path.stat().st_size > 0:
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    ignored = []
    hook, sys.unraisablehook = sys.unraisablehook, ignored.append
    try:
        with caplog.at_level("WARNING"):
            step, restored, record = ckpt.restore_latest(state)
            ckpt.close()
            time.sleep(0.3)  # reads left running would have called back by now
            gc.collect()
    finally:
        sys.unraisablehook = hook
    assert step == 1 and record == {"step": 1}
    np.testing.assert_array_equal(restored["w7"], state["w7"])
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == ["checkpoint at step 2 cannot be restored"]
    assert not ignored, [repr(u.exc_value) for u in ignored]


# --- checksums ---------------------------------------------------------------------------------

def naive_checksum(x: np.ndarray) -> str:
    """The documented checksum (lmlab/train/checksums.py), element by element in Python integers."""
    def fmix(h):
        for shift, mult in ((16, 0x85EBCA6B), (13, 0xC2B2AE35), (16, None)):
            h ^= h >> shift
            h = h * mult % 2**32 if mult else h
        return h

    words = (x.astype(np.uint32) if x.dtype == bool else x.reshape(-1).view(f"u{min(x.dtype.itemsize, 4)}")).reshape(-1)
    first = sum(fmix(int(w) ^ fmix(i)) for i, w in enumerate(words)) % 2**32
    second = sum(fmix((int(w) + i * 0x9E3779B9 + 0x85EBCA6B) % 2**32) for i, w in enumerate(words)) % 2**32
    return "%08x%08x" % (first, second)


def test_checksums_equal_a_naive_reference():
    rng = np.random.default_rng(0)
    state = {"w": jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32)),
             "h": jnp.asarray(rng.normal(size=(7,)).astype(jnp.bfloat16)),
             "n": {"step": jnp.int32(-3), "mask": jnp.asarray(rng.random((2, 3)) < 0.5)},
             "host": np.arange(4.0)}  # float64: two words per element
    assert checkpoint.state_checksums(state) == {
        "w": naive_checksum(np.asarray(state["w"])), "h": naive_checksum(np.asarray(state["h"])),
        "n/step": naive_checksum(np.asarray(state["n"]["step"])),
        "n/mask": naive_checksum(np.asarray(state["n"]["mask"])),
        "host": naive_checksum(state["host"])}


def test_checksum_of_blocks_adds_up_to_the_whole(monkeypatch):
    """What makes it independent of the sharding: the shards' sums add up to the array's."""
    monkeypatch.setattr(checksums, "_BLOCK", 7)  # several passes per block as well
    words = checksums._words(np.random.default_rng(2).normal(size=(6, 9)).astype(np.float32))
    whole = checksums._partial_sums(words, (0, 0), (6, 9))
    parts = [checksums._partial_sums(words[r:r + 3, c:c + 3], (r, c), (6, 9)) for r in (0, 3) for c in (0, 3, 6)]
    assert [sum(p[k] for p in parts) % 2**32 for k in (0, 1)] == [whole[0] % 2**32, whole[1] % 2**32]


def test_any_changed_element_changes_the_checksum():
    x = np.random.default_rng(1).normal(size=(4, 64)).astype(np.float32)
    base = checkpoint.state_checksums({"x": jnp.asarray(x)})["x"]
    seen = {base}
    for i, j, bit in [(0, 0, 0), (3, 63, 31), (2, 17, 5), (1, 40, 22)]:
        bits = x.view(np.uint32).copy()
        bits[i, j] ^= np.uint32(1 << bit)
        seen.add(checkpoint.state_checksums({"x": jnp.asarray(bits.view(np.float32))})["x"])
    swapped = x.copy()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]
    seen.add(checkpoint.state_checksums({"x": jnp.asarray(swapped)})["x"])  # same values, other places
    assert len(seen) == 6


def _flip_bytes_in_array_data(step_dir):
    """A few flipped bits in the middle of the largest array data file (zstd-compressed, no CRC)."""
    data = max((p for p in step_dir.rglob("*") if p.is_file() and "/d/" in str(p)), key=lambda p: p.stat().st_size)
    raw = bytearray(data.read_bytes())
    for offset in (len(raw) // 2, len(raw) // 2 + 1):
        raw[offset] ^= 0x10
    data.write_bytes(bytes(raw))


def test_flipped_bytes_in_array_data_fall_back_to_the_previous_checkpoint(tmp_path, caplog):
    """Used to restore silently with other numbers; the resumed run then died with NaN and named
    this checkpoint as the last good one, so every rerun failed the same way."""
    state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=20000).astype(np.float32)), "step": jnp.int32(3)}
    ckpt = Checkpointer(tmp_path)
    for step in (1, 2):
        ckpt.save(step, state, {"step": step})
    ckpt.close()
    _flip_bytes_in_array_data(tmp_path / "2")
    ckpt = Checkpointer(tmp_path)
    with caplog.at_level("WARNING"):
        step, restored, record = ckpt.restore_latest(state)
    ckpt.close()
    assert step == 1 and record == {"step": 1}
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert [p.name.split("-")[:2] for p in ckpt.moved_aside] == [["corrupt", "2"]]
    assert "the data of 'w' does not match the checksum saved with it" in caplog.text


def test_checkpoints_saved_without_checksums_still_restore(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "state_checksums", lambda state: {})  # as before checksums existed
    ckpt = Checkpointer(tmp_path)
    ckpt.save(1, {"w": jnp.arange(3.0)}, {"step": 1})
    ckpt.close()
    monkeypatch.undo()
    ckpt = Checkpointer(tmp_path)
    step, restored, record = ckpt.restore_latest({"w": jnp.zeros(3)})
    ckpt.close()
    assert step == 1 and record == {"step": 1} and not ckpt.moved_aside
    np.testing.assert_array_equal(restored["w"], [0.0, 1.0, 2.0])


def test_damage_warnings_are_one_readable_line(tmp_path, caplog):
    """They used to carry TensorStore's spec: a pybind11 method repr and pages of escaped JSON."""
    state = {"w": jnp.arange(2000.0), "v": jnp.ones(5)}
    ckpt = Checkpointer(tmp_path)
    for step in (1, 2, 3):
        ckpt.save(step, state, {"step": step})
    ckpt.close()
    for path in (tmp_path / "3" / "state" / "ocdbt.process_0" / "d").iterdir():  # the array data is gone
        path.unlink()
    (tmp_path / "2" / "state" / "manifest.ocdbt").unlink()
    ckpt = Checkpointer(tmp_path)
    with caplog.at_level("WARNING"):
        assert ckpt.restore_latest(state)[0] == 1
    ckpt.close()
    messages = [r.getMessage() for r in caplog.records if r.name == "lmlab"]
    assert len(messages) == 2 and all("\n" not in m for m in messages), messages
    for bad in ("pybind11", "tensorstore_spec", "TensorStore details", "<bound method"):
        assert not any(bad in m for m in messages), messages
    assert "Truncated Zstd-compressed stream" in messages[0] and "does not exist" in messages[1], messages


# --- read-only run directories -------------------------------------------------------------------

def _two_checkpoints_the_latest_damaged(directory, state):
    ckpt = Checkpointer(directory)
    for step in (1, 2):
        ckpt.save(step, state, {"step": step})
    ckpt.close()
    _flip_bytes_in_array_data(directory / "2")


def _check_skipped_not_moved(directory, state, caplog):
    ckpt = Checkpointer(directory)
    with caplog.at_level("WARNING"):
        step, restored, _ = ckpt.restore_latest(state)
    ckpt.close()
    assert step == 1 and ckpt.skipped == [2] and not ckpt.moved_aside
    np.testing.assert_array_equal(restored["w"], state["w"])
    assert sorted(p.name for p in directory.iterdir()) == ["1", "2"]
    assert f"skipped, not moved ({directory} is not writable)" in caplog.text


def test_read_only_directory_skips_a_damaged_checkpoint(tmp_path, monkeypatch, caplog):
    """eval used to say it moved the checkpoint aside, fail on the rename, and not fall back."""
    state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=5000).astype(np.float32))}
    _two_checkpoints_the_latest_damaged(tmp_path, state)

    def read_only(self, target):
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(checkpoint.pathlib.Path, "rename", read_only)
    _check_skipped_not_moved(tmp_path, state, caplog)


def test_read_only_mount_skips_a_damaged_checkpoint(tmp_path, caplog):
    """The same on a real read-only bind mount (needs root; skipped elsewhere)."""
    state = {"w": jnp.asarray(np.random.default_rng(0).normal(size=5000).astype(np.float32))}
    source, mounted = tmp_path / "source", tmp_path / "ro"
    source.mkdir()
    mounted.mkdir()
    _two_checkpoints_the_latest_damaged(source, state)
    if subprocess.run(["mount", "--bind", "-o", "ro", str(source), str(mounted)], capture_output=True).returncode:
        pytest.skip("mounting is not permitted here")
    try:
        if os.access(mounted, os.W_OK):
            pytest.skip("the bind mount is not read-only")
        _check_skipped_not_moved(mounted, state, caplog)
    finally:
        subprocess.run(["umount", str(mounted)], check=True)


# --- full disks ----------------------------------------------------------------------------------

@pytest.fixture
def small_disk(tmp_path):
    """A 300 KiB tmpfs (needs root; skipped where mounting is not permitted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


BIG = {"w": jnp.asarray(np.random.default_rng(0).normal(size=100_000).astype(np.float32))}  # 400 kB


def test_a_checkpoint_the_disk_has_no_room_for_is_refused_at_its_save(small_disk):
    """It used to fail in orbax's background threads (hundreds of lines of tracebacks) and surface
    only at the next save, leaving *.orbax-checkpoint-tmp behind."""
    ckpt = Checkpointer(small_disk / "ckpt")
    with pytest.raises(checkpoint.CheckpointWriteError) as info:
        ckpt.save(1, BIG, {"step": 1})
    ckpt.close()
    message = str(info.value)
    assert message.startswith(f"no space left on device for the checkpoint of step 1 in {small_disk / 'ckpt'}: "
                              "it needs about 0.4 MB, 0.3 MB free") and "\n" not in message
    assert isinstance(info.value, OSError)  # the CLI's exit status 1
    assert list((small_disk / "ckpt").iterdir()) == []


def test_a_write_that_fails_midway_is_one_error_and_leaves_nothing(small_disk, monkeypatch, caplog):
    monkeypatch.setattr(checkpoint, "_checkpoint_bytes", lambda state: 1)  # the room check passes
    ckpt = Checkpointer(small_disk / "ckpt")
    with caplog.at_level("ERROR"):
        ckpt.save(1, BIG, {"step": 1})  # in the background
        with pytest.raises(checkpoint.CheckpointWriteError, match="^no space left on device for the checkpoint "
                                                                  "of step 1 in "):
            ckpt.wait()
        ckpt.close()  # once reported, not raised again
    assert list((small_disk / "ckpt").iterdir()) == []  # no *.orbax-checkpoint-tmp
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage()[:200] for r in caplog.records]


@pytest.mark.slow  # a training subprocess: ~25 s on 2 cores
def test_train_on_a_full_disk_ends_with_one_line(tmp_path):
    """End to end: the data and the first checkpoint fit, the second does not. Used to print 4 to
    17 orbax tracebacks (up to 409 lines), fail one checkpoint interval late, and leave
    *.orbax-checkpoint-tmp behind."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1300k", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        run_dir = disk / "run"
        tiny = ["--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char", "--config.data.seq_len=32",
                "--config.data.batch_size=4", "--config.model.n_layers=2", "--config.model.d_model=32",
                "--config.model.n_heads=2", "--config.model.n_kv_heads=2", "--config.model.d_ff=64",
                "--config.model.max_len=64", "--config.train.steps=40", "--config.train.steps_per_call=4",
                "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2"]
        result = subprocess.run([sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *tiny,
                                 "--workdir", str(run_dir), "--no-progress", "--no-samples"],
                                capture_output=True, text=True)
        assert result.returncode == 1, result.stderr[-3000:]
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr and len(lines) < 15, result.stderr[-3000:]
        expected = (f"lmlab: error: no space left on device for the checkpoint of step 16 in "
                    f"{re.escape(str(run_dir / 'checkpoints'))}: it needs about 0.7 MB, 0.[01] MB free")
        assert re.match(expected, lines[-1]), lines
        assert lines[-1].endswith("then run the same command to resume from step 8")
        assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["8"]
        assert max(json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()) == 16
    finally:
        subprocess.run(["umount", str(disk)], check=True)
