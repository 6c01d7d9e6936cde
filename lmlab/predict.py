"""Encoder (BERT-family) runs on new text: fill-mask with the MLM head, and passage classification.

Inputs are framed as in training (lmlab.tasks.mlm, lmlab.tasks.classify): `[CLS] text [SEP]`,
one segment, pad id 0 masked out of attention. `lmlab sample RUN --fill "To be or not to [MASK]"`
and `lmlab sample CLASSIFIER_RUN --prompt PASSAGE` are thin wrappers around these functions.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

MASK = "[MASK]"


def is_classifier(config) -> bool:
    """Whether a run config describes a sequence classifier (task classify)."""
    return config.task == "classify"


def class_names(config) -> list[str]:
    """Class k is the document data.classify_docs[k] (lmlab.tasks.classify)."""
    return list(config.data.classify_docs)


def frame_ids(tokenizer, ids: list[int]) -> list[int]:
    """[CLS] ids [SEP]: the special tokens the BERT tasks train with ([CLS]/[SEP] of imported
    WordPiece tokenizers are their bos/eos)."""
    special = tokenizer.special_ids
    return [special.get("[CLS]", tokenizer.bos_id), *ids, special.get("[SEP]", tokenizer.eos_id)]


@dataclass(frozen=True)
class Candidate:
    token_id: int
    token: str      # the token's own text
    prob: float
    text: str       # the input with this token in place of the mask


@functools.partial(jax.jit, static_argnames="graphdef")
def _mask_probs(graphdef, params, tokens_BT, positions_P):
    model = nnx.merge(graphdef, nnx.State(params))
    hidden_BTD = model.encode(tokens_BT)
    return jax.nn.softmax(model.mlm_logits(hidden_BTD[0, positions_P]), axis=-1)


def fill_mask(model, tokenizer, text: str, *, top_k: int = 5, max_len: int | None = None) -> list[list[Candidate]]:
    """The top_k tokens (most likely first) and their probabilities at each [MASK] of `text`, one
    list per mask in order; every mask is predicted from the same input (all masks in place)."""
    if not hasattr(model, "mlm_logits") or not hasattr(model, "mlm_head"):
        raise ValueError("fill-mask needs a masked-LM run (a BERT pretraining run); this run's model has no MLM head")
    mask_id = tokenizer.special_ids.get(MASK)
    if mask_id is None:
        raise ValueError(f"this run's tokenizer has no {MASK} token")
    ids = tokenizer.encode(text)
    positions = [i for i, t in enumerate(ids) if t == mask_id]
    if not positions:
        raise ValueError(f"--fill needs a {MASK} in the text, e.g. \"To be or not to {MASK}\"")
    tokens = frame_ids(tokenizer, ids)
    max_len = max_len or model.config.max_len
    if len(tokens) > max_len:
        raise ValueError(f"the text is {len(tokens)} tokens with [CLS] and [SEP]; this run takes at most {max_len}")
    graphdef, state = nnx.split(model)
    probs_PV = np.asarray(_mask_probs(graphdef, nnx.to_pure_dict(state), jnp.asarray([tokens], jnp.int32),
                                      jnp.asarray([p + 1 for p in positions])))
    k = min(top_k, probs_PV.shape[-1])
    out = []
    for position, probs_V in zip(positions, probs_PV):
        best = np.argsort(-probs_V, kind="stable")[:k]
        out.append([Candidate(int(v), tokenizer.decode([int(v)]), float(probs_V[v]),
                              tokenizer.decode(ids[:position] + [int(v)] + ids[position + 1:])) for v in best])
    return out


@functools.partial(jax.jit, static_argnames="graphdef")
def _class_probs(graphdef, params, tokens_BT):
    logits_BC, _ = nnx.merge(graphdef, nnx.State(params))(tokens_BT)
    return jax.nn.softmax(logits_BC, axis=-1)


def classify(model, tokenizer, text: str, seq_len: int) -> np.ndarray:
    """[n_classes] class probabilities of a passage. Training examples are `[CLS]` + seq_len - 2
    tokens + `[SEP]`: a longer passage is cut into such windows (the last one shorter, padded) and
    the probabilities are averaged over them."""
    if not hasattr(model, "classifier"):
        raise ValueError("classifying a passage needs a classifier run (task classify)")
    ids = tokenizer.encode(text)
    if not ids:
        raise ValueError("the passage to classify is empty")
    L = seq_len - 2
    windows = [frame_ids(tokenizer, ids[i:i + L]) for i in range(0, len(ids), L)]
    tokens_BT = np.zeros((len(windows), seq_len), np.int32)  # pad id 0: masked out of attention
    for row, window in enumerate(windows):
        tokens_BT[row, : len(window)] = window
    graphdef, state = nnx.split(model)
    probs_BC = np.asarray(_class_probs(graphdef, nnx.to_pure_dict(state), jnp.asarray(tokens_BT)))
    return probs_BC.mean(0)
