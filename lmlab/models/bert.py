"""BERT-style bidirectional encoder, its masked-LM head, pooler and a sequence classifier.

Built from the same lmlab.nn parts as GPT (SelfAttention with causal=False and a key padding mask,
make_norm, make_mlp, Embed, Linear), with the same conventions: float32 parameters computed in
`model.dtype`, dropout driven by an explicit key (no key = deterministic).

Embeddings: token + position (learned | sinusoidal; or rope inside attention; or alibi) + segment
(token type, `model.type_vocab_size`, 0 = none). Two block orders (`model.prenorm`):

  * post-norm (False, original BERT): embeddings -> LayerNorm; per block
        x = norm1(x + attn(x));  x = norm2(x + mlp(x))
  * pre-norm (True, like GPT): no embedding norm; per block
        x = x + attn(norm1(x));  x = x + mlp(norm2(x));  a final norm after the last block.

MLM head (as in BERT): dense D->D, activation, norm, then the decoder tied to the token embedding
(or an untied D->V matrix) plus an output bias. The pooler is tanh(dense(hidden at [CLS], position 0)).
Parameter paths follow the module fields (embed, pos_embed, type_embed, embed_norm, blocks/i/...,
final_norm, pooler, mlm_head/...); `BertClassifier` has the same encoder fields plus `classifier`,
so `train.init_from=<pretraining run>` copies the encoder into a classifier.

Pad id is 0; positions are 0..T-1.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx

from lmlab.models.gpt import DTYPES, REMAT_POLICIES, dropout
from lmlab.nn.attention import SelfAttention
from lmlab.nn.linear import Embed, Linear
from lmlab.nn.mlp import make_mlp
from lmlab.nn.norms import make_norm
from lmlab.nn.positions import add_positions, learned_table

PAD_ID = 0


class EncoderBlock(nnx.Module):
    def __init__(self, m, *, dtype, rngs: nnx.Rngs):
        # Pre-norm stacks scale residual projections by depth (GPT-2); BERT initializes all at 0.02.
        out_std = 0.02 / math.sqrt(2 * m.n_layers) if m.prenorm else 0.02
        self.attn = SelfAttention.from_config(m, dtype=dtype, out_init_std=out_std, rngs=rngs)
        self.norm1 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.mlp = make_mlp(m.mlp, m.d_model, m.d_ff, use_bias=m.use_bias, dtype=dtype,
                            out_init_std=out_std, rngs=rngs)
        self.norm2 = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.prenorm = m.prenorm
        self.dropout_rate = m.dropout

    def __call__(self, x_BTD, *, rope, mask_B11T, dropout_key):
        k1, k2 = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        if self.prenorm:
            h_BTD, _ = self.attn(self.norm1(x_BTD), rope=rope, mask=mask_B11T, causal=False)
            x_BTD = x_BTD + dropout(h_BTD, self.dropout_rate, k1)
            return x_BTD + dropout(self.mlp(self.norm2(x_BTD)), self.dropout_rate, k2)
        h_BTD, _ = self.attn(x_BTD, rope=rope, mask=mask_B11T, causal=False)
        x_BTD = self.norm1(x_BTD + dropout(h_BTD, self.dropout_rate, k1))
        return self.norm2(x_BTD + dropout(self.mlp(x_BTD), self.dropout_rate, k2))


class MLMHead(nnx.Module):
    """dense -> activation -> norm -> (tied or untied) decoder + output bias."""

    def __init__(self, m, vocab_size: int, *, dtype, rngs: nnx.Rngs):
        self.dense = Linear(m.d_model, m.d_model, use_bias=m.use_bias, dtype=dtype, rngs=rngs)
        self.norm = make_norm(m.norm, m.d_model, eps=m.norm_eps, use_bias=m.use_bias)
        self.decoder = (None if m.tie_embeddings
                        else Linear(m.d_model, vocab_size, use_bias=False, dtype=dtype, rngs=rngs,
                                    axes=("embed", "vocab")))
        self.bias = (nnx.Param(jnp.zeros((vocab_size,), jnp.float32), logical_axes=("vocab",)) if m.use_bias
                     else None)
        # Exact (erf) GELU for BERT checkpoints (model.mlp = gelu_exact), else the tanh approximation.
        self.approximate_gelu = m.mlp != "gelu_exact"

    def __call__(self, hidden_BXD: jax.Array, embed: Embed) -> jax.Array:
        h_BXD = self.norm(jax.nn.gelu(self.dense(hidden_BXD), approximate=self.approximate_gelu))
        logits_BXV = embed.attend(h_BXD) if self.decoder is None else self.decoder(h_BXD)
        if self.bias is not None:
            logits_BXV = logits_BXV + self.bias[...].astype(logits_BXV.dtype)
        return logits_BXV.astype(jnp.float32)


class BERT(nnx.Module):
    decodes, needs_source = False, False  # an encoder: nothing to generate

    """Bidirectional encoder with a masked-LM head. `model(tokens_BT)` -> (mlm_logits_BTV, None)."""

    def __init__(self, m, vocab_size: int, *, rngs: nnx.Rngs, mlm_head: bool = True):
        # Frozen: the config is static graph data, and jit needs it hashable.
        m = ml_collections.FrozenConfigDict(m)
        self.config = m
        self.vocab_size = vocab_size
        self.dtype = DTYPES[m.dtype]
        self.pad_id = PAD_ID
        D = m.d_model
        self.embed = Embed(vocab_size, D, dtype=self.dtype, rngs=rngs)
        self.pos_embed = learned_table(m, init_std=0.02, rngs=rngs)
        if m.type_vocab_size:
            self.type_embed = Embed(m.type_vocab_size, D, dtype=self.dtype, rngs=rngs)
        # Post-norm normalizes the embedding sum (every block's output is normalized anyway);
        # pre-norm leaves the residual stream raw and normalizes once after the last block.
        if not m.prenorm:
            self.embed_norm = make_norm(m.norm, D, eps=m.norm_eps, use_bias=m.use_bias)
        self.blocks = nnx.List([EncoderBlock(m, dtype=self.dtype, rngs=rngs) for _ in range(m.n_layers)])
        if m.prenorm:
            self.final_norm = make_norm(m.norm, D, eps=m.norm_eps, use_bias=m.use_bias)
        self.pooler = Linear(D, D, use_bias=m.use_bias, dtype=self.dtype, rngs=rngs)
        if mlm_head:
            self.mlm_head = MLMHead(m, vocab_size, dtype=self.dtype, rngs=rngs)

    def encode(self, tokens_BT: jax.Array, *, segment_ids_BT: jax.Array | None = None,
               padding_mask_BT: jax.Array | None = None, dropout_key: jax.Array | None = None) -> jax.Array:
        """hidden_BTD after the last block (and the final norm for pre-norm).

        padding_mask_BT: True = real token (default tokens != pad id 0); padded keys are never
        attended to, so real positions' outputs do not depend on padding. Padded positions' own
        outputs are computed but meaningless.
        """
        m = self.config
        if padding_mask_BT is None:
            padding_mask_BT = tokens_BT != self.pad_id
        x_BTD, rope = add_positions(m, self.embed(tokens_BT), self.pos_embed)
        if m.type_vocab_size:
            if segment_ids_BT is None:
                segment_ids_BT = jnp.zeros_like(tokens_BT)
            x_BTD = x_BTD + self.type_embed(segment_ids_BT)
        if not m.prenorm:
            x_BTD = self.embed_norm(x_BTD)
        keys = (list(jax.random.split(dropout_key, m.n_layers + 1)) if dropout_key is not None
                else [None] * (m.n_layers + 1))
        x_BTD = dropout(x_BTD, m.dropout, keys[-1])
        mask_B11T = padding_mask_BT.astype(bool)[:, None, None, :]

        def run_block(block, x_BTD, rope, mask_B11T, key):
            return block(x_BTD, rope=rope, mask_B11T=mask_B11T, dropout_key=key)

        if m.remat != "none":
            run_block = nnx.remat(run_block, policy=REMAT_POLICIES[m.remat])
        for block, key in zip(self.blocks, keys):
            x_BTD = run_block(block, x_BTD, rope, mask_B11T, key)
        if m.prenorm:
            x_BTD = self.final_norm(x_BTD)
        return x_BTD

    def mlm_logits(self, hidden_BXD: jax.Array) -> jax.Array:
        """MLM logits (float32) for any [..., D] hidden states, e.g. only the masked positions."""
        return self.mlm_head(hidden_BXD, self.embed)

    def pooled(self, hidden_BTD: jax.Array) -> jax.Array:
        """[B, D]: tanh(dense(hidden at position 0, the [CLS] token))."""
        return jnp.tanh(self.pooler(hidden_BTD[:, 0]))

    def __call__(self, tokens_BT: jax.Array, *, segment_ids_BT: jax.Array | None = None,
                 padding_mask_BT: jax.Array | None = None, dropout_key: jax.Array | None = None):
        """(mlm_logits_BTV in float32, None): the None keeps GPT's (logits, cache) shape."""
        hidden_BTD = self.encode(tokens_BT, segment_ids_BT=segment_ids_BT, padding_mask_BT=padding_mask_BT,
                                 dropout_key=dropout_key)
        return self.mlm_logits(hidden_BTD), None


