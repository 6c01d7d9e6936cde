"""lmlab.runs.quantize_run and `lmlab quantize` on a tiny run directory (tests/tiny_runs.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lmlab import cli
from lmlab import config as config_lib
from lmlab.models.quantize import quantize_model
from lmlab.runs import load_run, quantize_run
from tests.tiny_runs import GPT, write_tiny_run

TOKENS = jnp.array([[1, 5, 7, 2, 9, 4]])


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return write_tiny_run(tmp_path_factory.mktemp("runs") / "gpt", GPT, "--config.model.d_ff=40")


def test_quantized_run_loads_with_the_quantized_model_s_logits(run_dir, tmp_path):
    info = quantize_run(run_dir, tmp_path / "q", ["quant.weights=int4", "quant.group=32", "quant.asymmetric=true",
                                                  "quant.kv=int8"])
    run = load_run(tmp_path / "q")
    assert run.config.quant.weights == "int4" and run.config.quant.kv == "int8"
    expected = quantize_model(load_run(run_dir).model, run.config.quant)
    np.testing.assert_array_equal(run.model(TOKENS)[0], expected(TOKENS)[0])
    assert run.model.blocks[0].mlp.down.kernel_q[...].dtype == jnp.uint8
    assert info["float32_bytes"] == 4 * info["params"] == 2 * info["bfloat16_bytes"]
    assert info["weight_bytes"] == sum(x.nbytes for x in jax.tree.leaves(nnx.state(run.model)))
    assert info["weight_bytes"] < 0.4 * info["float32_bytes"] and info["checkpoint_bytes_on_disk"] > 0


def test_bfloat16_run_holds_every_parameter_rounded_and_computes_like_the_rounded_float_model(run_dir, tmp_path):
    info = quantize_run(run_dir, tmp_path / "bf16", ["quant.weights=bfloat16"])
    assert info["weight_bytes"] == info["bfloat16_bytes"] == 2 * info["params"]
    run = load_run(tmp_path / "bf16")
    assert {x.dtype for x in jax.tree.leaves(nnx.state(run.model, nnx.Param))} == {jnp.dtype(jnp.bfloat16)}
    # The reference: the float model with each parameter rounded to bfloat16 and back, computed in float32.
    reference = load_run(run_dir).model
    params = nnx.state(reference, nnx.Param)
    nnx.update(reference, jax.tree.map(lambda x: x.astype(jnp.bfloat16).astype(jnp.float32), params))
    logits = run.model(TOKENS)[0]
    assert logits.dtype == jnp.float32
    np.testing.assert_allclose(logits, reference(TOKENS)[0], rtol=1e-6, atol=1e-6)
    assert not np.array_equal(logits, load_run(run_dir).model(TOKENS)[0])  # the rounding did change it


def test_cli_quantize_then_sample_with_an_int8_cache(run_dir, tmp_path, capsys):
    assert cli.main(["quantize", str(run_dir), "--weights", "int8", "--kv", "int8", "--out", str(tmp_path / "q")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert "output head: int8" in printed["policy"] and "KV cache: int8" in printed["policy"]
    assert cli.main(["sample", str(tmp_path / "q"), "--prompt", "To be", "--max-new-tokens", "4",
                     "--temperature", "0"]) == 0
    assert capsys.readouterr().out.startswith("To be")


@pytest.mark.parametrize("args, status, message", [
    (["--weights", "int4", "--group", "48"], 2, "--group 48: quantization group size must be a positive power of two"),
    (["--weights", "int4", "--group", "0"], 2, "positive power of two"),
    (["--weights", "none"], 2, "nothing to quantize"),
])
def test_cli_bad_arguments_write_nothing(run_dir, tmp_path, capsys, args, status, message):
    out = tmp_path / "q"
    assert cli.main(["quantize", str(run_dir), *args, "--out", str(out)]) == status
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_cli_refuses_an_already_quantized_run_and_a_missing_one(run_dir, tmp_path, capsys):
    quantize_run(run_dir, tmp_path / "q", ["quant.weights=int8"])
    capsys.readouterr()
    assert cli.main(["quantize", str(tmp_path / "q"), "--weights", "int4", "--out", str(tmp_path / "qq")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is already quantized (quant.weights=int8" in err and len(err.splitlines()) == 1
    assert cli.main(["quantize", str(tmp_path / "nope"), "--weights", "int4", "--out", str(tmp_path / "q3")]) == 2
    assert "not an lmlab run directory" in capsys.readouterr().err
    assert not (tmp_path / "qq").exists() and not (tmp_path / "q3").exists()


def test_a_quantized_run_cannot_start_a_training_run(run_dir, tmp_path):
    """Its dense layers hold integer payloads, no float kernels init_from could copy."""
    quantize_run(run_dir, tmp_path / "q", ["quant.weights=int4"])
    with pytest.raises(config_lib.ConfigError, match="names a quantized run"):
        config_lib.load("configs/gpt_shakespeare.py", [f"--config.train.init_from={tmp_path / 'q'}"])
