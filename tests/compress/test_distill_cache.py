"""Offline distillation end to end (lmlab.compress.distill_cache, lmlab.compress.topk_cache): a cache of
the whole vocabulary trains a student exactly as the online teacher does, step for step, with the
teacher's run directory gone; a cache made for other windows is refused in one line."""

import json
import re
import shutil

import numpy as np
import pytest

from lmlab import cli
from lmlab import config as config_lib
from lmlab.compress import topk_cache
from lmlab.compress.distill_cache import build_cache, training_starts
from lmlab.data.token_file import read_token_file
from lmlab.tasks.lm import window_starts
from lmlab.tokenizers import load_tokenizer
from lmlab.train import loop
from lmlab.train.metrics import read_metrics
from lmlab.train.state import initial_rng
from lmlab.train.step import batch_key
from tests.tiny_runs import GPT, TEXT, write_tiny_run

STUDENT = [
    "--config.data.corpus=shakespeare_tiny", "--config.data.seq_len=16", "--config.data.batch_size=4",
    "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=32",
    "--config.train.warmup_steps=2", "--config.train.log_every=1", "--config.train.steps_per_call=4",
    "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2",
    "--config.train.grad_accum=2", "--config.distill.alpha=0.6", "--config.distill.temperature=2.0",
]
DISTILL_METRICS = ("loss", "nll", "distill/kl", "distill/ce", "distill/teacher_nll")


