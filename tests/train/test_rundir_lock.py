"""One trainer per run directory: a second `train` is refused naming the holder, the lock dies with
its process (SIGKILL included), `eval` keeps working meanwhile; and a new run that fails before its
first checkpoint, for any reason, leaves no run directory behind."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from lmlab import cli
from lmlab.train import loop, rundir_lock
from lmlab.train.metrics import read_metrics

CONFIG = "configs/gpt_shakespeare.py"
TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char",
    "--config.data.seq_len=32", "--config.data.batch_size=4",
    "--config.model.n_layers=2", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.steps_per_call=4", "--config.train.eval_every=8", "--config.train.checkpoint_every=8",
    "--config.train.eval_batches=2", "--config.train.log_every=1",
]

# Holds the lock as `lmlab train` does, prints "locked", then waits to be killed.
HOLDER = ("import sys, time; from lmlab.train import rundir_lock; rundir_lock.acquire(sys.argv[1]); "
          "print('locked', flush=True); time.sleep(600)")


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("lmlab")]
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: "), err
    return lines[0]


def start_holder(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_the_lock_dies_with_its_process(tmp_path):
    holder = start_holder(tmp_path)
    try:
        with pytest.raises(rundir_lock.RunDirBusy, match=f"in use by another lmlab train \\(pid {holder.pid} on "):
            rundir_lock.acquire(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    fd = rundir_lock.acquire(tmp_path)  # nothing stuck after a crash
    assert json.loads((tmp_path / rundir_lock.LOCK_NAME).read_text())["pid"] == os.getpid()
    rundir_lock.release(fd)
    rundir_lock.release(rundir_lock.acquire(tmp_path))  # and released by release()


def test_a_refused_train_touches_nothing(tmp_path, capsys):
    """The holder's directory looks like a fresh one (only the lock file): the refused command must
    not clean it up as its own failed start."""
    run_dir = tmp_path / "run"
    holder = start_holder(run_dir)
    try:
        assert cli.main(["train", CONFIG, *TINY, "--workdir", str(run_dir), "--no-progress"]) == 1
        assert f"pid {holder.pid}" in one_error_line(capsys)
        assert [p.name for p in run_dir.iterdir()] == [rundir_lock.LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()


def test_a_second_trainer_is_refused_while_eval_works(tmp_path, capsys):
    """Two trainers on one directory used to both run: one's metrics lost, config.json describing
    the other's settings, checkpoints the first's."""
    run_dir = tmp_path / "run"
    first = subprocess.Popen([sys.executable, "-m", "lmlab.cli", "train", CONFIG, *TINY, "--config.train.steps=100000",
                              "--workdir", str(run_dir), "--no-progress", "--no-samples"],
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (run_dir / "checkpoints" / "8").is_dir():
            assert first.poll() is None and time.time() < deadline, first.stderr.read() if first.poll() else "slow"
            time.sleep(0.05)
        config_before = (run_dir / "config.json").read_text()
        assert cli.main(["train", CONFIG, *TINY, "--config.model.d_model=64", "--workdir", str(run_dir),
                         "--no-progress"]) == 1
        line = one_error_line(capsys)
        assert f"run directory {run_dir} is in use by another lmlab train (pid {first.pid} on " in line
        assert (run_dir / "config.json").read_text() == config_before
        assert cli.main(["eval", str(run_dir)]) == 0  # readers take no lock
        assert json.loads(capsys.readouterr().out)["step"] >= 8
        assert first.poll() is None  # the first trainer was not disturbed
        steps_before = max(m["step"] for m in read_metrics(run_dir))
        while max(m["step"] for m in read_metrics(run_dir)) == steps_before:
            assert first.poll() is None and time.time() < deadline
            time.sleep(0.05)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    rundir_lock.release(rundir_lock.acquire(run_dir))  # a killed trainer leaves it unlocked


@pytest.mark.parametrize("error, status", [
    (lambda: __import__("jax").errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 1 bytes"), 1),
    (lambda: KeyboardInterrupt(), 130),
    (lambda: ValueError("unknown corpus"), 1),
])
def test_a_new_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path, monkeypatch, capsys, error, status):
    """Out of memory at the first step used to leave the run directory behind, so that the
    corrected command was refused as a resume with other settings."""
    def fails_at_first_step(config, run_dir, *, progress):
        (run_dir / "config.json").write_text("{}")
        (run_dir / "data").mkdir()
        (run_dir / "checkpoints").mkdir()  # created, still empty
        raise error()

    monkeypatch.setattr(loop, "_train", fails_at_first_step)
    run_dir = tmp_path / "run"
    assert cli.main(["train", CONFIG, *TINY, "--workdir", str(run_dir), "--no-progress"]) == status
    assert not run_dir.exists()
    pathlib.Path(run_dir).mkdir()
    assert cli.main(["train", CONFIG, *TINY, "--workdir", str(run_dir), "--no-progress"]) == status
    assert run_dir.is_dir() and not any(run_dir.iterdir())  # an existing empty directory stays, empty
