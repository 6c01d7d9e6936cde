"""`lmlab bench train | attention | decode` and the GPU-sized configs, on tiny shapes."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from lmlab import bench, cli, flops
from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.runs import load_run
from lmlab.train import loop

TINY_MODEL = [
    "--config.data.seq_len=32", "--config.data.batch_size=2", "--config.tokenizer.vocab_size=64",
    "--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
    "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.max_len=64",
    "--config.train.steps_per_call=2",
]
TRAIN_KEYS = {"tokens_per_sec", "step_time_s", "flops_per_token", "mfu", "peak_flops", "device_kind", "n_devices",
              "compile_s", "params", "config"}


def test_bench_train_cli_prints_one_json_object_with_sane_values():
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "bench", "train", "configs/gpt_shakespeare.py",
                           *TINY_MODEL, "--steps", "5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)  # stdout holds the JSON object and nothing else
    assert TRAIN_KEYS <= set(result)
    config = config_lib.load("configs/gpt_shakespeare.py", TINY_MODEL)
    assert result["config"] == "gpt_shakespeare"
    assert result["flops_per_token"] == flops.flops_per_token(config.model, 64, 32)
    assert result["params"] == sum(x.size for x in jax.tree.leaves(
        nnx.state(nnx.eval_shape(lambda: build_model(config.model, 64)), nnx.Param)))
    assert result["tokens_per_sec"] > 0 and result["step_time_s"] > 0 and result["compile_s"] > 0
    assert result["tokens_per_sec"] == pytest.approx(2 * 32 / result["step_time_s"])
    assert result["n_devices"] == 1
    assert result["device_kind"] == jax.devices()[0].device_kind
    if flops.peak_bf16_flops(result["device_kind"]) is None:  # CPU
        assert result["mfu"] is None and result["peak_flops"] is None
    else:
        assert 0 < result["mfu"] < 1


def test_bench_attention_rows_for_naive_and_blockwise():
    result = bench.bench_attention(impls=["naive", "blockwise", "cudnn", "pallas"], lengths=[16, 48], batch=1,
                                   heads=2, head_dim=8, causal=True, repeats=5)
    assert result["device_kind"] == jax.devices()[0].device_kind
    rows = {(r["impl"], r["T"]): r for r in result["rows"]}
    assert len(rows) == 8
    for impl in ("naive", "blockwise"):
        for T in (16, 48):
            row = rows[impl, T]
            assert "error" not in row, row
            assert row["time_ms"] > 0 and row["peak_bytes"] > 0
    assert rows["pallas", 16]["error"] and rows["pallas", 16]["time_ms"] is None
    if jax.default_backend() != "gpu":
        assert "not available" in rows["cudnn", 16]["error"]


def test_bench_attention_skips_what_cannot_fit(monkeypatch):
    monkeypatch.setattr(bench, "_memory_limit_bytes", lambda: 1000)
    (row,) = bench.bench_attention(impls=["blockwise"], lengths=[16], heads=2, head_dim=8)["rows"]
    assert row["time_ms"] is None and row["peak_bytes"] > 1000 and "exceeds" in row["error"]
    (row,) = bench.bench_attention(impls=["naive"], lengths=[64], heads=2, head_dim=8)["rows"]
    assert row["time_ms"] is None and "scores" in row["error"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny char-level run on the two-play corpus, trained for 8 steps."""
    run_dir = tmp_path_factory.mktemp("bench_run")
    config = config_lib.load("configs/gpt_shakespeare.py", [
        "--config.data.corpus=shakespeare_tiny", "--config.tokenizer.kind=char", *TINY_MODEL,
        "--config.train.steps=8", "--config.train.steps_per_call=4", "--config.train.eval_every=8",
        "--config.train.checkpoint_every=8", "--config.train.eval_batches=1", "--config.train.warmup_steps=2"])
    loop.train(config, run_dir, progress=False)
    return run_dir


def test_bench_decode_cached_and_recomputed_throughput(tiny_run):
    result = bench.bench_decode(load_run(tiny_run), batch_sizes=[1, 3], new_tokens=16, prompt_len=4, repeats=2)
    assert [row["batch"] for row in result["rows"]] == [1, 3]
    for row in result["rows"]:
        assert row["cached_tokens_per_sec"] > 0 and row["recompute_tokens_per_sec"] > 0
        assert row["speedup"] == pytest.approx(row["cached_tokens_per_sec"] / row["recompute_tokens_per_sec"])


