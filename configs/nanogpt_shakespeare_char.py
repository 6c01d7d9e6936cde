"""nanoGPT's CPU recipe ("I only have a macbook", its README) as an lmlab config.

    lmlab train configs/nanogpt_shakespeare_char.py
    python experiments/speed_vs_nanogpt.py --nanogpt PATH/TO/nanoGPT   # side by side with it

Character tokens, 4 layers, 4 heads, d 128, block 64, batch 12, dropout 0, no biases, learned
positions, LayerNorm, a 4x GELU MLP, tied embeddings; AdamW lr 1e-3 (warmup 100, cosine to 1e-4 at
2,000 iterations), beta2 0.99, weight decay 0.1, clip 1.0; an evaluation every 250 iterations.
nanoGPT evaluates 20 batches of each split there (40 in all), so the periodic evals here take 40
held-out batches; lmlab also evaluates the whole held-out split once at the end.
Differences that remain: lmlab's GELU is the tanh approximation (nanoGPT: erf), and the text is
lmlab's Shakespeare corpus (the 37 plays), not nanoGPT's 1 MB tiny-shakespeare download.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.tokenizer.kind = "char"
    c.data.seq_len = 64
    c.data.batch_size = 12
    c.model.max_len = 64
    c.model.positions = "learned"
    c.model.norm = "layernorm"
    c.model.mlp = "gelu"
    c.model.d_ff = 512
    c.model.use_bias = False
    c.model.tie_embeddings = True
    c.train.steps = 2000
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 100
    c.train.steps_per_call = 50
    c.train.log_every = 50
    c.train.eval_every = 250
    c.train.eval_batches = 40
    c.train.checkpoint_every = 250
    return c
