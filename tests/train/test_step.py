import jax
import jax.numpy as jnp
import numpy as np
import optax

from lmlab import config as config_lib
from lmlab.tasks import LossOutput, get_task
from lmlab.tasks.lm import sample_windows
from lmlab.train.optimizer import make_schedule
from lmlab.train.state import init_state
from lmlab.train.step import DATA_STREAM, make_loss_fn, make_train_chunk

TINY = ["data.seq_len=16", "data.batch_size=3", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
        "model.n_kv_heads=2", "model.d_ff=32", "model.max_len=32", "train.grad_clip=0", "train.warmup_steps=0"]


def test_sample_windows_are_deterministic_and_shifted():
    tokens = jnp.arange(1000, dtype=jnp.uint16)
    a = sample_windows(tokens, jax.random.key(3), 4, 10)
    b = sample_windows(tokens, jax.random.key(3), 4, 10)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 11) and a.dtype == jnp.int32
    np.testing.assert_array_equal(a[:, 1:] - a[:, :-1], 1)  # contiguous windows
    assert int(a.max()) < 1000


def test_gradient_accumulation_averages_micro_batch_gradients():
    config = config_lib.load("configs/gpt_shakespeare.py", [*TINY, "train.grad_accum=2"])
    _, graphdef, _, state = init_state(config, 50)
    tx = optax.sgd(1.0)  # params move by exactly minus the (averaged) gradient
    state["opt_state"] = tx.init(state["params"])
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 50, 500), jnp.int32)
    params0 = jax.tree.map(jnp.copy, state["params"])
    task = get_task(config)
    chunk = make_train_chunk(graphdef, tx, config, 1, make_schedule(config.train), task)
    new_state, metrics = chunk(state, {"tokens": tokens}, {})

    # By hand: micro-batches at data positions 0 and 1 of step 0, gradients averaged, one update.
    loss_fn = make_loss_fn(graphdef, task)
    data_key = jax.random.fold_in(jax.random.wrap_key_data(new_state["rng"]), DATA_STREAM)
    grads, losses = [], []
    loss_and_grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))  # eager: 10x slower on CPU
    for position in (0, 1):
        windows = sample_windows(tokens, jax.random.fold_in(data_key, position), 3, 16)
        (loss, _), g = loss_and_grad(params0, windows, None, {})
        grads.append(g)
        losses.append(loss)
    mean_grads = jax.tree.map(lambda a, b: (a + b) / 2, *grads)
    expected = jax.tree.map(lambda p, g: p - g, params0, mean_grads)
    np.testing.assert_allclose(metrics["loss"][0], np.mean(losses), rtol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state["params"]), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert int(new_state["step"]) == 1


def test_gradient_accumulation_equals_one_batch_when_micro_batches_score_different_counts():
    """Micro-batches whose losses are means over different numbers of targets (padding, MLM
    selections): the accumulated step is the mean over all targets of the two micro-batches,
    as one batch of both would give, not the mean of the two means."""
    from lmlab.tasks.lm import LMTask
    from lmlab.train.losses import token_cross_entropy

    class SparseTargets(LMTask):  # scores only targets below 8: a batch's count varies widely
        def loss(self, model, batch, dropout_key, frozen):
            logits_BTV, _ = model(batch[:, :-1])
            _, nll_BT = token_cross_entropy(logits_BTV, batch[:, 1:])
            weights_BT = (batch[:, 1:] < 8).astype(jnp.float32)
            n = weights_BT.sum()
            mean = (nll_BT * weights_BT).sum() / jnp.maximum(n, 1.0)
            return LossOutput(mean, n, {"nll": mean, "scored": weights_BT.mean()})

    config = config_lib.load("configs/gpt_shakespeare.py", [*TINY, "train.grad_accum=2"])
    _, graphdef, _, state = init_state(config, 50)
    tx = optax.sgd(1.0)
    state["opt_state"] = tx.init(state["params"])
    rng = np.random.default_rng(1)
    # Low ids are common in the first half of the stream and rare in the second.
    tokens = jnp.asarray(np.concatenate([rng.integers(0, 12, 250), rng.integers(6, 50, 250)]), jnp.int32)
    task = SparseTargets(config)
    params0 = jax.tree.map(jnp.copy, state["params"])
    new_state, metrics = make_train_chunk(graphdef, tx, config, 1, make_schedule(config.train), task)(
        state, {"tokens": tokens}, {})

    data_key = jax.random.fold_in(jax.random.wrap_key_data(new_state["rng"]), DATA_STREAM)
    both = jnp.concatenate([sample_windows(tokens, jax.random.fold_in(data_key, p), 3, 16) for p in (0, 1)])
    counts = [int((both[rows, 1:] < 8).sum()) for rows in (slice(0, 3), slice(3, 6))]
    assert max(counts) > 1.5 * min(counts) > 0, counts  # the case the plain mean of means gets wrong
    (loss, _), grads = jax.jit(jax.value_and_grad(make_loss_fn(graphdef, task), has_aux=True))(params0, both, None, {})
    np.testing.assert_allclose(metrics["loss"][0], loss, rtol=1e-5)
    for a, p, g in zip(jax.tree.leaves(new_state["params"]), jax.tree.leaves(params0), jax.tree.leaves(grads)):
        np.testing.assert_allclose(a, p - g, rtol=1e-5, atol=1e-6)


def test_host_batches_train_exactly_like_the_same_batches_drawn_on_device():
    """The chunk's host path (data.loader=host) fed, stacked [steps, accum, B, T+1], the very windows
    the device path draws: the same losses, gradient norms and parameters, bit for bit, over 2 steps
    of 2 micro-batches each (so the stacking order matters)."""
    config = config_lib.load("configs/gpt_shakespeare.py", [*TINY, "train.grad_accum=2", "train.grad_clip=1.0"])
    task = get_task(config)
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 50, 500), jnp.uint16)
    runs = {}
    for host in (False, True):
        _, graphdef, tx, state = init_state(config, 50)
        data_key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), DATA_STREAM)
        windows = jnp.stack([jnp.stack([sample_windows(tokens, jax.random.fold_in(data_key, step * 2 + i), 3, 16)
                                        for i in (0, 1)]) for step in (0, 1)])
        chunk = make_train_chunk(graphdef, tx, config, 2, make_schedule(config.train), task, host_batches=host)
        runs[host] = chunk(state, windows if host else {"tokens": tokens}, {})
    (device_state, device_metrics), (host_state, host_metrics) = runs[False], runs[True]
    for key in ("loss", "grad_norm"):
        np.testing.assert_array_equal(host_metrics[key], device_metrics[key])
    assert not np.array_equal(device_metrics["loss"][0], device_metrics["loss"][1])
    for a, b in zip(jax.tree.leaves(host_state["params"]), jax.tree.leaves(device_state["params"])):
        np.testing.assert_array_equal(a, b)
