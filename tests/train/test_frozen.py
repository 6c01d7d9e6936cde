"""Frozen models through the trainer (lmlab.train.frozen), with distillation as the task that reads
one: the teacher never changes and never enters the student's checkpoints, task metrics reach
metrics.jsonl (train and eval/), a resume refuses a changed teacher, tokenizers must agree."""

import hashlib
import pathlib

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest

from lmlab import config as config_lib
from lmlab.tokenizers import load_tokenizer
from lmlab.train import frozen as frozen_lib
from lmlab.train import loop
from lmlab.train.checkpoint import _path_shapes
from lmlab.train.metrics import MetricWindow, read_metrics
from lmlab.train.state import init_state

TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char",
    "--config.data.seq_len=32", "--config.data.batch_size=4",
    "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.warmup_steps=2", "--config.train.log_every=1", "--config.train.steps_per_call=4",
    "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2",
]


def tiny(steps, *extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*TINY, f"--config.train.steps={steps}", *extra])


def tree_digest(directory: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(directory)).encode() + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("teacher")
    loop.train(tiny(16, "--config.model.d_model=48", "--config.model.n_layers=2"), run_dir, progress=False)
    return run_dir


@pytest.fixture(scope="module")
def student(teacher, tmp_path_factory):
    before = tree_digest(teacher)
    run_dir = tmp_path_factory.mktemp("student")
    loop.train(tiny(16, f"--config.distill.teacher={teacher}", "--config.distill.alpha=0.5",
                    "--config.distill.temperature=2.0"), run_dir, progress=False)
    return run_dir, before


def test_teacher_is_read_only_and_shares_its_tokenizer(teacher, student):
    run_dir, before = student
    assert tree_digest(teacher) == before  # not a byte of the teacher's run directory changed
    assert tree_digest(run_dir / "tokenizer") == tree_digest(teacher / "tokenizer")
    record = (run_dir / frozen_lib.RECORD_FILE).read_text()
    assert str(teacher.resolve()) in record and '"step": 16' in record


def test_student_checkpoints_hold_only_the_student(teacher, student):
    run_dir, _ = student
    meta = ocp.StandardCheckpointHandler().metadata(run_dir / "checkpoints" / "16" / "state")
    config = config_lib.load_run_config(run_dir)
    _, _, _, abstract = init_state(config, load_tokenizer(run_dir / "tokenizer").vocab_size)
    assert set(meta.tree) == set(abstract) == {"params", "opt_state", "step", "rng"}
    assert _path_shapes(meta.tree) == _path_shapes(abstract)  # leaf for leaf: no teacher array anywhere
    teacher_meta = ocp.StandardCheckpointHandler().metadata(teacher / "checkpoints" / "16" / "state")
    assert teacher_meta.tree["params"]["embed"]["embedding"].shape[1] == 48  # != the student's 32


def test_distillation_metrics_are_logged_in_training_and_evaluation(student):
    run_dir, _ = student
    records = read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    assert [r["step"] for r in train] == list(range(1, 17))
    for r in train:
        assert {"nll", "distill/kl", "distill/ce", "distill/teacher_nll"} <= set(r)
        assert r["distill/ce"] == pytest.approx(r["nll"]) and r["distill/kl"] > 0
        # alpha 0.5, T 2, no label smoothing: loss = 0.5 * ce + 0.5 * 4 * kl, each averaged over the step.
        assert r["loss"] == pytest.approx(0.5 * r["nll"] + 2.0 * r["distill/kl"], rel=1e-4)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [8, 16]
    for r in evals:
        assert r["eval/nll"] == pytest.approx(r["val_loss"]) and r["eval/distill/kl"] > 0
        assert r["eval/distill/ce"] == pytest.approx(r["val_loss"])
    summary = (run_dir / "eval.json").read_text()
    assert "eval/distill/teacher_nll" in summary


def test_resume_refuses_a_teacher_that_changed(teacher, student, tmp_path):
    run_dir, _ = student
    import shutil

    moved = tmp_path / "teacher"
    shutil.copytree(teacher, moved)
    shutil.copytree(run_dir, tmp_path / "student")
    config = tiny(24, f"--config.distill.teacher={moved}", "--config.distill.alpha=0.5",
                  "--config.distill.temperature=2.0")
    with pytest.raises(config_lib.ConfigError) as info:  # another path: the recorded source is gone
        loop.train(config, tmp_path / "student", progress=False)
    assert "frozen model 'teacher' changed" in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "student" / "checkpoints" / "16").is_dir()  # nothing of the student was lost


def test_teacher_trained_on_is_refused_on_resume(tmp_path):
    teacher_dir, student_dir = tmp_path / "t", tmp_path / "s"
    loop.train(tiny(8), teacher_dir, progress=False)
    distill = [f"--config.distill.teacher={teacher_dir}", "--config.distill.alpha=0.9"]
    loop.train(tiny(8, *distill), student_dir, progress=False)
    loop.train(tiny(16), teacher_dir, progress=False)  # the teacher trains on: step 16 now
    with pytest.raises(config_lib.ConfigError, match="at step 8.*-> .*at step 16"):
        loop.train(tiny(16, *distill), student_dir, progress=False)
    # A teacher added to a run that had none is a change too.
    with pytest.raises(config_lib.ConfigError, match="changed since this run started \\(none ->"):
        loop.train(tiny(16, f"--config.distill.teacher={student_dir}"), teacher_dir, progress=False)


def test_teacher_with_another_tokenizer_is_refused_and_nothing_is_written(teacher, tmp_path):
    other = tmp_path / "bpe_run"  # same corpus, another tokenizer (BPE ids)
    other.mkdir()
    (other / "tokenizer").mkdir()
    (other / "tokenizer" / "tokenizer.json").write_text("{}")
    run_dir = tmp_path / "student"
    with pytest.raises(config_lib.ConfigError, match="different tokenizers") as info:
        loop.train(tiny(8, f"--config.distill.teacher={teacher}", f"--config.train.init_from={other}"), run_dir,
                   progress=False)
    assert "\n" not in str(info.value)
    assert not run_dir.exists()


def test_metric_window_averages_between_logged_steps():
    window = MetricWindow()
    for value in (1.0, 2.0, 6.0):
        window.add({"a": value, "b": -value})
    assert window.pop_means() == {"a": 3.0, "b": -3.0}
    assert window.pop_means() == {}


def test_fingerprint_sees_every_value_and_path():
    params = {"a": jnp.arange(6, dtype=jnp.float32).reshape(2, 3), "b": {"c": jnp.ones((4,), jnp.float32)}}
    base = frozen_lib.fingerprint(params)
    assert frozen_lib.fingerprint(jax.tree.map(jnp.copy, params)) == base
    flipped = {**params, "a": params["a"].at[1, 2].set(5.000001)}
    swapped = {**params, "a": params["a"][::-1]}  # same values, other places
    renamed = {"a": params["a"], "d": params["b"]}
    assert len({base, frozen_lib.fingerprint(flipped), frozen_lib.fingerprint(swapped),
                frozen_lib.fingerprint(renamed)}) == 4
