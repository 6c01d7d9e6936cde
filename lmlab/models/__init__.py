"""Model registry: `build_model(model_config, vocab_size, seed)` for every family."""

from __future__ import annotations

from flax import nnx

from lmlab.models.bert import build_bert
from lmlab.models.encdec import EncDec
from lmlab.models.gpt import GPT

FAMILIES = {"gpt": GPT, "bert": build_bert, "encdec": EncDec}  # bert: BERT, or BertClassifier when model.n_classes > 0


def build_model(model_config, vocab_size: int, seed: int = 0) -> nnx.Module:
    family = model_config.family
    if family not in FAMILIES:
        raise ValueError(f"unknown model family '{family}'; available: {', '.join(FAMILIES)}")
    return FAMILIES[family](model_config, vocab_size, rngs=nnx.Rngs(params=seed))


def count_params(model: nnx.Module) -> int:
    import jax

    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
