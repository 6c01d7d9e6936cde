"""One training job per run directory: an exclusive OS file lock on `<run>/train.lock`.

flock(2) locks belong to the open file, so the kernel drops the lock when the process ends however
it ends (SIGKILL, OOM killer, a lost node): a crashed trainer never leaves a run directory locked.
The file also names its holder (pid, host, start time) for the refusal message. It stays in place
after release: deleting it would let a waiting process and a new one lock two different files of
the same name.

`lmlab eval` and `lmlab sample` only read a run directory and take no lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
import time

from lmlab import distributed

log = logging.getLogger("lmlab")

LOCK_NAME = "train.lock"


class RunDirBusy(OSError):
    """Another process trains in this run directory (the CLI reports it in one line)."""


def _holder(path: pathlib.Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"pid {int(info['pid'])} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):  # the holder is still writing it, or it is not ours
        return "another process"


def acquire(run_dir: str | os.PathLike) -> int | None:
    """Locks `run_dir` (created if missing) for this process; returns the lock's file descriptor.

    Raises RunDirBusy naming the holder if another process has it. On a filesystem without file
    locks it warns and returns None: training goes on unprotected rather than not at all.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by exec'd children (PEP 446)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise RunDirBusy(f"run directory {run_dir} is in use by another lmlab train ({_holder(path)}); "
                             "wait for it to end or stop it, or use another --workdir") from None
        log.warning("cannot lock %s (%s): nothing stops a second lmlab train on this run directory",
                    path, e.strerror or e)
        return None
    since = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    os.ftruncate(fd, 0)
    os.pwrite(fd, (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n").encode(), 0)
    return fd


def release(fd: int | None) -> None:
    if fd is not None:
        os.close(fd)  # closing the only descriptor of the open file drops the flock


@contextlib.contextmanager
def hold(run_dir: str | os.PathLike):
    """The run directory locked for the block. In a multi-host job process 0 holds the lock and
    every process raises RunDirBusy if it is taken (else the others would wait for process 0 at
    their first barrier forever)."""
    fd, busy = None, None
    if distributed.is_primary():
        try:
            fd = acquire(run_dir)
        except RunDirBusy as e:
            busy = e
    if distributed.any_process(busy is not None):
        raise busy or RunDirBusy(f"run directory {run_dir} is in use by another lmlab train (see process 0)")
    try:
        yield
    finally:
        release(fd)
