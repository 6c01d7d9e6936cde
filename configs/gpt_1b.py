"""A ~1B-parameter Llama-style decoder for throughput and MFU measurements on one GPU.

Sized for a single 80 GB GPU and meant for `lmlab bench train configs/gpt_1b.py`: training it for
real needs a corpus far larger than Shakespeare. 20 layers, d=2048, 16 heads of 128, SwiGLU with
d_ff 5504 (3 x 2048 x 5504 ~ the parameters of a 4x GELU MLP), RoPE, RMSNorm, no biases, a
2,048-token context and a 50,304-token vocabulary with tied embeddings: 1.01B parameters outside
the embedding, 1.12B in all. Compute in bfloat16; parameters, gradients and AdamW state in float32
(16 bytes per parameter). Batch 8 x 2048 peaked at 42 GB on an H100 80GB (bench train, cuDNN
attention), under the 75% of GPU memory that JAX preallocates by default.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.seq_len = 2048
    c.data.batch_size = 8           # 8 x 2048 tokens per step
    c.tokenizer.vocab_size = 50304
    c.model.n_layers = 20
    c.model.d_model = 2048
    c.model.n_heads = 16
    c.model.n_kv_heads = 16
    c.model.d_ff = 5504
    c.model.max_len = 2048
    c.model.positions = "rope"
    c.model.norm = "rmsnorm"
    c.model.mlp = "swiglu"
    c.model.tie_embeddings = True
    c.model.use_bias = False
    c.model.attention_impl = "auto"
    c.model.dtype = "bfloat16"
    c.train.learning_rate = 3e-4
    c.train.warmup_steps = 1000
    c.train.steps = 20000
    c.train.steps_per_call = 1
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.sample.prompts = ("\n",)
    return c