def test_bench_decode_cli_json_and_length_error(tiny_run, capsys):
    assert cli.main(["bench", "decode", str(tiny_run), "--batch-sizes", "2", "--new-tokens", "8",
                     "--prompt-len", "2", "--repeats", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)["rows"]
    assert set(row) == {"batch", "cached_tokens_per_sec", "recompute_tokens_per_sec", "speedup"}
    # max_len is 64: a longer decode is refused with one error line and exit status 2.
    assert cli.main(["bench", "decode", str(tiny_run), "--new-tokens", "60", "--prompt-len", "8"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "max_len" in captured.err
    assert captured.err.strip().startswith("lmlab bench decode: error:")


TINY_LAYERS = ["--config.model.n_layers=1", "--config.model.d_model=32", "--config.model.n_heads=2",
               "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.tokenizer.kind=char"]


def untrained_run(run_dir, config_path, *overrides):
    """A run directory holding random parameters at step 0: timing decoding needs no training.

    Drawn with numpy into the model's parameter shapes (an eager model initialization takes longer).
    """
    from lmlab.interop.rundir import abstract_params, write_run
    from lmlab.tokenizers import CharTokenizer

    config = config_lib.load(config_path, [*TINY_LAYERS, *overrides])
    tokenizer = CharTokenizer.train("Save the notebook. Enregistrer le notebook.",
                                    special_tokens=config.tokenizer.special_tokens)
    rng = np.random.default_rng(0)
    params = jax.tree.map(lambda s: rng.normal(0.0, 0.1, s.shape).astype(s.dtype),
                          abstract_params(config, tokenizer.vocab_size))
    return write_run(run_dir, config, tokenizer, params)


@pytest.fixture(scope="module")
def tiny_encdec_run(tmp_path_factory):
    return untrained_run(tmp_path_factory.mktemp("bench_encdec") / "run", "configs/translate_en_fr.py",
                         "--config.model.n_encoder_layers=1", "--config.data.src_len=12",
                         "--config.data.tgt_len=24", "--config.model.max_len=24")


@pytest.mark.slow  # the decoder-only case stays in the fast suite
def test_bench_decode_encdec_run_translates_random_sources(tiny_encdec_run, capsys):
    assert cli.main(["bench", "decode", str(tiny_encdec_run), "--batch-sizes", "2", "--new-tokens", "4",
                     "--prompt-len", "1", "--repeats", "1"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["source_len"] == 12  # data.src_len
    (row,) = result["rows"]
    assert row["batch"] == 2 and row["cached_tokens_per_sec"] > 0 and row["recompute_tokens_per_sec"] > 0
    # The decoder's positions still bound prompt + new tokens (model.max_len 24).
    assert cli.main(["bench", "decode", str(tiny_encdec_run), "--new-tokens", "24", "--prompt-len", "1"]) == 2
    assert "max_len" in capsys.readouterr().err


def test_bench_decode_refuses_an_encoder_only_run(tmp_path, capsys):
    run_dir = untrained_run(tmp_path / "bert", "configs/bert_shakespeare.py", "--config.model.max_len=32",
                            "--config.data.seq_len=32")
    assert cli.main(["bench", "decode", str(run_dir), "--repeats", "1"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()  # one line, no traceback
    assert line.startswith("lmlab bench decode: error:") and "needs a model with a decoder" in line and "'bert'" in line


def test_config_overrides_are_refused_outside_bench_train(capsys):
    assert cli.main(["bench", "attention", "--config.model.n_layers=2"]) == 2
    assert "bench train" in capsys.readouterr().err


@pytest.mark.parametrize("path, n_params", [("configs/gpt2_124m.py", 124_475_904), ("configs/gpt_1b.py", 1_114_982_400)])
def test_gpu_sized_configs_validate(path, n_params):
    config = config_lib.load(path)
    assert config.model.dtype == "bfloat16" and config.model.attention_impl == "auto"
    model = nnx.eval_shape(lambda: build_model(config.model, config.tokenizer.vocab_size))
    assert sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))) == n_params


def test_bench_train_profile_adds_a_per_op_table(tmp_path):
    config = config_lib.load("configs/gpt_shakespeare.py", TINY_MODEL)
    result = bench.bench_train(config, steps=1, profile_dir=str(tmp_path / "trace"))
    profile = result["profile"]
    assert profile["trace"].startswith(str(tmp_path / "trace")) and profile["op_time_s"] > 0
    assert profile["ops"] and sum(o["share"] for o in profile["ops"]) <= 1 + 1e-9
    assert any(kind.startswith(("dot", "fusion", "ynn")) or "fusion" in kind for kind in profile["by_kind"])
    assert "profile" not in bench.bench_train(config, steps=1)


def test_bench_train_keeps_its_timings_when_the_trace_has_no_ops(tmp_path, monkeypatch):
    def no_ops(*args, **kwargs):  # what a GPU without CUPTI gives: host events only
        raise bench.profile_summary.TraceError("the trace holds no timed XLA ops")

    monkeypatch.setattr(bench.profile_summary, "summarize_trace", no_ops)
    config = config_lib.load("configs/gpt_shakespeare.py", TINY_MODEL)
    result = bench.bench_train(config, steps=1, profile_dir=str(tmp_path / "trace"))
    assert result["tokens_per_sec"] > 0
    assert result["profile"] == {"error": "the trace holds no timed XLA ops", "trace_dir": str(tmp_path / "trace")}


def test_bench_train_counts_the_flops_of_a_bert_run_not_a_causal_gpt():
    # A bidirectional encoder whose MLM head sees round(0.15 * 32) = 5 of 32 positions per row.
    config = config_lib.load("configs/bert_shakespeare.py", TINY_MODEL)
    result = bench.bench_train(config, steps=1)
    layers = 32 * 3 * 32 + 32 * 32 + 2 * 32 * 64                        # 8192: q/k/v, out, GELU MLP
    expected = 6 * layers + 12 * 32 * 32 + 6 * (32 * 32 + 32 * 64) * 5 / 32  # 49152 + 12288 + 2880
    assert result["flops_per_token"] == pytest.approx(expected) == 64320
    assert result["flops_per_token"] != flops.flops_per_token(config.model, 64, 32)  # the decoder-only formula


def test_bench_loader_cli_reads_a_given_token_file_at_the_configs_shape(tmp_path, capsys):
    from lmlab.data.token_file import write_token_file

    write_token_file(tmp_path / "t.bin", np.arange(50_000) % 300, vocab_size=300)
    argv = ["bench", "loader", "configs/gpt_shakespeare.py", "--token-file", str(tmp_path / "t.bin"), "--steps", "3",
            "--config.data.batch_size=4", "--config.data.seq_len=32", "--config.train.steps_per_call=5"]
    assert cli.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens_per_call"] == 5 * 4 * 32 and result["file_tokens"] == 50_000
    assert result["tokens_per_sec"] == pytest.approx(result["tokens_per_call"] / result["call_s"])
