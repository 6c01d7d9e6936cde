"""Encoder-decoder Transformer (Vaswani et al. 2017), pre-norm, built from lmlab.nn parts.

    logits_BTV, _ = model(target_in_BT, source=source_BS)             # teacher forcing
    cache = model.init_cache(B, max_len, source=source_BS)            # encoder runs once here
    logits_B1V, cache = model(token_B1, cache=cache, cache_index=i)   # one decoding step

The encoder is bidirectional self-attention over the source with its padding masked (id 0, the
pad id of every lmlab tokenizer); the decoder is causal self-attention with a KV cache plus
cross-attention to the encoder output under the same source padding mask. The decoding cache
holds, per decoder layer, the self-attention cache and the cross-attention keys/values projected
once from the encoder output, plus the source mask; every leaf has the batch first, so beam search
can repeat and reorder it like a decoder-only cache.

Packed training rows (several short pairs per row, as in T5 / Flax's WMT example): pass
`src_segments` / `tgt_segments` ([B, S] / [B, T], pair 1, 2, ... of the row, 0 = padding) and the
positions of each token within its own pair. Attention then stays inside a pair: encoder
self-attention and cross-attention only between tokens of the same segment, decoder
self-attention causal within the segment. Without them a row is one pair (decoding, evaluation).

Config (`model` section): n_encoder_layers (encoder) and n_layers (decoder), positions
sinusoidal (the original) | learned | rope | alibi, norm, mlp, shared_vocab (one embedding table
for source and target; otherwise a separate source table of the same size), tie_embeddings
(output projection = target embedding), dropout.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from lmlab.models.gpt import DTYPES, dropout
from lmlab.nn.attention import CrossAttention, SelfAttention
from lmlab.nn.linear import Embed, Linear
from lmlab.nn.mlp import make_mlp
from lmlab.nn.norms import make_norm
from lmlab.nn.positions import add_positions, learned_table
from lmlab.ops.attention_masks import make_segment_mask

PAD_ID = 0  # every lmlab tokenizer reserves id 0 for padding


def _keys(key, n):
    return list(jax.random.split(key, n)) if key is not None else [None] * n


class EncoderBlock(nnx.Module):
    def __init__(self, m, *, dtype, rngs: nnx.Rngs):
        out_std = 0.02 / math.sqrt(2 * m.n_encoder_layers)
        self.norm1 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.attn = SelfAttention.from_config(m, dtype=dtype, out_init_std=out_std, rngs=rngs)
        self.norm2 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.mlp = make_mlp(m.mlp, m.d_model, m.d_ff, use_bias=m.use_bias, dtype=dtype,
                            out_init_std=out_std, rngs=rngs)
        self.dropout_rate = m.dropout

    def __call__(self, x_BSD, *, mask, rope, dropout_key, segment_ids_BS=None):
        k1, k2 = _keys(dropout_key, 2)
        h, _ = self.attn(self.norm1(x_BSD), rope=rope, mask=mask, causal=False, segment_ids_BT=segment_ids_BS)
        x_BSD = x_BSD + dropout(h, self.dropout_rate, k1)
        return x_BSD + dropout(self.mlp(self.norm2(x_BSD)), self.dropout_rate, k2)


class DecoderBlock(nnx.Module):
    def __init__(self, m, *, dtype, rngs: nnx.Rngs):
        out_std = 0.02 / math.sqrt(3 * m.n_layers)  # three residual branches per block
        norm = lambda: make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)  # noqa: E731
        self.norm1, self.norm_cross, self.norm2 = norm(), norm(), norm()
        self.self_attn = SelfAttention.from_config(m, dtype=dtype, out_init_std=out_std, rngs=rngs)
        self.cross_attn = CrossAttention(m.d_model, m.n_heads, m.n_kv_heads, use_bias=m.use_bias, dtype=dtype,
                                         impl=m.attention_impl, out_init_std=out_std, rngs=rngs)
        self.mlp = make_mlp(m.mlp, m.d_model, m.d_ff, use_bias=m.use_bias, dtype=dtype,
                            out_init_std=out_std, rngs=rngs)
        self.dropout_rate = m.dropout

    def __call__(self, x_BTD, *, enc_kv, cross_mask, rope, cache, cache_index, dropout_key, segment_ids_BT=None):
        k1, k2, k3 = _keys(dropout_key, 3)
        h, cache = self.self_attn(self.norm1(x_BTD), rope=rope, causal=True, cache=cache, cache_index=cache_index,
                                  segment_ids_BT=segment_ids_BT)
        x_BTD = x_BTD + dropout(h, self.dropout_rate, k1)
        h = self.cross_attn(self.norm_cross(x_BTD), enc_kv, mask=cross_mask)
        x_BTD = x_BTD + dropout(h, self.dropout_rate, k2)
        x_BTD = x_BTD + dropout(self.mlp(self.norm2(x_BTD)), self.dropout_rate, k3)
        return x_BTD, cache


class EncDec(nnx.Module):
    decodes, needs_source = True, True  # generates a target conditioned on an encoded source

    def __init__(self, m, vocab_size: int, *, rngs: nnx.Rngs):
        m = ml_collections.FrozenConfigDict(m)  # static graph data; jit needs it hashable
        if m.remat != "none":
            raise ValueError("model.remat is not supported by the encdec family; use none")
        self.config = m
        self.vocab_size = vocab_size
        self.dtype = DTYPES[m.dtype]
        # Original Transformer scaling: embeddings ~ N(0, 1/d) multiplied by sqrt(d), so tokens and
        # sinusoidal positions enter at the same (unit) scale, and tied output logits start O(1).
        init_std = m.d_model ** -0.5
        self.embed = Embed(vocab_size, m.d_model, dtype=self.dtype, init_std=init_std, rngs=rngs)
        if not m.shared_vocab:
            self.src_embed = Embed(vocab_size, m.d_model, dtype=self.dtype, init_std=init_std, rngs=rngs)
        self.pos_embed = learned_table(m, init_std=0.01, rngs=rngs)
        self.encoder = nnx.List([EncoderBlock(m, dtype=self.dtype, rngs=rngs) for _ in range(m.n_encoder_layers)])
        self.encoder_norm = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.decoder = nnx.List([DecoderBlock(m, dtype=self.dtype, rngs=rngs) for _ in range(m.n_layers)])
        self.final_norm = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        if not m.tie_embeddings:
            self.lm_head = Linear(m.d_model, vocab_size, use_bias=False, dtype=self.dtype, rngs=rngs,
                                  axes=("embed", "vocab"))

    def _embed(self, table: Embed, ids_BT, offset, positions_BT=None):
        """Scaled token embeddings plus absolute positions; returns (x_BTD, rope or None)."""
        m = self.config
        T = ids_BT.shape[1]
        if m.positions in ("learned", "sinusoidal") and T > m.max_len:
            raise ValueError(f"sequence of {T} tokens exceeds model.max_len = {m.max_len}")
        x_BTD = table(ids_BT) * jnp.asarray(math.sqrt(m.d_model), self.dtype)
        return add_positions(m, x_BTD, self.pos_embed, offset=offset, positions_BT=positions_BT)

    def encode(self, source_BS: jax.Array, *, segments_BS=None, positions_BS=None, dropout_key=None):
        """Returns (encoder output enc_BSD, source mask src_mask_BS: True = real token).

        With `segments_BS` (packed rows) a token attends only to real tokens of its own segment.
        """
        source_BS = jnp.asarray(source_BS, jnp.int32)
        src_mask_BS = source_BS != PAD_ID
        x_BSD, rope = self._embed(self.embed if self.config.shared_vocab else self.src_embed, source_BS, 0,
                                  positions_BS)
        mask = src_mask_BS[:, None, None, :]  # [B, 1, 1, S]: keys that are real tokens (of the query's pair)
        keys = _keys(dropout_key, len(self.encoder) + 1)
        x_BSD = dropout(x_BSD, self.config.dropout, keys[-1])
        for block, key in zip(self.encoder, keys):
            x_BSD = block(x_BSD, mask=mask, rope=rope, dropout_key=key, segment_ids_BS=segments_BS)
        return self.encoder_norm(x_BSD), src_mask_BS

    def init_cache(self, batch: int, max_len: int, dtype=None, *, source: jax.Array) -> dict:
        """Decoding state for `batch` sources: runs the encoder and projects its k/v once."""
        dtype = dtype or self.dtype
        if source.shape[0] != batch:
            raise ValueError(f"source has {source.shape[0]} rows, the cache {batch}")
        enc_BSD, src_mask_BS = self.encode(source)
        return {"self": [block.self_attn.init_cache(batch, max_len, dtype) for block in self.decoder],
                "cross": [block.cross_attn.encode_kv(enc_BSD) for block in self.decoder],
                "src_mask": src_mask_BS}

    def __call__(self, tokens_BT: jax.Array, *, source: jax.Array | None = None, cache: dict | None = None,
                 cache_index=0, dropout_key: jax.Array | None = None, src_segments=None, tgt_segments=None,
                 src_positions=None, tgt_positions=None):
        """Returns (logits_BTV in float32, updated cache or None).

        Without a cache, `source` [B, S] is encoded here (training, full recomputation); with one
        (from `init_cache`), tokens_BT sit at target positions cache_index .. cache_index + T - 1.
        Segments and positions describe packed training rows (module docstring; no cache).
        """
        m = self.config
        if (src_segments is None) != (tgt_segments is None) or (src_segments is not None and cache is not None):
            raise ValueError("packed rows need both src_segments and tgt_segments, and no cache")
        enc_key, dec_key = _keys(dropout_key, 2)
        if cache is None:
            if source is None:
                raise ValueError("EncDec needs source= (or a cache from init_cache(..., source=))")
            enc_BSD, src_mask_BS = self.encode(source, segments_BS=src_segments, positions_BS=src_positions,
                                               dropout_key=enc_key)
            cross = [block.cross_attn.encode_kv(enc_BSD) for block in self.decoder]
            self_caches = [None] * len(self.decoder)
        else:
            cross, src_mask_BS, self_caches = cache["cross"], cache["src_mask"], cache["self"]
        cross_mask = src_mask_BS[:, None, None, :]  # [B, 1, 1, S]
        if tgt_segments is not None:  # [B, 1, T, S]: stay within the query's pair (self-attention: ids)
            cross_mask = cross_mask & make_segment_mask(tgt_segments, src_segments)
        x_BTD, rope = self._embed(self.embed, tokens_BT, cache_index, tgt_positions)
        keys = _keys(dec_key, len(self.decoder) + 1)
        x_BTD = dropout(x_BTD, m.dropout, keys[-1])
        new_self = []
        for block, enc_kv, layer_cache, key in zip(self.decoder, cross, self_caches, keys):
            x_BTD, layer_cache = block(x_BTD, enc_kv=enc_kv, cross_mask=cross_mask, rope=rope, cache=layer_cache,
                                       cache_index=cache_index, dropout_key=key, segment_ids_BT=tgt_segments)
            new_self.append(layer_cache)
        x_BTD = self.final_norm(x_BTD)
        logits_BTV = self.embed.attend(x_BTD) if m.tie_embeddings else self.lm_head(x_BTD)
        new_cache = None if cache is None else {"self": new_self, "cross": cross, "src_mask": src_mask_BS}
        return logits_BTV.astype(jnp.float32), new_cache
