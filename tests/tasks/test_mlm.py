"""The BERT tasks end to end on a tiny model: MLM pretraining, `lmlab eval`, classifier fine-tuning."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import cli
from lmlab import config as config_lib
from lmlab.data.mlm import max_selected
from lmlab.tasks import get_task
from lmlab.tasks.classify import ClassifyTask
from lmlab.tasks.mlm import MLMTask, mlm_loss
from lmlab.train import loop
from lmlab.train.init_from import load_init_params
from lmlab.train.metrics import read_metrics
from lmlab.train.state import init_state

# A small BPE rather than characters: the classifier below then sees whole names and words, and
# learns which play a passage is from in a few hundred tiny steps (with characters it barely moves).
TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.vocab_size=512",
    "--config.data.seq_len=32", "--config.data.batch_size=8",
    "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.learning_rate=3e-3", "--config.train.warmup_steps=2", "--config.train.log_every=1",
    "--config.train.steps_per_call=10", "--config.train.eval_every=10", "--config.train.checkpoint_every=10",
    "--config.train.eval_batches=2",
]


def tiny_config(*extra, path="configs/bert_shakespeare.py"):
    return config_lib.load(path, [*TINY, *extra])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 20-step MLM pretraining run."""
    run_dir = tmp_path_factory.mktemp("bert_run")
    summary = loop.train(tiny_config("--config.train.steps=20"), run_dir, progress=False)
    return run_dir, summary


@pytest.fixture(scope="module")
def task_and_data(pretrained):
    run_dir, _ = pretrained
    config = config_lib.load_run_config(run_dir)
    task = get_task(config)
    return config, task, task.prepare(run_dir)  # reads the run's files


def test_pretraining_writes_masked_token_metrics(pretrained):
    run_dir, summary = pretrained
    saved = json.loads((run_dir / "eval.json").read_text())
    assert saved == pytest.approx(summary)
    assert {"val_loss", "val_ppl", "mlm_accuracy", "val_tokens"} <= set(saved)
    evals = [m for m in read_metrics(run_dir) if "val_loss" in m]
    assert [m["step"] for m in evals] == [10, 20] and all("mlm_accuracy" in m for m in evals)
    # Every train step's gradient was finite and non-zero.
    grad_norms = [m["grad_norm"] for m in read_metrics(run_dir) if "grad_norm" in m]
    assert len(grad_norms) == 20 and all(0 < g < float("inf") for g in grad_norms)
    # 20 steps already beat a uniform guess over the 512 ids (log 512 = 6.24), and keep improving.
    assert saved["val_loss"] < 5.9 and evals[1]["val_loss"] < evals[0]["val_loss"]
    assert 0.0 < saved["mlm_accuracy"] < 1.0
    # Full evaluation: ~15% of the held-out tokens, masked once.
    n_val = len(np.fromfile(run_dir / "data" / "val.bin", np.uint16))
    assert 0.13 < saved["val_tokens"] / n_val < 0.17


