"""Orbax checkpoints of the train state: keep the latest N plus the best by validation loss.

A checkpoint holds the state pytree (params, optimizer state, step, RNG) and a small JSON record
(step, data position, metrics, and a checksum of every array of the state, checked on restore:
the compressed array files carry none, so flipped bytes would otherwise restore as other numbers).
Restoring walks back from the newest step: a checkpoint that fails to restore or to match its
checksums is reported, moved aside to `corrupt-<step>-<time>` (never deleted or overwritten; in a
read-only directory left in place and skipped) and the previous one is used.

Sharded states are saved sharded (every process writes the shards it holds; the directory must be
shared between hosts) and restore onto whatever shardings the target state has, so a run saved
on 8 devices resumes on 1 and the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pathlib
import re
import shutil
import threading
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from lmlab import distributed
from lmlab.train.checksums import tree_checksums

try:  # private: see _orbax_drains_tasks_on_error
    from orbax.checkpoint._src import asyncio_utils as _orbax_asyncio
except ImportError:  # pragma: no cover - other orbax versions
    _orbax_asyncio = None

log = logging.getLogger("lmlab")


class _SavesWithoutMetrics(logging.Filter):
    """Checkpoints between evaluations carry no val_loss by design; with best_fn set (see
    Checkpointer._open) orbax warns about each one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


class _SaveFailureTracebacks(logging.Filter):
    """A failed background save makes orbax log one traceback per thread involved (4 to 17 of
    them, hundreds of lines); Checkpointer raises the failure itself, in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.levelno >= logging.ERROR and "orbax" in record.pathname:
            log.debug("orbax: %s", record.getMessage())  # for -v
            return False
        return True


logging.getLogger("absl").addFilter(_SavesWithoutMetrics())
logging.getLogger("absl").addFilter(_SaveFailureTracebacks())


_CHECKSUMS = "state_checksums"  # the record's key for state_checksums(state) at save time


class CheckpointError(ValueError):
    """Checkpoints that exist but do not fit the run's state (the CLI reports it in one line)."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk): one line, exit status 1."""


