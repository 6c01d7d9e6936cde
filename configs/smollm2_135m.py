"""The shape of SmolLM2-135M (HuggingFaceTB, 2024), for `lmlab params`; `lmlab import smollm2` brings
the weights (and gives a run with this shape).

30 layers, d_model 576, 9 query heads and 3 key/value heads of 64 (GQA), SwiGLU with d_ff 1536,
RMSNorm, RoPE (theta 100000), no biases, a 49152-token byte-level BPE vocabulary, tied embeddings,
8192-token context: 134,515,008 parameters, the model card's 135M.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.seq_len = 2048
    c.tokenizer.vocab_size = 49152
    c.model.n_layers = 30
    c.model.d_model = 576
    c.model.n_heads = 9
    c.model.n_kv_heads = 3
    c.model.d_ff = 1536
    c.model.max_len = 8192
    c.model.positions = "rope"
    c.model.rope_theta = 100000.0
    c.model.norm = "rmsnorm"
    c.model.norm_eps = 1e-5
    c.model.mlp = "swiglu"
    c.model.tie_embeddings = True
    c.model.use_bias = False
    return c
