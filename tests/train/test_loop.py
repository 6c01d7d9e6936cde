"""End-to-end trainer behaviour on a tiny model: resume exactness, preemption, corruption, NaN guard."""

import json
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lmlab import config as config_lib
from lmlab.train import loop
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.metrics import read_metrics

TINY = [
    "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char",
    "--config.data.seq_len=32", "--config.data.batch_size=4",
    "--config.model.n_layers=2", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.warmup_steps=5", "--config.train.log_every=1", "--config.train.steps_per_call=4",
    "--config.train.eval_every=8", "--config.train.checkpoint_every=8", "--config.train.eval_batches=2",
    "--config.model.dropout=0.1",  # exercises the dropout RNG stream across a resume
]


def tiny_config(steps, *extra):
    return config_lib.load("configs/gpt_shakespeare.py", [*TINY, f"--config.train.steps={steps}", *extra])


def losses(run_dir):
    return {m["step"]: m["loss"] for m in read_metrics(run_dir) if "loss" in m}


def cli(run_dir, steps, *extra):
    return [sys.executable, "-m", "lmlab.cli", "train", "configs/gpt_shakespeare.py", *TINY,
            f"--config.train.steps={steps}", "--workdir", str(run_dir), "--no-progress", "--no-samples", *extra]


def wait_for_step(run_dir, step, proc, timeout=180):
    deadline = time.time() + timeout
    path = pathlib.Path(run_dir) / "metrics.jsonl"
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"trainer exited early: {proc.stderr.read()}")
        if path.exists() and any(m.get("step", 0) >= step for m in read_metrics(run_dir)):
            return
        time.sleep(0.02)
    raise AssertionError("trainer made no progress")


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """An uninterrupted 200-step run."""
    run_dir = tmp_path_factory.mktemp("reference")
    summary = loop.train(tiny_config(200), run_dir, progress=False)
    return run_dir, summary


def test_reference_run_learns_and_writes_its_files(reference_run):
    run_dir, summary = reference_run
    for name in ("config.json", "tokenizer/tokenizer.json", "data/train.bin", "metrics.jsonl", "eval.json", "tb"):
        assert (run_dir / name).exists(), name
    records = read_metrics(run_dir)
    assert [m["step"] for m in records if "loss" in m] == list(range(1, 201))
    evals = [m for m in records if "val_loss" in m]
    assert [m["step"] for m in evals] == list(range(8, 201, 8))
    assert {"val_ppl", "val_bpb"} <= set(evals[0])
    assert records[-1]["step"] == 200 and all(m["tokens_per_sec"] > 0 for m in records if "loss" in m)
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5
    assert summary["val_bpb"] == pytest.approx(summary["val_loss"] / np.log(2) * summary["val_tokens"]
                                              / _val_bytes(run_dir), rel=1e-6)
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["train"]["steps"] == 200 and saved["model"]["d_model"] == 32
    # keep=3 latest plus the best by val loss (here also the latest).
    assert Checkpointer(run_dir / "checkpoints", keep=3).steps() == [184, 192, 200]


def _val_bytes(run_dir):
    from lmlab.data.token_file import read_token_file
    from lmlab.tokenizers import load_tokenizer

    tokens = np.asarray(read_token_file(run_dir / "data" / "val.bin"))
    return int(load_tokenizer(run_dir / "tokenizer").token_byte_lengths()[tokens[1:]].sum())


