"""GGUF reading and the llama -> lmlab GPT mapping, on a tiny synthetic file (no download needed)."""

from __future__ import annotations

import json

import gguf
import jax
import numpy as np
import pytest

from lmlab import cli
from lmlab.chat import chat_reply, messages_for
from lmlab.interop import gguf_llama
from lmlab.interop.gguf_file import GGUFFile
from lmlab.interop.rundir import write_run
from lmlab.interop.smollm2 import import_smollm2
from lmlab.runs import load_run

from tests.interop.tiny_gguf import TINY, llama_cpp_permute, write_tiny_gguf


def test_reader_agrees_with_the_gguf_package(tiny_gguf):
    path, _ = tiny_gguf
    ours, theirs = GGUFFile(path), gguf.GGUFReader(path)
    for key, field in theirs.fields.items():
        if not key.startswith("GGUF."):  # the reader's pseudo-fields (version, counts)
            assert ours.metadata[key] == pytest.approx(field.contents()), key
    assert set(ours.tensors) == {t.name for t in theirs.tensors}
    for tensor in theirs.tensors:
        expected = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
        np.testing.assert_array_equal(ours.dequantize(tensor.name).ravel(), expected.ravel(), err_msg=tensor.name)


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)
    np.testing.assert_array_equal(gguf_llama.unpermute_rotary(llama_cpp_permute(w, 6), 6), w)


def _rope_interleaved(x_TH, positions, theta):
    """llama.cpp's rotary on GGUF rows: rotates adjacent pairs (x[2i], x[2i+1])."""
    h = x_TH.shape[-1]
    angles = positions[:, None] * theta ** (-np.arange(0, h, 2) / h)
    x1, x2 = x_TH[:, 0::2], x_TH[:, 1::2]
    out = np.empty_like(x_TH)
    out[:, 0::2] = x1 * np.cos(angles) - x2 * np.sin(angles)
    out[:, 1::2] = x2 * np.cos(angles) + x1 * np.sin(angles)
    return out


def test_unpermuted_weights_give_llama_cpp_attention_scores():
    """q.k after lmlab's half-split RoPE on unpermuted rows == after llama.cpp's on the file's rows."""
    from lmlab.nn.positions import apply_rope, rope_angles

    rng = np.random.default_rng(0)
    n_heads, h, d, T = 2, 8, 12, 5
    wq_gguf, wk_gguf = (rng.standard_normal((n_heads * h, d)) for _ in range(2))
    x_TD = rng.standard_normal((T, d))
    positions = np.arange(T, dtype=np.float64)
    for head in range(n_heads):
        rows = slice(head * h, (head + 1) * h)
        q_gguf = _rope_interleaved(x_TD @ wq_gguf[rows].T, positions, 1e4)
        k_gguf = _rope_interleaved(x_TD @ wk_gguf[rows].T, positions, 1e4)
        wq = gguf_llama.unpermute_rotary(wq_gguf, n_heads)[rows]
        wk = gguf_llama.unpermute_rotary(wk_gguf, n_heads)[rows]
        cos, sin = rope_angles(jax.numpy.arange(T)[None], h, 1e4)
        q = np.asarray(apply_rope(jax.numpy.asarray(x_TD @ wq.T, jax.numpy.float32)[None, :, None], cos, sin))[0, :, 0]
        k = np.asarray(apply_rope(jax.numpy.asarray(x_TD @ wk.T, jax.numpy.float32)[None, :, None], cos, sin))[0, :, 0]
        np.testing.assert_allclose(q @ k.T, q_gguf @ k_gguf.T, atol=1e-4)


def test_params_are_the_hf_layout_weights(tiny_gguf):
    path, hf = tiny_gguf
    cfg, params, tokenizer = gguf_llama.load_gguf_llama(path)
    assert cfg["n_layers"] == TINY["n_layers"] and cfg["n_kv_heads"] == TINY["n_kv_heads"]
    assert cfg["tie_embeddings"] and tokenizer.chat_template.startswith("{% for message")
    block = params["blocks"][1]
    qkv = np.concatenate([hf["blk.1.attn_q.weight"], hf["blk.1.attn_k.weight"], hf["blk.1.attn_v.weight"]]).T
    np.testing.assert_array_equal(block["attn"]["qkv"]["kernel"], qkv)
    np.testing.assert_array_equal(block["mlp"]["down"]["kernel"], hf["blk.1.ffn_down.weight"].T)
    np.testing.assert_array_equal(params["embed"]["embedding"], hf["token_embd.weight"])


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "model.gguf"
    path.write_bytes(b"PK\x03\x04 a zip, not a GGUF")
    with pytest.raises(ValueError, match=r"is not a GGUF file \(it starts with b'PK\\x03\\x04'"):
        gguf_llama.load_gguf_llama(path)


