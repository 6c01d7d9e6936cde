"""Fine-tuning the imported SmolLM2-135M(-Instruct) on your own text: next-token loss on every token.

    lmlab import smollm2 --out runs/smollm2                                    # once: model and tokenizer
    lmlab train configs/smollm2_finetune.py --config.data.corpus=~/my_texts    # a folder of text files
    lmlab sample runs/smollm2_finetune --prompt "Once upon a time"

`data.corpus` takes a folder or glob of text files (one document each), a `.jsonl` / `.jsonl.gz` of
{"text": ...} lines, or a registered corpus (the default, so the config runs as it is). The model
and tokenizer sections come from the train.init_from run (lmlab.config.inherit_from_init), and so
do the token ids: documents are separated by the tokenizer's end id (<|im_end|> for the imported
Instruct model, as lmlab.data.encode does for every tokenizer). `lmlab prepare` with
the same arguments tokenizes first, on every core. Full fine-tuning on a 2-core CPU takes several
seconds a step: shorten train.steps for a first try, or train LoRA adapters (--config.lora.rank=8).
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.corpus = "shakespeare_tiny"  # replace with your own: --config.data.corpus=PATH
    c.data.seq_len = 256
    c.data.batch_size = 4
    c.train.init_from = "runs/smollm2"
    c.train.steps = 200
    c.train.learning_rate = 5e-5
    c.train.warmup_steps = 20
    c.train.weight_decay = 0.0
    c.train.steps_per_call = 10
    c.train.log_every = 10
    c.train.eval_every = 50
    c.train.checkpoint_every = 50
    c.train.eval_batches = 4
    c.sample.prompts = ("ROMEO:\n",)
    c.sample.max_new_tokens = 60
    return c