def test_lmlab_eval_prints_mlm_accuracy(pretrained, capsys):
    run_dir, summary = pretrained
    assert cli.main(["eval", str(run_dir)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["step"] == 20
    # The held-out masking is fixed (a constant key), so a new evaluator in a new command gives
    # exactly the numbers of the end of training.
    for key in ("val_loss", "mlm_accuracy", "val_tokens"):
        assert result[key] == pytest.approx(summary[key], rel=1e-6)


def test_sample_batch_is_a_function_of_the_key(task_and_data):
    config, task, data = task_and_data
    assert isinstance(task, MLMTask)
    arrays = {"tokens": jnp.asarray(data.train["tokens"])}
    sample = jax.jit(task.sample_batch)
    a, b, c = sample(arrays, jax.random.key(1)), sample(arrays, jax.random.key(1)), sample(arrays, jax.random.key(2))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["inputs"], c["inputs"])
    inputs, targets, weights = (np.asarray(a[k]) for k in ("inputs", "targets", "weights"))
    assert inputs.shape == (8, 32)
    assert (targets[:, 0] == task.ids.cls).all() and (targets[:, -1] == task.ids.sep).all()
    assert (weights[:, [0, -1]] == 0).all()
    assert (weights.sum(1) <= max_selected(32, 0.15)).all() and weights.sum() >= 8 * 4
    assert (inputs[weights > 0] == task.ids.mask).mean() > 0.5
    np.testing.assert_array_equal(inputs[weights == 0], targets[weights == 0])


def test_loss_counts_only_the_selected_positions(task_and_data):
    config, task, data = task_and_data
    _, graphdef, _, state = init_state(config, data.tokenizer.vocab_size)
    batch = jax.jit(task.sample_batch)({"tokens": jnp.asarray(data.train["tokens"])}, jax.random.key(0))
    weights = np.asarray(batch["weights"])
    unselected = tuple(np.argwhere(weights[:, 1:-1] == 0)[0] + [0, 1])
    selected = tuple(np.argwhere(weights > 0)[0])

    @jax.jit
    def losses(params, batch):
        model = nnx.merge(graphdef, nnx.State(params))
        gathered = task.loss(model, batch, None, {})            # only the selected positions reach the head
        every_position = mlm_loss(model, batch, None)           # T x V logits, weighted
        return gathered, every_position

    (objective, n_selected, metrics), (objective_all, n_all, metrics_all) = losses(state["params"], batch)
    assert float(n_selected) == float(n_all) == float(weights.sum())
    assert objective == pytest.approx(float(objective_all), rel=1e-5) and objective == pytest.approx(float(metrics["nll"]))
    assert float(metrics["accuracy"]) == pytest.approx(float(metrics_all["accuracy"]))
    other = (np.asarray(batch["targets"]) + 1) % data.tokenizer.vocab_size
    changed_unselected = {**batch, "targets": batch["targets"].at[unselected].set(other[unselected])}
    changed_selected = {**batch, "targets": batch["targets"].at[selected].set(other[selected])}
    assert losses(state["params"], changed_unselected)[0][0] == objective
    assert losses(state["params"], changed_selected)[0][0] != objective


def test_finetuning_a_classifier_starts_from_the_pretrained_encoder(pretrained, tmp_path):
    run_dir, _ = pretrained
    config = tiny_config("--config.data.classify_docs=hamlet,the-tempest", "--config.model.n_classes=2",
                         f"--config.train.init_from={run_dir}", "--config.data.seq_len=64",
                         "--config.data.batch_size=32", "--config.train.learning_rate=2e-3",
                         "--config.train.steps=200", "--config.train.steps_per_call=50",
                         "--config.train.eval_every=200", "--config.train.checkpoint_every=200",
                         "--config.train.eval_batches=0", "--config.model.dropout=0.0",
                         path="configs/bert_classify_shakespeare.py")
    assert isinstance(get_task(config), ClassifyTask)

    # Step 0: every encoder parameter is the pretraining run's; only the head is new.
    from lmlab.runs import load_run

    source = nnx.to_flat_state(nnx.State(load_run(run_dir).params))
    source = {"/".join(map(str, path)): value for path, value in source}
    _, _, _, state = init_state(config, 512)
    start = load_init_params(state, str(run_dir))["params"]
    start = {"/".join(map(str, path)): value for path, value in nnx.to_flat_state(nnx.State(start))}
    assert set(start) - set(source) == {"classifier/kernel", "classifier/bias"}
    for name in set(start) & set(source):
        np.testing.assert_array_equal(start[name], source[name], err_msg=name)

    summary = loop.train(config, tmp_path / "cls", progress=False)
    assert (tmp_path / "cls" / "tokenizer" / "tokenizer.json").read_text() == \
        (run_dir / "tokenizer" / "tokenizer.json").read_text()
    # Held-out passages from the end of each play, balanced: chance is 50%.
    assert summary["val_examples"] > 300
    assert summary["val_accuracy"] > 0.6, summary
