import jax.numpy as jnp
import numpy as np

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


def test_empty_directory_restores_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "none")
    assert ckpt.restore_latest({"w": jnp.zeros(3)}) is None
    ckpt.close()
