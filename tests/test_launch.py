"""launch.sh from another directory and with options but no command, run against a stand-in
interpreter (LMLAB_PYTHON) that records where and how it was called instead of running lmlab."""

import os
import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent

FAKE_PYTHON = """#!/usr/bin/env bash
if [[ "$1" == "-c" ]]; then echo "$FAKE_PREFIX"; exit 0; fi
if [[ "$2" == "pip" ]]; then echo pip >> "$FAKE_PREFIX/pip-calls"; exit 0; fi
printf '%s\\n' "$PWD" "$@" > "$FAKE_PREFIX/call"
"""


@pytest.fixture
def checkout(tmp_path):
    """A copy of launch.sh and pyproject.toml, with an installed-stamp that matches (no pip)."""
    root = tmp_path / "lmlab"
    root.mkdir()
    shutil.copy(REPO / "launch.sh", root)
    shutil.copy(REPO / "pyproject.toml", root)
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / ".lmlab-installed").write_text((REPO / "pyproject.toml").read_text())
    python = tmp_path / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "LMLAB_PYTHON": str(python), "FAKE_PREFIX": str(prefix)}
    return root, prefix, elsewhere, env


def launch(checkout, *args):
    root, prefix, elsewhere, env = checkout
    result = subprocess.run([str(root / "launch.sh"), *args], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (prefix / "pip-calls").exists()
    cwd, *argv = (prefix / "call").read_text().splitlines()
    return cwd, argv


def test_commands_run_in_the_callers_directory(checkout):
    _, _, elsewhere, _ = checkout
    cwd, argv = launch(checkout, "eval", "runs/my_run")
    assert cwd == str(elsewhere)  # so runs/my_run is the caller's, as with `lmlab eval runs/my_run`
    assert argv == ["-m", "lmlab.cli", "eval", "runs/my_run"]


def test_options_without_a_command_go_to_the_main_job(checkout):
    root, _, elsewhere, _ = checkout
    cwd, argv = launch(checkout, "--config.train.steps=50", "--no-samples")
    assert cwd == str(elsewhere)
    assert argv == ["-m", "lmlab.cli", "train", str(root / "configs" / "gpt_shakespeare.py"),
                    "--config.train.steps=50", "--no-samples"]
    assert launch(checkout)[1] == argv[:4]


def test_tests_run_in_the_checkout(checkout):
    root = checkout[0]
    cwd, argv = launch(checkout, "test", "tests/train", "-x")
    assert cwd == str(root) and argv == ["-m", "pytest", "-n", "2", "--dist", "loadfile", "tests/train", "-x"]
