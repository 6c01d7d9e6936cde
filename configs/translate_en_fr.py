"""English -> French translation with the encoder-decoder Transformer, on CPU in a few minutes.

Data: ``ui_en_fr``, 4,807 UI-string pairs from the French gettext catalogs of JupyterLab, Django
and Sphinx (PyPI wheels; lmlab/data/po_catalogs.py), split by a hash of the English string into
train / dev / test (4,082 / 249 / 476). One shared 2,000-token BPE for both languages. Training
rows pack ~4.4 pairs each (48 source / 64 target positions), so a step of 16 rows sees ~70 pairs.

Model: the original recipe at toy scale: sinusoidal positions, shared tied embeddings (encoder,
decoder, output), label smoothing 0.1, dropout 0.1; pre-norm for stable short training.
Evaluation: dev loss during training; at the end test loss and corpus BLEU (sacrebleu) of greedy
and beam-4 decoding (GNMT length penalty alpha 0.6, fixed a priori).
Measured (README, "Translation"): test BLEU 26.4 greedy, 29.5 beam-4.
"""

from configs import base


def get_config():
    c = base.get_config()
    c.data.corpus = "ui_en_fr"
    c.data.batch_size = 16          # rows of packed pairs (~4.5 pairs each)
    c.data.src_len = 48
    c.data.tgt_len = 64
    c.data.pack_pairs = True
    c.tokenizer.vocab_size = 2000
    c.task = "translate"
    c.model.family = "encdec"
    c.model.n_encoder_layers = 3
    c.model.n_layers = 3
    c.model.d_model = 128
    c.model.n_heads = 4
    c.model.n_kv_heads = 4
    c.model.d_ff = 512
    c.model.max_len = 64
    c.model.positions = "sinusoidal"
    c.model.shared_vocab = True
    c.model.tie_embeddings = True
    c.model.dropout = 0.1
    c.train.steps = 1500
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 200
    c.train.weight_decay = 0.1
    c.train.label_smoothing = 0.1
    c.train.steps_per_call = 20
    c.train.eval_every = 500
    c.train.checkpoint_every = 500
    c.sample.prompts = ("Save the notebook", "Open a new terminal", "The file could not be deleted.")
    c.sample.max_new_tokens = 63
    c.sample.temperature = 0.0
    c.sample.beam_size = 4
    c.sample.length_penalty = 0.6
    return c