def test_sigkill_then_resume_reproduces_every_loss(reference_run, tmp_path):
    ref_dir, ref_summary = reference_run
    run_dir = tmp_path / "killed"
    proc = subprocess.Popen(cli(run_dir, 200), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    wait_for_step(run_dir, 20, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run_dir / "eval.json").exists(), "run finished before the kill; the test proved nothing"
    killed_at = max(Checkpointer(run_dir / "checkpoints").steps(), default=0)
    assert 8 <= killed_at < 200
    summary = loop.train(tiny_config(200), run_dir, progress=False)
    assert losses(run_dir) == losses(ref_dir)  # exact float equality at every step
    assert summary["val_loss"] == ref_summary["val_loss"]


def test_sigterm_saves_a_checkpoint_and_exits(reference_run, tmp_path):
    ref_dir, _ = reference_run
    run_dir = tmp_path / "term"
    proc = subprocess.Popen(cli(run_dir, 200), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    wait_for_step(run_dir, 12, proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "run the same command to resume" in err and "Traceback" not in err
    last_logged = max(losses(run_dir))
    assert Checkpointer(run_dir / "checkpoints").steps()[-1] == last_logged  # saved where it stopped
    done = subprocess.run(cli(run_dir, 200), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert losses(run_dir) == losses(ref_dir)


def _damage(step_dir: pathlib.Path):
    files = [p for p in step_dir.rglob("*") if p.is_file() and "ocdbt" in str(p) and p.stat().st_size > 0]
    assert files
    for p in files:
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def test_corrupt_latest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    run_dir = tmp_path / "corrupt"
    loop.train(tiny_config(24), run_dir, progress=False)
    original = losses(run_dir)
    ckpt = run_dir / "checkpoints"
    assert Checkpointer(ckpt).steps() == [8, 16, 24]
    _damage(ckpt / "24")
    with caplog.at_level("WARNING", logger="lmlab"):
        loop.train(tiny_config(24), run_dir, progress=False)
    assert any("step 24 cannot be restored" in r.message for r in caplog.records)
    moved = [p.name for p in ckpt.iterdir() if p.name.startswith("corrupt-24-")]
    assert len(moved) == 1  # kept for inspection, not overwritten
    assert Checkpointer(ckpt).steps() == [8, 16, 24]
    assert losses(run_dir) == original  # steps 17..24 retrained from step 16, bit for bit


@pytest.mark.parametrize("metric", ["loss", "grad_norm"])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, metric):
    """A non-finite loss, or a finite loss whose gradient is not (its update ruins the parameters)."""
    real = loop.make_train_chunk

    class Poisoned:  # stands in for the jitted chunk: .lower(...).compile() -> callable
        def __init__(self, jitted):
            self.jitted = jitted

        def lower(self, *args):
            self.compiled = self.jitted.lower(*args).compile()
            return self

        def compile(self):
            def run(state, tokens, frozen):
                state, metrics = self.compiled(state, tokens, frozen)
                if int(state["step"]) > 8:  # the chunk that ends at step 12 goes bad at step 10
                    metrics = dict(metrics, **{metric: metrics[metric].at[1].set(np.nan)})
                return state, metrics

            return run

    def poisoned(*args, **kwargs):
        return Poisoned(real(*args, **kwargs))

    monkeypatch.setattr(loop, "make_train_chunk", poisoned)
    run_dir = tmp_path / "nan"
    with pytest.raises(loop.NonFiniteLossError) as info:
        loop.train(tiny_config(40), run_dir, progress=False)
    message = str(info.value)
    assert "step 10" in message and "step 8" in message and "\n" not in message
    assert message.startswith("loss became nan" if metric == "loss" else "gradient norm became nan")
    assert Checkpointer(run_dir / "checkpoints").steps() == [8]
    assert max(losses(run_dir)) == 9


def test_resume_with_a_different_model_is_refused(reference_run):
    ref_dir, _ = reference_run
    with pytest.raises(config_lib.ConfigError, match="model.d_model"):
        loop.train(tiny_config(200, "--config.model.d_model=64"), ref_dir, progress=False)


@pytest.mark.slow  # eval and sample from the CLI are also tests/test_cli.py's, on tiny runs
def test_cli_eval_and_sample(reference_run):
    ref_dir, summary = reference_run
    out = subprocess.run([sys.executable, "-m", "lmlab.cli", "eval", str(ref_dir)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["step"] == 200 and result["val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    out = subprocess.run([sys.executable, "-m", "lmlab.cli", "sample", str(ref_dir), "--prompt", "HAMLET:\n",
                          "--max-new-tokens", "20", "--temperature", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("HAMLET:\n") and len(out.stdout) > len("HAMLET:\n") + 5
    out = subprocess.run([sys.executable, "-m", "lmlab.cli", "sample", str(ref_dir), "--prompt", "HAMLET:\n",
                          "--max-new-tokens", "12", "--beam", "3", "--num-samples", "2"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("HAMLET:\n") == 2
    bad = subprocess.run([sys.executable, "-m", "lmlab.cli", "eval", str(ref_dir / "nope")], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and bad.stderr.startswith("lmlab: error:") and "Traceback" not in bad.stderr


def test_profile_trace_is_written(tmp_path):
    run_dir = tmp_path / "prof"
    loop.train(tiny_config(8, "--config.train.profile_chunks=1"), run_dir, progress=False)
    traces = list((run_dir / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_chunk_size_lands_on_every_boundary_and_says_when_it_shrinks(tmp_path, caplog):
    def size(steps, start=0, per_call=8, every=16):
        config = tiny_config(steps, f"--config.train.steps_per_call={per_call}", f"--config.train.eval_every={every}",
                             f"--config.train.checkpoint_every={every}")
        return loop._chunk_size(config, start)

    assert size(64) == 8 and size(64, start=16) == 8
    assert size(63) == 1 and size(64, start=20) == 4 and size(64, every=12) == 4
    with caplog.at_level("WARNING", logger="lmlab"):
        loop.train(tiny_config(3, "--config.train.steps_per_call=2", "--config.train.eval_every=3",
                               "--config.train.checkpoint_every=3"), tmp_path / "odd", progress=False)
    assert any("running 1 step(s) per call, not train.steps_per_call=2" in r.message for r in caplog.records)


def test_refused_resume_names_every_differing_key(tmp_path):
    saved = tiny_config(8)
    wanted = tiny_config(8, "--config.model.d_model=64", "--config.seed=3", "--config.data.seq_len=16")
    with pytest.raises(config_lib.ConfigError) as info:
        loop.check_resume_compatible(saved, wanted, tmp_path)
    message = str(info.value)
    for change in ("data.seq_len=32 (this command: 16)", "model.d_model=32 (this command: 64)",
                   "seed=0 (this command: 3)"):
        assert change in message
    assert "\n" not in message


def test_final_full_evaluation_is_in_metrics_jsonl_and_equals_eval_json(tmp_path):
    from tests.train.test_metrics import tensorboard_scalars

    run_dir = tmp_path / "run"
    summary = loop.train(tiny_config(8), run_dir, progress=False)
    records = read_metrics(run_dir)
    final = records[-1]
    assert final["step"] == 8 and final["final_val_loss"] == pytest.approx(summary["val_loss"], rel=1e-6)
    eval_json = json.loads((run_dir / "eval.json").read_text())
    assert final["final_val_tokens"] == summary["val_tokens"] == eval_json["val_tokens"]
    periodic = [m for m in records if "val_loss" in m][-1]  # eval_batches=2 of the held-out windows
    assert periodic["step"] == 8 and periodic["val_loss"] != final["final_val_loss"]
    assert tensorboard_scalars(run_dir)[("final_val_loss", 8)] == pytest.approx(summary["val_loss"], rel=1e-6)


def test_qat_training_prints_the_quantization_policy_once(tmp_path, caplog):
    from lmlab.models.quantize import describe

    config = tiny_config(2, "--config.quant.qat=int4", "--config.quant.group=16", "--config.model.dropout=0.0",
                         "--config.train.steps_per_call=2", "--config.train.eval_every=2",
                         "--config.train.checkpoint_every=2")
    with caplog.at_level("INFO", logger="lmlab"):
        loop.train(config, tmp_path / "qat", progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("quantization: ")]
    assert lines == [f"quantization: {describe(config.quant)}"]
    assert "int4 groups of 16" in lines[0] and "fake-quantized while training (QAT)" in lines[0]
