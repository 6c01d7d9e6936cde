"""Training FLOPs per token and peak bf16 FLOP/s per device, for model FLOPs utilization (MFU).

    flops_per_token = 6 * N + 6 * L * T * d            (causal; 12 * L * T * d without a mask)

- N (`matmul_params`) counts the weights of every matrix multiply the model runs per token:
  per layer the fused q/k/v projection (d x (n_heads + 2 n_kv_heads) head_dim), the attention
  output projection (n_heads head_dim x d) and the MLP matrices (2 d d_ff for GELU, 3 d d_ff for
  SwiGLU), plus the output projection to the vocabulary (d x V, counted once whether or not it is
  tied to the token embedding). Not counted: the token-embedding lookup and learned position
  table (gathers, not multiplies), biases, norm scales and element-wise work (activations,
  softmax, RoPE, the loss). A matrix of N weights costs 2 N FLOPs per token forward and 4 N
  backward (gradients for the input and for the weights): 6 N.
- The attention term is the score (q k^T) and value (p v) products, which have no weights: per
  layer and token, forward 2 T d each (d = n_heads x head_dim = d_model), so 4 T d forward and
  12 T d forward + backward with T = seq_len. With a causal mask only half of the [T, T] scores
  are needed, so it is halved to 6 L T d (what an implementation that skips masked tiles does;
  MFU counts this useful work, not what a given kernel spends on masked entries).

Other families (each task's `flops_per_token`, what `lmlab bench train` reports), per token as
the task counts them (`Task.tokens_per_batch`), with the same conventions:
- bert: the encoder's 6 N_layers + 12 L T d (bidirectional: no halving); the MLM head (dense
  d x d + decoder d x V) runs only on the max_selected(T, rate) gathered positions of a row, the
  classifier's pooler (d x d) and classifier (d x n_classes) once per row.
- encdec: per row, S = src_len encoder positions (bidirectional) and T' = tgt_len - 1 decoder
  positions (causal self-attention, cross-attention over S, cross q and out projections, output
  projection), plus the cross k/v projections of the S encoder outputs in every decoder layer;
  divided by S + T' tokens. Packed rows are counted as dense rows.

MFU = tokens/s * flops_per_token / (peak FLOP/s per device * devices). Peaks are dense bf16
tensor-core figures from the vendors' datasheets (no 2:4 sparsity); a float32 run is measured
against the same bf16 peak.
"""

from __future__ import annotations

# Dense bf16 peak FLOP/s per device. A device kind (jax's `device.device_kind`, e.g.
# "NVIDIA H100 80GB HBM3", "TPU v5 lite") matches a key when the key is a substring of it, ignoring
# case; when several keys match, the longest one wins ("h100 pcie" over "h100").
PEAK_BF16_FLOPS: dict[str, float] = {
    "h100": 989e12,          # H100 SXM ("NVIDIA H100 80GB HBM3")
    "h100 pcie": 756e12,     # "NVIDIA H100 PCIe"
    "h100 nvl": 835e12,      # "NVIDIA H100 NVL" (would otherwise match the SXM figure)
    "h200": 989e12,          # "NVIDIA H200" (same chip as H100 SXM, more memory)
    "a100": 312e12,          # SXM and PCIe alike
    "tpu v4": 275e12,
    "tpu v5 lite": 197e12,   # v5e
    "tpu v5e": 197e12,
    "tpu v5": 459e12,        # v5p reports "TPU v5"
    "tpu v5p": 459e12,
    "tpu v6 lite": 918e12,   # v6e, Trillium
    "tpu v6e": 918e12,
    "trillium": 918e12,
}


def peak_bf16_flops(device_kind: str) -> float | None:
    """Peak dense bf16 FLOP/s of one device of this kind, or None when the kind is unknown (CPUs)."""
    kind = device_kind.lower()
    matches = [key for key in PEAK_BF16_FLOPS if key in kind]
    return PEAK_BF16_FLOPS[max(matches, key=len)] if matches else None


def block_params(model_config) -> int:
    """Weights of one block's matrix multiplies: fused q/k/v, attention output, MLP."""
    m = model_config
    head_dim = m.d_model // m.n_heads
    qkv = m.d_model * (m.n_heads + 2 * m.n_kv_heads) * head_dim
    out = m.n_heads * head_dim * m.d_model
    mlp_matrices = {"gelu": 2, "gelu_exact": 2, "swiglu": 3}[m.mlp]
    return qkv + out + mlp_matrices * m.d_model * m.d_ff


def matmul_params(model_config, vocab_size: int) -> int:
    """N: the weights of the matrix multiplies run per token (see the module docstring)."""
    return model_config.n_layers * block_params(model_config) + model_config.d_model * vocab_size


def attention_flops_per_token(model_config, seq_len: int, *, causal: bool = True) -> int:
    """Forward + backward FLOPs of the score and value products per token: 12 L T d, halved if causal."""
    full = 12 * model_config.n_layers * seq_len * model_config.d_model
    return full // 2 if causal else full


def flops_per_token(model_config, vocab_size: int, seq_len: int, *, causal: bool = True) -> int:
    """Training (forward + backward) FLOPs per token: 6 N + 6 L T d (causal) or 6 N + 12 L T d."""
    return 6 * matmul_params(model_config, vocab_size) + attention_flops_per_token(
        model_config, seq_len, causal=causal)


def encoder_flops_per_token(model_config, seq_len: int, head_flops_per_row: float) -> float:
    """A bidirectional encoder's blocks (6 N_layers + 12 L T d) plus a head costing
    `head_flops_per_row` (forward + backward) once per row of seq_len tokens."""
    m = model_config
    return (6 * m.n_layers * block_params(m) + attention_flops_per_token(m, seq_len, causal=False)
            + head_flops_per_row / seq_len)


def encoder_decoder_flops_per_token(model_config, vocab_size: int, src_len: int, tgt_len: int) -> float:
    """Per row: src_len encoder positions, tgt_len decoder positions with cross-attention over the
    source, and the cross k/v projections of the encoder outputs; divided by src_len + tgt_len."""
    m = model_config
    d, head_dim = m.d_model, m.d_model // m.n_heads
    S, T = src_len, tgt_len
    block = block_params(m)
    cross_q_out, cross_kv = 2 * d * m.n_heads * head_dim, d * 2 * m.n_kv_heads * head_dim
    encoder = S * (6 * m.n_encoder_layers * block + 12 * m.n_encoder_layers * S * d)
    decoder = T * (6 * m.n_layers * (block + cross_q_out) + 6 * m.n_layers * T * d + 12 * m.n_layers * S * d
                   + 6 * d * vocab_size)
    return (encoder + S * 6 * m.n_layers * cross_kv + decoder) / (S + T)


def mfu(tokens_per_sec: float, flops_per_token_: float, device_kind: str, n_devices: int = 1) -> float | None:
    """Model FLOPs utilization, or None when the device's peak is unknown."""
    peak = peak_bf16_flops(device_kind)
    if peak is None:
        return None
    return tokens_per_sec * flops_per_token_ / (peak * n_devices)
