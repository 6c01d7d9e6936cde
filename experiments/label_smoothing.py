"""Label smoothing: 0 against 0.1 in English -> French translation, scored by test BLEU.

    lmlab experiment experiments/label_smoothing.py [--scale tiny]

configs/translate_en_fr.py (encoder-decoder, 3 + 3 layers, d_model 128, 1,500 steps; UI strings of
JupyterLab, Django and Sphinx) with train.label_smoothing 0 and 0.1 (the config's). The end-of-run
evaluation scores the 476 held-out test pairs: corpus BLEU (sacrebleu) of beam-4 (`bleu`) and
greedy translations, and the test cross-entropy (`test_loss`, nats per target token, unsmoothed).
"""

from lmlab.experiment import Experiment
from lmlab.experiment import plots

# The translation tests' shrunken setup: a few hundred JupyterLab pairs, one narrow layer each side.
TINY_TRANSLATION = {
    "data.corpus": "jupyterlab_en_fr_tiny", "data.batch_size": 8, "data.src_len": 24, "data.tgt_len": 24,
    "tokenizer.vocab_size": 400, "model.n_encoder_layers": 1, "model.n_layers": 1, "model.d_model": 32,
    "model.n_heads": 2, "model.n_kv_heads": 2, "model.d_ff": 64, "model.max_len": 32, "train.steps": 20,
    "train.warmup_steps": 2, "train.steps_per_call": 10, "train.log_every": 10, "train.eval_every": 20,
    "train.checkpoint_every": 10, "sample.beam_size": 2,
}

EXPERIMENT = Experiment(
    description=__doc__.split("\n\n")[0] + """

Anchor: Vaswani et al. 2017 (label smoothing 0.1 "hurts perplexity ... but improves accuracy and
BLEU"); Szegedy et al. 2016 introduced it. Here the test set is small (476 short strings), so
BLEU's seed spread is large.""",
    base="configs/translate_en_fr.py",
    variants=[
        ("ls-0", {"train.label_smoothing": 0.0}),
        ("ls-0.1", {"train.label_smoothing": 0.1}),
    ],
    seeds=3,
    tiny=TINY_TRANSLATION,
    eval_metrics=("bleu", "bleu_greedy", "test_loss"),
    primary="bleu",
    table=("bleu", "bleu_greedy", "test_loss", "val_loss"),
    plot=plots.per_variant(("bleu", "bleu_greedy", "test_loss")),
)
