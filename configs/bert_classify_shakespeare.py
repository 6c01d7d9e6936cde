"""Fine-tunes the bert_shakespeare encoder to tell which of the four held-out plays a passage is from.

Classes: The Winter's Tale, Macbeth, Richard II, Twelfth Night (one romance, tragedy, history and
comedy) - the plays bert_shakespeare never saw in pretraining. Each play's first 80% gives training
passages, its last 20% the held-out ones (balanced: chance accuracy is 25%). A passage is
`[CLS] 62 BPE tokens [SEP]` (~250 characters). Run the pretraining first:

    lmlab train configs/bert_shakespeare.py
    lmlab train configs/bert_classify_shakespeare.py                   # fine-tune from runs/bert_shakespeare
    lmlab train configs/bert_classify_shakespeare.py --config.train.init_from= --workdir runs/cls_scratch

The model settings must equal the pretraining run's (they are its config plus n_classes).

Measured (300 steps, ~2 CPU minutes each): fine-tuned from bert_shakespeare 75.6% held-out
accuracy, from scratch 79.9% (lr 3e-4: 66.9% and 76.5%). This task is mostly spotting character
names, which a fresh model learns as fast; MLM pretraining (no next-sentence objective, so an
untrained [CLS]/pooler) does not help it at this scale.
"""

from configs import bert_shakespeare


def get_config():
    c = bert_shakespeare.get_config()
    c.data.classify_docs = ("a-winter-s-tale", "macbeth", "richard-ii", "twelfth-night")
    c.data.classify_val_fraction = 0.2
    c.data.seq_len = 64
    c.data.batch_size = 32
    c.task = "classify"
    c.model.n_classes = 4
    c.model.dropout = 0.1
    c.train.init_from = "runs/bert_shakespeare"
    c.train.steps = 300
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 30
    c.train.weight_decay = 0.01
    c.train.steps_per_call = 10
    c.train.eval_every = 100
    c.train.checkpoint_every = 100
    c.train.eval_batches = 8
    return c
