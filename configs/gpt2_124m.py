"""GPT-2 small (124M parameters) for throughput and MFU measurements on one GPU.

Sized for a single 80 GB GPU and meant for `lmlab bench train configs/gpt2_124m.py`: training it
for real needs a corpus far larger than Shakespeare (the default corpus would be memorized within
a few hundred steps). The shape is GPT-2's (12 layers, d=768, 12 heads, d_ff 3072, 1,024-token
context, learned positions, LayerNorm, GELU, tied embeddings) with the vocabulary padded from
50,257 to 50,304 (a multiple of 128) for the matmul tiles; compute in bfloat16, parameters and
optimizer state in float32. Batch 32 x 1024 peaked at 24 GB on an H100 80GB (bench train, cuDNN
attention).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.seq_len = 1024
    c.data.batch_size = 32          # 32 x 1024 tokens per step
    c.tokenizer.vocab_size = 50304
    c.model.n_layers = 12
    c.model.d_model = 768
    c.model.n_heads = 12
    c.model.n_kv_heads = 12
    c.model.d_ff = 3072
    c.model.max_len = 1024
    c.model.positions = "learned"
    c.model.norm = "layernorm"
    c.model.mlp = "gelu"
    c.model.tie_embeddings = True
    c.model.use_bias = True
    c.model.attention_impl = "auto"
    c.model.dtype = "bfloat16"
    c.train.learning_rate = 6e-4
    c.train.warmup_steps = 700
    c.train.steps = 20000
    c.train.steps_per_call = 1      # dispatch is negligible next to a GPU step of this size
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.sample.prompts = ("\n",)
    return c