def _checkpoint_bytes(state) -> int:
    """About what a checkpoint of `state` takes on disk: the arrays (compression gains little on
    trained weights) plus orbax's metadata, under 1.5 KiB per array."""
    leaves = jax.tree.leaves(state)
    data = sum(int(getattr(x, "nbytes", 0)) or np.asarray(x).nbytes for x in leaves)
    return int(data * 1.02) + 1536 * len(leaves) + (16 << 10)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _path_shapes(tree) -> dict[str, tuple]:
    """{"params/embed/embedding": shape, ...} of a state, abstract state or checkpoint metadata tree."""
    def name(entry):
        for attr in ("key", "idx", "name"):  # DictKey, SequenceKey, GetAttrKey
            if hasattr(entry, attr):
                return str(getattr(entry, attr))
        return str(entry)

    return {"/".join(name(e) for e in path): tuple(getattr(x, "shape", ()))
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


@contextlib.contextmanager
def _quiet_absl():
    """orbax logs a damaged checkpoint's parse errors through absl; restore_latest reports them itself."""
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        absl_log.setLevel(level)


def state_checksums(state) -> dict[str, str]:
    """{"params/embed/embedding": "0123abcd4567ef89", ...}: a 64-bit checksum of each array of `state`."""
    return tree_checksums(state, list(_path_shapes(state)))  # same leaf order as jax.tree.leaves


def _check_checksums(state, saved: dict | None) -> None:
    """Raises ValueError naming the first array whose data does not match the checksum saved with
    it. Checkpoints written before checksums existed have none and pass."""
    if not saved:
        return
    for name, value in state_checksums(state).items():
        if saved.get(name, value) != value:
            raise ValueError(f"the data of '{name}' does not match the checksum saved with it")


def _damage_reason(e: BaseException) -> str:
    """One line on why a checkpoint failed to restore: the root cause's first line, without the
    TensorStore spec that tensorstore and orbax append (a pybind11 method repr, escaped JSON)."""
    while e.__cause__ is not None or (e.__context__ is not None and not e.__suppress_context__):
        e = e.__cause__ if e.__cause__ is not None else e.__context__
    text = str(e).strip().split("\n")[0]
    text = re.sub(r"\s*(\[tensorstore_spec|See full TensorStore details:).*$", "", text)
    return (text[:240] + "...") if len(text) > 240 else (text or type(e).__name__)


def _abstract(tree):
    """Shapes, dtypes and target shardings (jax.Arrays and ShapeDtypeStructs carry one)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None)), tree)


DRAIN_TIMEOUT_S = 30.0


def _run_sync_draining_tasks(coro):
    """orbax's `asyncio_utils._run_sync_via_new_loop`, except that a failure waits for the tasks it
    leaves behind before the loop is closed.

    orbax restores the arrays of a checkpoint with one task each under `asyncio.gather`, which
    raises at the first failure (a damaged checkpoint) while the other reads go on. orbax then
    closes the loop at once; each tensorstore read still in flight later calls
    `loop.call_soon_threadsafe` on the closed loop ("RuntimeError: Event loop is closed", printed
    as an ignored exception), and asyncio logs "Task exception was never retrieved" for the rest.
    """
    loop = asyncio.new_event_loop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(coro)
    except Exception:
        pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
        if pending:  # their own errors are the same damage; the first one is raised below
            # Bounded: a stalled read must not hang the fallback to the previous checkpoint.
            _, stalled = loop.run_until_complete(asyncio.wait(pending, timeout=DRAIN_TIMEOUT_S))
            for task in stalled:
                task.cancel()
            if stalled:
                loop.run_until_complete(asyncio.gather(*stalled, return_exceptions=True))
        raise
    finally:
        asyncio.set_event_loop(None)
        loop.close()


_patch_lock = threading.Lock()


@contextlib.contextmanager
def _orbax_drains_tasks_on_error():
    """Within the block, orbax's synchronous calls run through `_run_sync_draining_tasks`.

    Identical to orbax's own function when the call succeeds, so other threads using orbax
    meanwhile (a background save) are unaffected. Without that private function (another orbax
    version) nothing is changed.
    """
    name = "_run_sync_via_new_loop"
    if _orbax_asyncio is None or not callable(getattr(_orbax_asyncio, name, None)):
        yield
        return
    with _patch_lock:
        original = getattr(_orbax_asyncio, name)
        setattr(_orbax_asyncio, name, _run_sync_draining_tasks)
        try:
            yield
        finally:
            setattr(_orbax_asyncio, name, original)


class Checkpointer:
    def __init__(self, directory: str | pathlib.Path, *, keep: int = 3):
        self.directory = pathlib.Path(directory).absolute()
        self.keep = keep
        self.moved_aside: list[pathlib.Path] = []  # damaged checkpoints restore_latest moved to corrupt-*
        self.skipped: list[int] = []  # damaged steps it left in place (a read-only directory)
        self._pending: int | None = None  # the step being written in the background
        self._pending_bytes = 0
        self._failed = False  # a save failed: orbax's manager keeps raising it, and is not waited for again
        self._manager = self._open()

    def _open(self) -> ocp.CheckpointManager:
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=self.keep),
            pp.BestN(get_metric_fn=lambda m: -m["val_loss"], n=1, keep_checkpoints_without_metrics=False),
        ])
        # best_fn only makes orbax write each step's metrics to disk: without it a reopened
        # manager sees no metrics, BestN protects nothing and the best checkpoint is pruned.
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, create=True,
                                               best_fn=lambda m: m["val_loss"], best_mode="min")
        with _quiet_absl():  # it reads every step's metadata; restore_latest reports damaged ones
            return ocp.CheckpointManager(self.directory, options=options)

    def steps(self) -> list[int]:
        with _quiet_absl():
            return sorted(self._manager.all_steps())

    def save(self, step: int, state, record: dict, *, val_loss: float | None = None) -> None:
        """Starts writing checkpoint `step` in the background (wait() or the next save finishes it).

        Raises CheckpointWriteError, with nothing half-written left, when the disk lacks the room
        for it (checked first), or when the write fails: at this save if the disk was nearly full
        (the write is then waited for), else at the next save, wait() or close()."""
        self._finish()
        needed = _checkpoint_bytes(state)
        free = shutil.disk_usage(self.directory).free
        if distributed.any_process(free < needed):
            raise CheckpointWriteError(self._no_room(step, needed, free))
        tight = distributed.any_process(free < 2 * needed)
        metrics = {"val_loss": float(val_loss)} if val_loss is not None else None
        record = {**record, _CHECKSUMS: state_checksums(state)}
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), record=ocp.args.JsonSave(record))
        self._pending, self._pending_bytes = step, needed
        try:
            self._manager.save(step, args=args, metrics=metrics, force=True)
        except Exception as e:
            raise self._write_failed(e) from None
        if tight:
            self._finish()

    def _finish(self) -> None:
        """Waits for the save in flight; its failure becomes one CheckpointWriteError."""
        if self._failed:
            return
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._write_failed(e) from None
        self._pending = None

    def _no_room(self, step: int, needed: int, free: int) -> str:
        latest = self.steps()
        resume = f"resume from step {latest[-1]}" if latest else "start it again"
        return (f"no space left on device for the checkpoint of step {step} in {self.directory}: it needs about "
                f"{_mb(needed)}, {_mb(free)} free; free some space, then run the same command to {resume}")

    def _write_failed(self, e: Exception) -> CheckpointWriteError:
        """Removes what the failed save left (`<step>.orbax-checkpoint-tmp*`) and says what failed."""
        self._failed = True
        step = self._pending
        if distributed.is_primary():
            for tmp in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(tmp, ignore_errors=True)
        chain, cause = [], e
        while cause is not None and len(chain) < 16:
            chain.append(cause)
            cause = cause.__cause__ or cause.__context__
        if any(getattr(c, "errno", None) == errno.ENOSPC or "No space left on device" in str(c) for c in chain):
            free = shutil.disk_usage(self.directory).free
            return CheckpointWriteError(self._no_room(step, self._pending_bytes, free))
        return CheckpointWriteError(f"writing the checkpoint of step {step} in {self.directory} failed: "
                                    f"{_damage_reason(e)}")

    def wait(self) -> None:
        self._finish()

    def _layout_mismatch(self, step: int, like_state) -> str | None:
        """How checkpoint `step`'s arrays differ from `like_state`'s (paths, shapes), or None when they
        agree or its metadata cannot be read (then the checkpoint itself is damaged)."""
        try:
            with _orbax_drains_tasks_on_error(), _quiet_absl():
                metadata = ocp.StandardCheckpointHandler().metadata(self.directory / str(step) / "state")
            saved = _path_shapes(metadata.tree)
        except Exception:
            return None
        if not saved:
            return None
        want = _path_shapes(like_state)
        for path in sorted(set(saved) | set(want)):
            if saved.get(path) != want.get(path):
                if path not in want:
                    return f"it holds '{path}', which this run's state has not"
                if path not in saved:
                    return f"it lacks '{path}', which this run's state has"
                return f"'{path}' has shape {saved[path]} there, {want[path]} here"
        return None

    def restore_latest(self, like_state) -> tuple[int, object, dict] | None:
        """Restores the newest readable checkpoint into the structure of `like_state`, or None.

        A checkpoint whose arrays are intact but shaped for another model or optimizer (an edited
        config.json, a swapped tokenizer) raises CheckpointError and stays where it is."""
        for step in reversed(self.steps()):
            try:
                args = ocp.args.Composite(state=ocp.args.StandardRestore(_abstract(like_state)),
                                          record=ocp.args.JsonRestore())
                with _orbax_drains_tasks_on_error(), _quiet_absl():
                    restored = self._manager.restore(step, args=args)
                record = dict(restored["record"])
                _check_checksums(restored["state"], record.pop(_CHECKSUMS, None))
                return step, restored["state"], record
            except Exception as e:  # orbax/tensorstore raise many types for damaged files
                mismatch = self._layout_mismatch(step, like_state)
                if mismatch is not None:
                    raise CheckpointError(
                        f"checkpoint at step {step} in {self.directory} does not fit the state this config "
                        f"builds: {mismatch} (was config.json or the tokenizer changed, or train.grad_clip "
                        "switched to or from 0?); nothing was moved") from e
                self._set_aside(step, _damage_reason(e))
        return None

    def _set_aside(self, step: int, reason: str) -> None:
        """Moves damaged checkpoint `step` to corrupt-<step>-<time>; in a read-only directory it
        stays where it is and is only skipped (restore_latest goes on with the previous one)."""
        aside = self.directory / f"corrupt-{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        if distributed.is_primary():  # one process moves it; the others wait for that
            try:
                (self.directory / str(step)).rename(aside)
                moved = True
            except OSError:
                moved = False
        else:
            moved = os.access(self.directory, os.W_OK)
        if moved:
            log.warning("checkpoint at step %d cannot be restored (%s); moved to %s, trying the previous one",
                        step, reason, aside.name)
            self.moved_aside.append(aside)
        else:
            log.warning("checkpoint at step %d cannot be restored (%s); skipped, not moved (%s is not writable), "
                        "trying the previous one", step, reason, self.directory)
            self.skipped.append(step)
        distributed.sync(f"lmlab_corrupt_{step}")
        if moved:
            self._manager.close()
            self._manager = self._open()

    def close(self) -> None:
        try:
            self._finish()
        finally:
            with contextlib.suppress(Exception) if self._failed else contextlib.nullcontext():
                self._manager.close()
