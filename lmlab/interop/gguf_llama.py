"""Llama-architecture GGUF files (llama.cpp's format) -> lmlab GPT config, params and tokenizer.

Everything comes from the file (read by `gguf_file.GGUFFile`): hyperparameters from its `llama.*`
metadata, weights from its tensors (dequantized from Q4_1 / Q8_0 / F16 / F32 by the `gguf` package), the byte-level BPE
tokenizer from `tokenizer.ggml.*`, the chat template from `tokenizer.chat_template`.

Layout differences handled here:
  * GGUF stores a linear layer as W[out, in] (PyTorch's); lmlab kernels are x @ W, i.e. [in, out].
  * llama.cpp's converter permutes the rows of attn_q / attn_k so that its rotary embedding can
    rotate interleaved pairs (x[2i], x[2i+1]); lmlab (like HF Llama) rotates the halves
    (x[i], x[i + H/2]). `unpermute_rotary` undoes it.
  * q, k, v are fused into one [d, (N + 2K) H] kernel in lmlab's SelfAttention.
"""

from __future__ import annotations

import logging
import os
import pathlib

import jax
import numpy as np

from lmlab.files import atomic_write
from lmlab.interop.gguf_file import GGUFFile
from lmlab.tokenizers.bytelevel import PRETOKENIZERS, ByteLevelBpeTokenizer

log = logging.getLogger("lmlab")

# Bump when the dequantized cache's content or naming changes.
DEQUANT_CACHE_VERSION = 1
CONTROL_TOKEN_TYPE = 3  # llama.cpp's token_type for <|endoftext|>, <|im_start|>, ...


def _require(meta: dict, key: str, path) -> object:
    if key not in meta:
        raise ValueError(f"{path}: GGUF metadata lacks '{key}'")
    return meta[key]


def model_config(meta: dict, tensor_names: set[str], path="GGUF file") -> dict:
    """lmlab `model` config values (GPT family, Llama switches) from a llama GGUF's metadata."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise ValueError(f"{path}: architecture '{arch}' is not supported; expected 'llama'")

    def get(name):
        return _require(meta, f"llama.{name}", path)

    d_model, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    n_kv_heads = int(meta.get("llama.attention.head_count_kv", n_heads))
    head_dim = d_model // n_heads
    rope_dim = int(meta.get("llama.rope.dimension_count", head_dim))
    if d_model % n_heads or rope_dim != head_dim:
        raise ValueError(f"{path}: d_model {d_model}, {n_heads} heads and rotary dimension {rope_dim} "
                         "do not fit lmlab's attention (full-head RoPE)")
    if "llama.rope.scaling.type" in meta and meta["llama.rope.scaling.type"] not in ("none",):
        raise ValueError(f"{path}: rope scaling '{meta['llama.rope.scaling.type']}' is not supported")
    biases = sorted(n for n in tensor_names if n.endswith(".bias"))
    if biases:
        raise ValueError(f"{path}: has bias tensors ({biases[0]}, ...); lmlab's Llama has none")
    return {
        "family": "gpt",
        "n_layers": int(get("block_count")),
        "d_model": d_model,
        "n_heads": n_heads,
        "n_kv_heads": n_kv_heads,
        "d_ff": int(get("feed_forward_length")),
        "max_len": int(get("context_length")),
        "positions": "rope",
        "rope_theta": float(meta.get("llama.rope.freq_base", 10000.0)),
        "norm": "rmsnorm",
        "norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "mlp": "swiglu",
        # Without its own output matrix the model reuses the token embeddings (tied).
        "tie_embeddings": "output.weight" not in tensor_names,
        "use_bias": False,
        "dropout": 0.0,
    }


def tokenizer_from_metadata(meta: dict, path="GGUF file") -> ByteLevelBpeTokenizer:
    model = meta.get("tokenizer.ggml.model")
    if model != "gpt2":
        raise ValueError(f"{path}: tokenizer model '{model}' is not supported; expected byte-level BPE ('gpt2')")
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre not in PRETOKENIZERS:
        raise ValueError(f"{path}: pre-tokenizer '{pre}' is not supported; known: {', '.join(PRETOKENIZERS)}")
    tokens = list(_require(meta, "tokenizer.ggml.tokens", path))
    merges = list(_require(meta, "tokenizer.ggml.merges", path))
    types = list(meta.get("tokenizer.ggml.token_type", []))
    special = [t for t, kind in zip(tokens, types) if kind == CONTROL_TOKEN_TYPE]
    bos = int(meta.get("tokenizer.ggml.bos_token_id", 0))
    eos = int(meta.get("tokenizer.ggml.eos_token_id", bos))
    pad = int(meta.get("tokenizer.ggml.padding_token_id", eos))
    return ByteLevelBpeTokenizer(tokens, merges, pretokenizer=PRETOKENIZERS[pre], special_tokens=special,
                                 bos_id=bos, eos_id=eos, pad_id=pad,
                                 chat_template=meta.get("tokenizer.chat_template"))


def dequantize_all(gguf_file: GGUFFile) -> dict[str, np.ndarray]:
    """Every tensor as float32, in numpy's [rows, cols] order (W[out, in] for linear layers)."""
    return {name: gguf_file.dequantize(name) for name in gguf_file.tensors}


