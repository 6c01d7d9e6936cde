"""cache_dir: environment override, default location, created on demand."""

import pathlib

from lmlab.data import cache_dir


def test_env_var_wins_and_directory_is_created(tmp_path, monkeypatch):
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("LMLAB_CACHE", str(target))
    assert cache_dir() == target
    assert target.is_dir()


def test_default_is_under_home(tmp_path, monkeypatch):
    monkeypatch.delenv("LMLAB_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == tmp_path / ".cache" / "lmlab"
    assert cache_dir().is_dir()


def test_empty_env_var_means_default(tmp_path, monkeypatch):
    monkeypatch.setenv("LMLAB_CACHE", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert cache_dir() == pathlib.Path(tmp_path) / ".cache" / "lmlab"
