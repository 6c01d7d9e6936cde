"""Supervised fine-tuning of the imported SmolLM2-135M-Instruct on en->fr translation conversations.

    lmlab import smollm2 --out runs/smollm2          # once: the model and its ChatML tokenizer
    lmlab train configs/smollm2_sft.py               # fine-tune (the model section comes from the run)
    lmlab chat runs/smollm2_sft                      # talk to the result

The conversations are "Translate to French: <English UI string>" -> the French string, from the
training pairs of the gettext catalogs (lmlab.data.conversations, `translate_en_fr`); dev pairs
are held out, test pairs stay unseen. `--config.data.corpus=PATH.jsonl` swaps in your own
{"messages": [...]} conversations. Full fine-tuning on a 2-core CPU costs ~10 s per step at
batch 2 x 128: shorten train.steps for a first try.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.task = "sft"
    c.data.corpus = "translate_en_fr"
    c.data.seq_len = 128
    c.data.batch_size = 8
    c.train.init_from = "runs/smollm2"
    c.train.steps = 400
    c.train.learning_rate = 5e-5
    c.train.warmup_steps = 20
    c.train.weight_decay = 0.0
    c.train.steps_per_call = 10
    c.train.log_every = 10
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.eval_batches = 8
    c.sample.prompts = ()
    return c
