"""The shape of GPT-3 175B (Brown et al. 2020, Table 2.1), for `lmlab params` and `lmlab bench train`.

96 layers, d_model 12288, 96 heads of 128, d_ff = 4 d_model, a 2048-token context with learned
positions, GPT-2's 50257-token BPE vocabulary, LayerNorm, GELU, biases, tied embeddings:
174.6B parameters by lmlab's count (the paper rounds to 175.0B). Not trainable on one machine.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.seq_len = 2048
    c.tokenizer.vocab_size = 50257
    c.model.n_layers = 96
    c.model.d_model = 12288
    c.model.n_heads = 96
    c.model.n_kv_heads = 96
    c.model.d_ff = 4 * 12288
    c.model.max_len = 2048
    c.model.positions = "learned"
    c.model.norm = "layernorm"
    c.model.mlp = "gelu"
    c.model.tie_embeddings = True
    c.model.use_bias = True
    c.model.dtype = "bfloat16"
    return c
