"""A distillation teacher for the main job: the same recipe, 4.4x the parameters, trained longer.

    lmlab train configs/gpt_shakespeare_teacher.py                     # -> runs/gpt_shakespeare_teacher
    lmlab train configs/gpt_shakespeare.py --workdir runs/student \\
        --config.distill.teacher=runs/gpt_shakespeare_teacher --config.distill.alpha=0.5

6 layers, d_model 256, 8 heads, SwiGLU d_ff 688: 5.8M parameters (the main job: 1.3M), 3,000
steps of 16 x 128 tokens, twice the main job's tokens (2,900 steps of 8 x 128); about 15 minutes on
an idle 2-core CPU. It uses the main job's tokenizer
settings, so a student that distils from it takes its tokenizer (lmlab.data.prepare).
"""

from configs import gpt_shakespeare


def get_config():
    c = gpt_shakespeare.get_config()
    c.model.n_layers = 6
    c.model.d_model = 256
    c.model.n_heads = 8
    c.model.n_kv_heads = 8
    c.model.d_ff = 688              # 3 x 256 x 688 ~ the parameters of a 4x GELU MLP
    c.data.batch_size = 16
    c.train.steps = 3000
    c.train.learning_rate = 1.5e-3
    c.train.warmup_steps = 200
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    return c
