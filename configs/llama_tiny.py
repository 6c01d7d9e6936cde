"""A Llama-style decoder at main-job scale: RMSNorm, SwiGLU, RoPE, grouped-query attention, no biases."""

from configs import gpt_shakespeare


def get_config():
    c = gpt_shakespeare.get_config()
    c.model.n_heads = 4
    c.model.n_kv_heads = 2          # GQA: two query heads share each key/value head
    c.model.norm = "rmsnorm"
    c.model.norm_eps = 1e-6
    c.model.mlp = "swiglu"
    c.model.positions = "rope"
    c.model.use_bias = False
    c.model.tie_embeddings = False
    return c