def cached_dequantized(gguf_file: GGUFFile, cache_folder: pathlib.Path) -> dict[str, np.ndarray]:
    """`dequantize_all`, kept as one .npz in `cache_folder` (keyed by the source's sha256).

    Dequantizing 135M Q4_1 weights in numpy takes seconds; reading them back is much faster.
    """
    path = cache_folder / f"dequantized-v{DEQUANT_CACHE_VERSION}.npz"
    if path.is_file():
        try:
            with np.load(path) as npz:
                return {name: npz[name] for name in npz.files}
        except (OSError, ValueError, EOFError) as error:  # damaged cache: rebuild it
            log.warning("dequantized cache %s is unreadable (%s); rebuilding it", path, error)
    tensors = dequantize_all(gguf_file)
    with atomic_write(path) as f:
        np.savez(f, **tensors)
    return tensors


def unpermute_rotary(w_OI: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's row permutation of a q/k projection W[n_heads * head_dim, d_in].

    llama.cpp's converter orders each head's rows as (r0, r_{H/2}, r1, r_{H/2+1}, ...) so that
    interleaved pairs rotate together; this restores (r0, r1, ..., r_{H/2}, ...).
    """
    rows, d_in = w_OI.shape
    head_dim = rows // n_heads
    return w_OI.reshape(n_heads, head_dim // 2, 2, d_in).swapaxes(1, 2).reshape(rows, d_in)


def llama_params(tensors: dict[str, np.ndarray], cfg: dict, vocab_size: int) -> dict:
    """lmlab GPT params (the `nnx.to_pure_dict` tree) from dequantized llama tensors."""
    d, n, k, f = cfg["d_model"], cfg["n_heads"], cfg["n_kv_heads"], cfg["d_ff"]
    h = d // n
    used = set()

    def take(name, shape):
        if name not in tensors:
            raise ValueError(f"GGUF file lacks tensor '{name}'")
        array = tensors[name]
        if array.shape != shape:
            raise ValueError(f"GGUF tensor '{name}' has shape {array.shape}, expected {shape}")
        used.add(name)
        return array

    blocks = {}
    for i in range(cfg["n_layers"]):
        p = f"blk.{i}."
        q = unpermute_rotary(take(p + "attn_q.weight", (n * h, d)), n)
        kk = unpermute_rotary(take(p + "attn_k.weight", (k * h, d)), k)
        v = take(p + "attn_v.weight", (k * h, d))
        blocks[i] = {
            "norm1": {"scale": take(p + "attn_norm.weight", (d,))},
            "attn": {"qkv": {"kernel": np.concatenate([q, kk, v], axis=0).T},
                     "out": {"kernel": take(p + "attn_output.weight", (d, n * h)).T}},
            "norm2": {"scale": take(p + "ffn_norm.weight", (d,))},
            "mlp": {"gate": {"kernel": take(p + "ffn_gate.weight", (f, d)).T},
                    "up": {"kernel": take(p + "ffn_up.weight", (f, d)).T},
                    "down": {"kernel": take(p + "ffn_down.weight", (d, f)).T}},
        }
    params = {"embed": {"embedding": take("token_embd.weight", (vocab_size, d))},
              "blocks": blocks,
              "final_norm": {"scale": take("output_norm.weight", (d,))}}
    if not cfg["tie_embeddings"]:
        params["lm_head"] = {"kernel": take("output.weight", (vocab_size, d)).T}
    # Rotary frequency tables some converters add are derived data, not weights.
    unused = sorted(set(tensors) - used - {"rope_freqs.weight", "rope_factors_long.weight",
                                           "rope_factors_short.weight"})
    if unused:
        raise ValueError(f"GGUF file has tensors lmlab's Llama does not use: {', '.join(unused[:5])}")
    return jax.tree.map(lambda x: np.ascontiguousarray(x, np.float32), params)


def load_gguf_llama(path: str | os.PathLike, cache_folder: pathlib.Path | None = None):
    """(model config dict, params, tokenizer) for a llama GGUF file.

    With `cache_folder`, the dequantized tensors are cached there (see `cached_dequantized`).
    """
    gguf_file = GGUFFile(path)
    meta = gguf_file.metadata
    cfg = model_config(meta, set(gguf_file.tensors), path)
    tokenizer = tokenizer_from_metadata(meta, path)
    vocab_size = int(meta.get("llama.vocab_size", tokenizer.vocab_size))
    if vocab_size != tokenizer.vocab_size:
        raise ValueError(f"{path}: llama.vocab_size {vocab_size} differs from the tokenizer's "
                         f"{tokenizer.vocab_size} tokens")
    tensors = cached_dequantized(gguf_file, cache_folder) if cache_folder else dequantize_all(gguf_file)
    return cfg, llama_params(tensors, cfg, vocab_size), tokenizer
