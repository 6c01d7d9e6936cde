import asyncio
import gc
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest
from orbax.checkpoint._src import asyncio_utils

from lmlab.train import checkpoint
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
