"""Decoder-only transformer (GPT-2 and Llama-style) built from lmlab.nn parts.

Every switch comes from the `model` config section: positions learned | sinusoidal | rope | alibi,
norm layernorm | rmsnorm, mlp gelu | swiglu, tied or untied embeddings, MHA/GQA/MQA, dropout (and
LoRA dropout inside the dense layers, lmlab.nn.lora), both driven by `dropout_key` (None: none), and
norm_position: pre (GPT-2, Llama: x + f(norm(x)) per sublayer, then a final norm) or post (the
original Transformer and GPT-1: norm(x + f(x)) per sublayer, no final norm: the last block's
output is already normalized).

Packed rows (several documents per row, as MaxText and T5X train): `segment_ids_BT` numbers the
documents of a row 1, 2, ... (neighbours must differ) and marks padding with 0. Attention then never
crosses a segment, and positions restart at 0 in each (`positions_from_segments`) for learned,
sinusoidal and rotary positions alike; ALiBi needs no positions, as its bias depends only on the
distance between two tokens of the same segment. Padding tokens only see padding: their logits are
finite but meaningless. The same ids in a KV cache let `generate` decode left-padded prompts.

Sinusoidal positions come with the original Transformer's embedding scale (as in the encdec
family and fairseq's language models): tokens initialised N(0, 1/d) and multiplied by sqrt(d), so
both enter at unit scale. GPT-2's 0.02-std embeddings beside a unit-scale sinusoid would let the
position signal outweigh the token by ~35x at d = 128 (measured: 0.37 bits per byte worse).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from lmlab.nn.attention import SelfAttention, write_cache_segments
from lmlab.nn.dropout import adapter_keys, dropout
from lmlab.nn.linear import Embed, Linear
from lmlab.nn.mlp import make_mlp
from lmlab.nn.norms import make_norm
from lmlab.nn.positions import add_positions, check_position_range, learned_table, positions_from_segments

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Activation rematerialization per block: what the backward pass may keep from the forward.
REMAT_POLICIES = {
    "full": jax.checkpoint_policies.nothing_saveable,          # recompute the whole block
    "dots_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # keep matmul outputs
}


def is_post_norm(m) -> bool:
    return m.get("norm_position", "pre") == "post"  # configs written before the key are pre-norm


class Block(nnx.Module):
    def __init__(self, m, *, dtype, rngs: nnx.Rngs):
        # Pre-norm stacks scale residual projections by depth (GPT-2); post-norm ones (GPT-1) do not.
        out_std = 0.02 if is_post_norm(m) else 0.02 / math.sqrt(2 * m.n_layers)
        self.norm1 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.attn = SelfAttention.from_config(m, dtype=dtype, out_init_std=out_std, rngs=rngs)
        self.norm2 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.mlp = make_mlp(m.mlp, m.d_model, m.d_ff, use_bias=m.use_bias, dtype=dtype,
                            out_init_std=out_std, rngs=rngs)
        self.dropout_rate = m.dropout
        self.post_norm = is_post_norm(m)

    def __call__(self, x_BTD, *, rope, cache, cache_index, dropout_key, segment_ids_BT=None):
        k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        k_attn, k_mlp = adapter_keys(dropout_key, 2)  # LoRA dropout inside the dense layers
        if self.post_norm:
            h, cache = self.attn(x_BTD, rope=rope, causal=True, cache=cache, cache_index=cache_index,
                                 segment_ids_BT=segment_ids_BT, dropout_key=k_attn)
            x_BTD = self.norm1(x_BTD + dropout(h, self.dropout_rate, k1))
            return self.norm2(x_BTD + dropout(self.mlp(x_BTD, dropout_key=k_mlp), self.dropout_rate, k2)), cache
        h, cache = self.attn(self.norm1(x_BTD), rope=rope, causal=True, cache=cache, cache_index=cache_index,
                             segment_ids_BT=segment_ids_BT, dropout_key=k_attn)
        x_BTD = x_BTD + dropout(h, self.dropout_rate, k1)
        x_BTD = x_BTD + dropout(self.mlp(self.norm2(x_BTD), dropout_key=k_mlp), self.dropout_rate, k2)
        return x_BTD, cache


class GPT(nnx.Module):
    decodes, needs_source = True, False  # generates text; continues a prompt (no source)
    adapter_dropout = True  # every dense layer gets a dropout key (lora.dropout)

    def __init__(self, m, vocab_size: int, *, rngs: nnx.Rngs):
        # Frozen: the config is static graph data, and jit needs it hashable.
        m = ml_collections.FrozenConfigDict(m)
        self.config = m
        self.vocab_size = vocab_size
        self.dtype = DTYPES[m.dtype]
        unit_scale = m.positions == "sinusoidal"  # module docstring
        self.embed_scale = math.sqrt(m.d_model) if unit_scale else 1.0
        self.embed = Embed(vocab_size, m.d_model, dtype=self.dtype, init_std=m.d_model ** -0.5 if unit_scale else 0.02,
                           rngs=rngs)
        self.pos_embed = learned_table(m, init_std=0.01, rngs=rngs)
        self.blocks = nnx.List([Block(m, dtype=self.dtype, rngs=rngs) for _ in range(m.n_layers)])
        if not is_post_norm(m):
            self.final_norm = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        if not m.tie_embeddings:
            self.lm_head = Linear(m.d_model, vocab_size, use_bias=False, dtype=self.dtype, rngs=rngs,
                                  axes=("embed", "vocab"))
        if m.get("reward_head", False):  # a scalar score of a sequence (task reward)
            self.reward_head = Linear(m.d_model, 1, use_bias=True, dtype=self.dtype, rngs=rngs, axes=("embed", None))

    def __call__(self, tokens_BT: jax.Array, *, segment_ids_BT: jax.Array | None = None,
                 positions_BT: jax.Array | None = None, cache: list | None = None, cache_index=0,
                 dropout_key: jax.Array | None = None):
        """Returns (logits_BTV in float32, updated cache or None); the arguments are `hidden`'s."""
        x_BTD, new_cache = self.hidden(tokens_BT, segment_ids_BT=segment_ids_BT, positions_BT=positions_BT,
                                       cache=cache, cache_index=cache_index, dropout_key=dropout_key)
        head_key, = adapter_keys(dropout_key, 1)
        logits_BTV = (self.embed.attend(x_BTD) if self.config.tie_embeddings
                      else self.lm_head(x_BTD, dropout_key=head_key))
        return logits_BTV.astype(jnp.float32), new_cache

    def reward(self, tokens_BT: jax.Array, last_B: jax.Array, *, segment_ids_BT: jax.Array | None = None,
               dropout_key: jax.Array | None = None) -> jax.Array:
        """[B] float32 scores of the sequences, from the reward head on the hidden state of each
        row's last real token (index `last_B`), as reward models in TRL read them."""
        x_BTD, _ = self.hidden(tokens_BT, segment_ids_BT=segment_ids_BT, dropout_key=dropout_key)
        last_BD = jnp.take_along_axis(x_BTD, last_B[:, None, None], axis=1)[:, 0]
        head_key, = adapter_keys(dropout_key, 1)
        return self.reward_head(last_BD, dropout_key=head_key)[:, 0].astype(jnp.float32)

    def hidden(self, tokens_BT: jax.Array, *, segment_ids_BT: jax.Array | None = None,
               positions_BT: jax.Array | None = None, cache: list | None = None, cache_index=0,
               dropout_key: jax.Array | None = None):
        """Returns (the last hidden states x_BTD, normalized; the updated cache or None).

        `segment_ids_BT`: int [B, T], the document of each token (module docstring; 0 = padding).
        `positions_BT`: int [B, T], explicit positions (default: from the segment ids, restarting
        at 0 in each segment; without them 0 .. T - 1). Not for ALiBi, which takes distances.
        With a cache, tokens_BT fill slots cache_index .. cache_index + T - 1 (segment 1 unless
        segment_ids_BT says otherwise), and positions count within the segments of the cache.
        """
        m = self.config
        tokens_BTD = self.embed(tokens_BT)
        if self.embed_scale != 1.0:
            tokens_BTD = tokens_BTD * jnp.asarray(self.embed_scale, tokens_BTD.dtype)
        x_BTD, rope = add_positions(m, tokens_BTD, self.pos_embed, offset=cache_index,
                                    positions_BT=self._positions(tokens_BT, segment_ids_BT, positions_BT, cache,
                                                                 cache_index))
        keys = (list(jax.random.split(dropout_key, m.n_layers + 1)) if dropout_key is not None
                else [None] * (m.n_layers + 1))
        x_BTD = dropout(x_BTD, m.dropout, keys[-1])
        new_cache = [] if cache is not None else None
        if cache is None and m.remat != "none":
            def run_block(block, x_BTD, rope, key, segment_ids_BT):
                return block(x_BTD, rope=rope, cache=None, cache_index=0, dropout_key=key,
                             segment_ids_BT=segment_ids_BT)[0]

            run_block = nnx.remat(run_block, policy=REMAT_POLICIES[m.remat])
            for block, key in zip(self.blocks, keys):
                x_BTD = run_block(block, x_BTD, rope, key, segment_ids_BT)
        else:
            for i, block in enumerate(self.blocks):
                x_BTD, layer_cache = block(x_BTD, rope=rope, cache=None if cache is None else cache[i],
                                           cache_index=cache_index, dropout_key=keys[i],
                                           segment_ids_BT=segment_ids_BT)
                if cache is not None:
                    new_cache.append(layer_cache)
        return (x_BTD if is_post_norm(m) else self.final_norm(x_BTD)), new_cache

    def _positions(self, tokens_BT, segment_ids_BT, positions_BT, cache, cache_index) -> jax.Array | None:
        """The positions_BT for `add_positions`: given, from the segments (of the cache), or None."""
        m = self.config
        B, T = tokens_BT.shape
        if positions_BT is not None:
            if m.positions == "alibi":
                raise ValueError("positions_BT has no effect with ALiBi, whose bias depends only on "
                                 "token distances: pass segment_ids_BT instead")
            if jnp.shape(positions_BT) != (B, T):
                raise ValueError(f"positions_BT must have shape {(B, T)}, got {jnp.shape(positions_BT)}")
            return positions_BT
        if segment_ids_BT is not None and jnp.shape(segment_ids_BT) != (B, T):
            raise ValueError(f"segment_ids_BT must have shape {(B, T)}, got {jnp.shape(segment_ids_BT)}")
        if cache is None and segment_ids_BT is None:
            return None  # 0 .. T - 1, checked against max_len by add_positions
        # Restarted positions never exceed the plain ones, so the plain range is what must fit.
        check_position_range(m, cache_index, T)
        if cache is None:
            return positions_from_segments(segment_ids_BT)
        # In a cache, a token's position counts from the start of its segment among the slots
        # (e.g. after a left-padded prompt's pad slots): the same ids each layer writes.
        kv_BS = write_cache_segments(cache[0]["segment_ids"], segment_ids_BT, cache_index, B, T)["kv_segment_ids"]
        return jax.lax.dynamic_slice_in_dim(positions_from_segments(kv_BS), cache_index, T, axis=1)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> list[dict]:
        dtype = dtype or self.dtype
        return [block.attn.init_cache(batch, max_len, dtype) for block in self.blocks]

    def kv_cache_bytes_per_token(self, dtype=None) -> int:
        """Bytes the KV cache holds per token per sequence: 2 (k, v) x layers x kv_heads x head_dim
        (plus, not counted here, each slot's int32 segment id per layer); an int8 cache (quant.kv) holds
        one byte per value and two per head for its scale."""
        m = self.config
        head_dim = m.d_model // m.n_heads
        if self.blocks[0].attn.kv_quant == "int8":  # int8 values and a bfloat16 scale per head
            return 2 * m.n_layers * m.n_kv_heads * (head_dim + 2)
        itemsize = jnp.dtype(dtype or self.dtype).itemsize
        return 2 * m.n_layers * m.n_kv_heads * head_dim * itemsize