class BertClassifier(BERT):
    """BERT encoder + pooler + dropout + linear to `model.n_classes`; no MLM head.

    `model(tokens_BT)` -> (class_logits_BC in float32, None).
    """

    def __init__(self, m, vocab_size: int, *, rngs: nnx.Rngs):
        super().__init__(m, vocab_size, rngs=rngs, mlm_head=False)
        self.classifier = Linear(m.d_model, m.n_classes, use_bias=True, dtype=self.dtype, rngs=rngs)

    def __call__(self, tokens_BT: jax.Array, *, segment_ids_BT: jax.Array | None = None,
                 padding_mask_BT: jax.Array | None = None, dropout_key: jax.Array | None = None):
        k_enc, k_cls = jax.random.split(dropout_key) if dropout_key is not None else (None, None)
        hidden_BTD = self.encode(tokens_BT, segment_ids_BT=segment_ids_BT, padding_mask_BT=padding_mask_BT,
                                 dropout_key=k_enc)
        pooled_BD = dropout(self.pooled(hidden_BTD), self.config.dropout, k_cls)
        return self.classifier(pooled_BD).astype(jnp.float32), None


def build_bert(m, vocab_size: int, *, rngs: nnx.Rngs) -> BERT:
    """The "bert" family entry of the model registry: a classifier when model.n_classes > 0."""
    if m.get("n_classes", 0):
        return BertClassifier(m, vocab_size, rngs=rngs)
    return BERT(m, vocab_size, rngs=rngs)
