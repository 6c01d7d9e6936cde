"""Token files: round trip, metadata, size checks, read-only maps, atomic writes."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmlab.data import read_token_file, write_token_file
from lmlab.data import token_file

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def files_in(directory: pathlib.Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize(
    ("vocab_size", "dtype"),
    [(256, "uint16"), (65536, "uint16"), (65537, "uint32"), (1 << 32, "uint32")],
)
def test_round_trip(tmp_path, vocab_size, dtype):
    ids = np.array([0, 1, vocab_size // 2, vocab_size - 1], dtype=np.int64)
    path = tmp_path / "train.bin"
    write_token_file(path, ids, vocab_size=vocab_size)

    tokens = read_token_file(path, verify=True)
    assert isinstance(tokens, np.memmap)
    assert tokens.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(tokens, ids)

    raw = path.read_bytes()
    assert raw == ids.astype(np.dtype(dtype).newbyteorder("<")).tobytes()  # little-endian, no header
    metadata = json.loads((tmp_path / "train.bin.json").read_text())
    stat = path.stat()
    assert metadata.pop("verified") == {"size": len(raw), "mtime_ns": stat.st_mtime_ns,
                                        "ctime_ns": stat.st_ctime_ns, "inode": stat.st_ino}
    assert metadata == {
        "dtype": dtype,
        "n_tokens": 4,
        "vocab_size": vocab_size,
        "sha256": hashlib.sha256(raw).hexdigest(),
    }
    assert files_in(tmp_path) == ["train.bin", "train.bin.json"]  # no temp files left


def test_accepts_lists_and_large_arrays_written_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(token_file, "_CHUNK_TOKENS", 7)
    ids = np.arange(100, dtype=np.int32) % 50
    write_token_file(tmp_path / "a.bin", ids, vocab_size=50)
    np.testing.assert_array_equal(read_token_file(tmp_path / "a.bin", verify=True), ids)
    write_token_file(tmp_path / "b.bin", [3, 1, 2], vocab_size=4)
    np.testing.assert_array_equal(read_token_file(tmp_path / "b.bin"), [3, 1, 2])


def test_empty_token_file(tmp_path):
    write_token_file(tmp_path / "empty.bin", [], vocab_size=10)
    tokens = read_token_file(tmp_path / "empty.bin", verify=True)
    assert tokens.shape == (0,) and tokens.dtype == np.uint16
    assert not tokens.flags.writeable


@settings(max_examples=25, deadline=None)
@given(
    vocab_size=st.integers(1, 1 << 32),
    fractions=st.lists(st.floats(0, 1, exclude_max=True), max_size=50),
)
def test_round_trip_property(vocab_size, fractions):
    ids = np.array([int(f * vocab_size) for f in fractions], dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "t.bin"
        write_token_file(path, ids, vocab_size=vocab_size)
        np.testing.assert_array_equal(read_token_file(path, verify=True), ids)


@pytest.mark.parametrize(
    ("ids", "vocab_size", "message"),
    [
        (np.array([[1, 2]]), 10, "1-D"),
        (np.array([1.0, 2.0]), 10, "integers"),
        (np.array([-1, 2]), 10, r"\[0, 10\)"),
        (np.array([1, 10]), 10, r"\[0, 10\)"),
        (np.array([1]), 0, "vocab_size"),
        (np.array([1]), (1 << 32) + 1, "vocab_size"),
    ],
)
def test_invalid_input_is_refused_before_writing(tmp_path, ids, vocab_size, message):
    with pytest.raises(ValueError, match=message):
        write_token_file(tmp_path / "bad.bin", ids, vocab_size=vocab_size)
    assert files_in(tmp_path) == []


def test_memmap_is_read_only(tmp_path):
    write_token_file(tmp_path / "t.bin", np.arange(10), vocab_size=10)
    tokens = read_token_file(tmp_path / "t.bin")
    with pytest.raises(ValueError, match="read-only"):
        tokens[0] = 5


@pytest.mark.parametrize("change", ["truncate", "extend"])
def test_wrong_size_is_detected(tmp_path, change):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(100), vocab_size=1000)  # 200 bytes
    data = path.read_bytes()
    path.write_bytes(data[:-3] if change == "truncate" else data + b"\0\0")
    with pytest.raises(ValueError) as error:
        read_token_file(path)
    message = str(error.value)
    assert "\n" not in message
    assert str(path) in message and "expected 200" in message
    assert ("size 197 bytes" if change == "truncate" else "size 202 bytes") in message


def test_verify_detects_corruption_of_the_same_size(tmp_path):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(100), vocab_size=1000)
    data = bytearray(path.read_bytes())
    data[10] ^= 0xFF
    path.write_bytes(bytes(data))
    read_token_file(path, verify=False)  # the size alone looks right
    with pytest.raises(ValueError, match="sha256"):
        read_token_file(path, verify=True)


def test_an_overwritten_file_is_refused_on_open_even_with_its_old_mtime(tmp_path):
    """In-range ids of the same length used to pass every check: eval reported a wrong val_loss
    and a resume trained on them, although the metadata holds the sha256."""
    path = tmp_path / "val.bin"
    write_token_file(path, np.arange(100) % 7, vocab_size=7)
    old = path.stat()
    path.write_bytes(token_file.token_dtype(7).type(3).tobytes() * 100)  # in range, same size
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    with pytest.raises(ValueError) as error:
        read_token_file(path)
    message = str(error.value)
    assert message.startswith(f"{path}: contents changed since it was written (sha256 ")
    assert "\n" not in message and f"delete {tmp_path} to rebuild it" in message


def test_the_hash_is_computed_only_when_the_file_changed(tmp_path, monkeypatch):
    hashed = []
    real = token_file.sha256_file
    monkeypatch.setattr(token_file, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    path = tmp_path / "t.bin"
    ids = np.arange(50)
    write_token_file(path, ids, vocab_size=50)
    read_token_file(path)
    read_token_file(path)
    assert hashed == []  # the writer's own hash counts
    os.utime(path)  # touched: same bytes, but it may have changed
    np.testing.assert_array_equal(read_token_file(path), ids)
    np.testing.assert_array_equal(read_token_file(path), ids)
    assert hashed == ["t.bin"]  # once, then recorded again
    read_token_file(path, verify=True)
    assert hashed == ["t.bin", "t.bin"]
    assert files_in(tmp_path) == ["t.bin", "t.bin.json"]


def test_a_read_only_directory_verifies_on_every_open(tmp_path, monkeypatch):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(50), vocab_size=50)
    os.utime(path)
    metadata = (tmp_path / "t.bin.json").read_text()

    def read_only(final):
        raise PermissionError(13, "Read-only file system", str(final))

    monkeypatch.setattr(token_file, "_temp_file", read_only)
    hashed = []
    real = token_file.sha256_file
    monkeypatch.setattr(token_file, "sha256_file", lambda p: hashed.append(p.name) or real(p))
    np.testing.assert_array_equal(read_token_file(path), np.arange(50))
    np.testing.assert_array_equal(read_token_file(path), np.arange(50))
    assert hashed == ["t.bin", "t.bin"]
    assert (tmp_path / "t.bin.json").read_text() == metadata


def test_missing_metadata_is_an_error(tmp_path):
    (tmp_path / "t.bin").write_bytes(b"\0\0")
    with pytest.raises(FileNotFoundError, match=r"t\.bin\.json"):
        read_token_file(tmp_path / "t.bin")


def fail_fsync(fd):
    raise OSError("disk full (simulated)")


def test_failure_midway_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(token_file.os, "fsync", fail_fsync)  # after the data was written
    with pytest.raises(OSError, match="simulated"):
        write_token_file(tmp_path / "t.bin", np.arange(1000), vocab_size=1000)
    assert files_in(tmp_path) == []


def test_failure_midway_keeps_the_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(10), vocab_size=10)
    monkeypatch.setattr(token_file.os, "fsync", fail_fsync)
    with pytest.raises(OSError, match="simulated"):
        write_token_file(path, np.arange(500), vocab_size=1000)
    np.testing.assert_array_equal(read_token_file(path, verify=True), np.arange(10))
    assert files_in(tmp_path) == ["t.bin", "t.bin.json"]


def test_failure_between_the_renames_leaves_an_unreadable_pair_not_a_stale_one(tmp_path, monkeypatch):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(10), vocab_size=10)
    real_replace = os.replace
    calls = []

    def replace_then_fail(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # the metadata rename
            raise OSError("crash (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(token_file.os, "replace", replace_then_fail)
    with pytest.raises(OSError, match="simulated"):
        write_token_file(path, np.arange(20), vocab_size=20)
    with pytest.raises(FileNotFoundError):
        read_token_file(path)


def test_process_killed_midway_leaves_no_final_file(tmp_path):
    """A real crash: the writer process dies mid-write; no cleanup code gets to run."""
    script = textwrap.dedent(f"""
        import os
        import numpy as np
        from lmlab.data import token_file
        token_file._CHUNK_TOKENS = 1000
        def die(fd):
            os._exit(3)
        token_file.os.fsync = die
        token_file.write_token_file({str(tmp_path / "t.bin")!r}, np.arange(10_000), vocab_size=10_000)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True)
    assert result.returncode == 3, result.stderr.decode()
    leftovers = files_in(tmp_path)
    assert "t.bin" not in leftovers and "t.bin.json" not in leftovers
    assert all(name.startswith(".t.bin.") and name.endswith(".tmp") for name in leftovers)