def student(steps=8, *extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*STUDENT, f"--config.train.steps={steps}", *extra])


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A teacher, an online student of it, and a cache of its whole vocabulary (float32) for that config."""
    root = tmp_path_factory.mktemp("distill")
    teacher = write_tiny_run(root / "teacher")  # random weights: a teacher all the same
    loop.train(student(8, f"--config.distill.teacher={teacher}"), root / "online", progress=False)
    vocab = load_tokenizer(teacher / "tokenizer").vocab_size
    manifest = build_cache(teacher, root / "cache", student(8), top_k=vocab, dtype="float32")
    return {"root": root, "teacher": teacher, "online": root / "online", "cache": root / "cache", "vocab": vocab,
            "manifest": manifest}


def test_cache_holds_every_window_the_run_draws_once(runs):
    manifest, cache = runs["manifest"], runs["cache"]
    assert {k: manifest[k] for k in ("seed", "batch_size", "grad_accum", "seq_len", "steps", "top_k")} == {
        "seed": 0, "batch_size": 4, "grad_accum": 2, "seq_len": 16, "steps": 8, "top_k": runs["vocab"]}
    tokens = read_token_file(runs["online"] / "data" / "train.bin")  # what the online student trained on
    rng = initial_rng(0)
    drawn = {int(s) for p in range(8 * 2) for s in np.asarray(window_starts(len(tokens), batch_key(rng, p), 4, 16))}
    starts = np.load(cache / "starts.npy")
    assert sorted(drawn) == starts.tolist() == training_starts(student(8), len(tokens)).tolist()
    assert manifest["windows"] == len(starts) and np.load(cache / "ids.npy").shape == (len(starts), 16, runs["vocab"])
    assert (cache / "tokenizer" / "tokenizer.json").read_bytes() == (
        runs["teacher"] / "tokenizer" / "tokenizer.json").read_bytes()


def test_offline_student_trains_as_the_online_one_without_the_teacher(runs, tmp_path):
    gone = runs["root"] / "teacher-moved-away"
    shutil.move(runs["teacher"], gone)  # the teacher cannot be loaded: the cache alone must do
    try:
        loop.train(student(8, f"--config.distill.cache={runs['cache']}"), tmp_path / "offline", progress=False)
    finally:
        shutil.move(gone, runs["teacher"])
    online = [r for r in read_metrics(runs["online"]) if "loss" in r]
    offline = [r for r in read_metrics(tmp_path / "offline") if "loss" in r]
    assert [r["step"] for r in offline] == [r["step"] for r in online] == list(range(1, 9))
    for a, b in zip(online, offline):  # the same windows, the same soft targets, step for step
        for name in DISTILL_METRICS:
            assert b[name] == pytest.approx(a[name], rel=1e-4), (a["step"], name)
    assert json.loads((tmp_path / "offline" / "frozen.json").read_text()) == {}  # no frozen model at all


def test_a_cache_for_other_windows_is_refused_in_one_line_before_training(runs, tmp_path):
    cache = f"--config.distill.cache={runs['cache']}"
    (tmp_path / "other.txt").write_text(TEXT * 40)  # another corpus, in characters the tokenizer knows
    for extra, expected in [
        (("--config.seed=1",), "seed=0 (this run: 1)"),
        (("--config.data.batch_size=2", "--config.data.seq_len=8"), "batch_size=4 (this run: 2), seq_len=16 (this run: 8)"),
        (("--config.train.grad_accum=1",), "grad_accum=2 (this run: 1)"),
        ((f"--config.data.corpus={tmp_path / 'other.txt'}",), "training tokens"),
    ]:
        with pytest.raises(config_lib.ConfigError) as info:
            loop.train(student(8, cache, *extra), tmp_path / "run", progress=False)
        assert expected in one_line(info) and "was made for other training windows" in str(info.value)
        assert not (tmp_path / "run").exists()  # nothing of the refused run is left
    with pytest.raises(config_lib.ConfigError) as info:
        loop.train(student(12, cache), tmp_path / "run", progress=False)
    assert "steps=8 (this run: train.steps=12, beyond the cache)" in one_line(info)
    with pytest.raises(config_lib.ConfigError, match="not a distillation cache"):
        loop.train(student(8, f"--config.distill.cache={tmp_path}"), tmp_path / "run", progress=False)
    with pytest.raises(config_lib.ConfigError, match="not both"):
        student(8, cache, f"--config.distill.teacher={runs['teacher']}")
    with pytest.raises(config_lib.ConfigError) as info:  # host batches carry no top-k rows
        loop.train(student(8, cache, "--config.data.loader=host"), tmp_path / "run", progress=False)
    assert "needs the on-device loader" in one_line(info)
    assert not (tmp_path / "run").exists()


def test_check_fits_names_a_tokenizer_that_differs(runs, tmp_path):
    other = tmp_path / "run"
    shutil.copytree(runs["cache"] / "tokenizer", other / "tokenizer")
    sha = runs["manifest"]["train_tokens_sha256"]
    topk_cache.check_fits(runs["manifest"], student(4), runs["cache"], other, sha)  # fewer steps: a prefix, fine
    (other / "tokenizer" / "tokenizer.json").write_text("{}")
    with pytest.raises(config_lib.ConfigError) as info:
        topk_cache.check_fits(runs["manifest"], student(8), runs["cache"], other, sha)
    assert one_line(info).endswith("windows: tokenizer; make a cache with this run's config "
                                   "(lmlab distill cache ... --config CONFIG)")


def test_cli_writes_a_float16_cache_and_refuses_bad_input_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["distill", "cache", str(runs["teacher"]), "--config", "configs/gpt_shakespeare.py", *STUDENT,
            "--config.train.steps=2"]
    assert cli.main([*args, "--top-k", "3", "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["top_k"] == 3 and printed["steps"] == 2 and printed["dtype"] == "float16"
    logp, ids = np.load(out / "logp.npy"), np.load(out / "ids.npy")
    assert logp.dtype == np.float16 and ids.dtype == np.int32 and logp.shape == ids.shape == (printed["windows"], 16, 3)
    assert (np.diff(logp.astype(np.float32), axis=-1) <= 0).all() and (logp <= 0).all()  # most likely first
    for extra, status, message in [
        (["--top-k", "3", "--out", str(out)], 1, "already exists and is not empty"),
        (["--top-k", "0", "--out", str(tmp_path / "x")], 2, "--top-k must be >= 1"),
        ([f"--top-k={runs['vocab'] + 1}", "--out", str(tmp_path / "x")], 2, f"--top-k must be in 1..{runs['vocab']}"),
    ]:
        assert cli.main([*args, *extra]) == status
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if re.match(r"lmlab( distill)?: error: ", line)]
        assert len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
    assert cli.main(["distill", "cache", str(tmp_path / "nope"), "--out", str(tmp_path / "x")]) == 2
    assert "not an lmlab run directory" in capsys.readouterr().err
    learned = write_tiny_run(tmp_path / "learned", GPT, "--config.model.positions=learned")  # max_len 32
    assert cli.main(["distill", "cache", str(learned), "--config.data.seq_len=48", "--config.model.max_len=64",
                     "--out", str(tmp_path / "x")]) == 2  # the student may be longer; the teacher may not
    assert "data.seq_len 48 exceeds the teacher's model.max_len 32" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob("*.partial"))