def test_truncated_gguf_file(tiny_gguf, tmp_path):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_gguf[0].read_bytes()[:3000])
    with pytest.raises(ValueError, match="truncated GGUF file"):
        gguf_llama.load_gguf_llama(path)


def test_other_architecture_is_refused(tmp_path):
    path = tmp_path / "qwen.gguf"
    write_tiny_gguf(path, arch="qwen2")
    with pytest.raises(ValueError, match="architecture 'qwen2' is not supported; expected 'llama'"):
        gguf_llama.load_gguf_llama(path)


def test_missing_tensor_is_named(tmp_path):
    path = tmp_path / "partial.gguf"
    write_tiny_gguf(path, drop_tensor="blk.1.ffn_up.weight")
    with pytest.raises(ValueError, match="lacks tensor 'blk.1.ffn_up.weight'"):
        gguf_llama.load_gguf_llama(path)


def test_cli_reports_a_wrong_file_in_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a model at all")
    assert cli.main(["import", "smollm2", "--from", str(bad), "--out", str(tmp_path / "run")]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("lmlab: error: ") and "is not a GGUF file" in lines[0]
    assert not (tmp_path / "run").exists()


def test_import_then_load_run_then_chat(tiny_gguf, tmp_path, capsys):
    """`lmlab import smollm2 --from FILE` writes a run that load_run opens and `lmlab sample --chat` uses."""
    path, _ = tiny_gguf
    run_dir = tmp_path / "run"
    assert cli.main(["import", "smollm2", "--from", str(path), "--out", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["run_dir"] == str(run_dir)

    run = load_run(run_dir)
    assert run.step == 0 and run.tokenizer.kind == "bytelevel_bpe"
    _, params, tokenizer = gguf_llama.load_gguf_llama(path)
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, run.params), params)

    expected = chat_reply(run.model, run.tokenizer, messages_for("hi there"), max_new_tokens=12, temperature=0.0)
    assert cli.main(["sample", str(run_dir), "--chat", "hi there", "--temperature", "0",
                     "--max-new-tokens", "12"]) == 0
    assert capsys.readouterr().out == expected + "\n"

    with pytest.raises(ValueError, match="already exists and is not empty"):
        import_smollm2(run_dir, path)


def test_write_run_refuses_params_of_the_wrong_shape(tiny_gguf, tmp_path):
    from lmlab.interop.smollm2 import load_smollm2

    config, params, tokenizer = load_smollm2(tiny_gguf[0])
    params["blocks"][0]["mlp"]["up"]["kernel"] = params["blocks"][0]["mlp"]["up"]["kernel"][:, :5]
    with pytest.raises(ValueError, match=r"\['blocks'\]\[0\]\['mlp'\]\['up'\]\['kernel'\]: shape \(32, 5\)"):
        write_run(tmp_path / "run", config, tokenizer, params)


def test_dequantized_tensors_are_cached(tiny_gguf, tmp_path, monkeypatch):
    """The first load writes the float32 tensors to the cache folder; later loads only read them."""
    path, _ = tiny_gguf
    first = gguf_llama.cached_dequantized(GGUFFile(path), tmp_path)
    assert (tmp_path / f"dequantized-v{gguf_llama.DEQUANT_CACHE_VERSION}.npz").is_file()

    def no_dequantize(self, name):
        raise AssertionError("the dequantized cache should have been used")

    monkeypatch.setattr(GGUFFile, "dequantize", no_dequantize)
    again = gguf_llama.cached_dequantized(GGUFFile(path), tmp_path)
    assert again.keys() == first.keys()
    for name in first:
        np.testing.assert_array_equal(again[name], first[name])
