"""The main job: a ~1.3M-parameter GPT pretrained on Shakespeare in about five CPU minutes.

Llama-style blocks (RMSNorm, SwiGLU, RoPE) in a 4-layer, d=128 decoder with a 2,048-token BPE.
The optimizer settings come from experiments/main_job_sweep.py (results in
experiments/main_job_sweep.md): at a fixed budget of ~3M tokens, batch 8 with a 200-step warmup
and untied embeddings beat the GPT-2 defaults by ~0.08 bits per byte.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.batch_size = 8
    c.model.norm = "rmsnorm"
    c.model.mlp = "swiglu"
    c.model.d_ff = 344              # 3 x 128 x 344 ~ the parameters of a 4x GELU MLP
    c.model.tie_embeddings = False
    c.train.steps = 2900
    c.train.learning_rate = 2.5e-3
    c.train.warmup_steps = 200
    c.train.steps_per_call = 20
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.train.eval_batches = 16
    return c