@pytest.mark.parametrize("dtype", [["uint16"], {"name": "uint16"}, 16])
def test_metadata_with_a_non_string_dtype_is_a_clear_error(tmp_path, dtype):
    path = tmp_path / "t.bin"
    write_token_file(path, np.arange(10), vocab_size=10)
    meta = tmp_path / "t.bin.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "dtype": dtype}))
    with pytest.raises(ValueError, match="not token-file metadata"):
        read_token_file(path)


def _resident_kib() -> int:
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmRSS:")))


def test_max_token_reads_piecewise_across_chunk_boundaries(tmp_path, monkeypatch):
    monkeypatch.setattr(token_file, "_CHUNK_TOKENS", 1000)
    ids = np.zeros(4500, np.uint16)
    ids[2999] = 77  # the last id of the third piece
    write_token_file(tmp_path / "a.bin", ids, vocab_size=100)
    assert token_file.max_token(read_token_file(tmp_path / "a.bin")) == 77
    assert token_file.max_token(np.zeros(0, np.uint16)) == -1


def test_release_pages_unmaps_what_was_read_from_resident_memory(tmp_path):
    write_token_file(tmp_path / "a.bin", np.arange(32 << 20, dtype=np.uint32) % 60000, vocab_size=60000)  # 64 MiB
    tokens = read_token_file(tmp_path / "a.bin")
    before = _resident_kib()
    assert int(tokens[::2048].sum()) > 0  # touches every 4 KiB page
    mapped = _resident_kib()
    token_file.release_pages(tokens)
    after = _resident_kib()
    assert mapped - before > 48 << 10, (before, mapped)  # KiB: most of the 64 MiB file became resident
    assert after - before < 4 << 10, (before, mapped, after)
    assert int(tokens[12345]) == 12345  # still readable: the pages map again on access
    token_file.release_pages(np.arange(3))  # not a map: nothing to do
