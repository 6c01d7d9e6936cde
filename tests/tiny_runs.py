"""Run directories of tiny randomly initialised models (no training), for CLI and inference tests:
config, char tokenizer and a step-0 checkpoint, written like an imported model (lmlab.interop.rundir)."""

from __future__ import annotations

import pathlib

from flax import nnx

from lmlab import config as config_lib
from lmlab.interop import rundir
from lmlab.models import build_model
from lmlab.tokenizers import train_tokenizer

TEXT = "To be, or not to be, that is the question:\nROMEO:\nBut soft, what light through yonder window breaks?\n"
SMALL = ["--config.tokenizer.kind=char", "--config.data.seq_len=16", "--config.data.batch_size=4",
         "--config.model.n_layers=1", "--config.model.d_model=16", "--config.model.n_heads=2",
         "--config.model.n_kv_heads=2", "--config.model.d_ff=32", "--config.model.max_len=32",
         "--config.train.warmup_steps=0", "--config.data.corpus=shakespeare_tiny"]
GPT = ("configs/gpt_shakespeare.py", ())
BERT = ("configs/bert_shakespeare.py", ("[CLS]", "[SEP]", "[MASK]"))
CLASSIFIER = ("configs/bert_classify_shakespeare.py", ("[CLS]", "[SEP]", "[MASK]"))


def write_tiny_run(run_dir: pathlib.Path, kind=GPT, *overrides: str) -> pathlib.Path:
    config_file, special_tokens = kind
    extra = [f"--config.tokenizer.special_tokens={special_tokens!r}"] if special_tokens else []
    if kind is CLASSIFIER:
        extra += ["--config.train.init_from=", "--config.data.classify_docs=('hamlet', 'the-tempest')",
                  "--config.model.n_classes=2"]
    config = config_lib.load(config_file, [*SMALL, *extra, *overrides])
    tokenizer = train_tokenizer("char", TEXT, vocab_size=0, special_tokens=special_tokens,
                                out_dir=run_dir.parent / f"{run_dir.name}-tokenizer")
    model = build_model(config.model, tokenizer.vocab_size, seed=config.seed)
    return rundir.write_run(run_dir, config, tokenizer, nnx.to_pure_dict(nnx.state(model)))
