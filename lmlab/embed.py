"""Sentence embeddings from a BERT-family run (e.g. `lmlab import minilm`), as sentence-transformers does.

    [CLS] text [SEP]  ->  encoder hidden states  ->  mean over real tokens  ->  L2 normalize

so the dot product of two embeddings is their cosine similarity. Also: the contextual embedding of
a word at each place it occurs (the mean of its pieces' hidden states), to compare one word in
different contexts ("apple" the fruit vs the company), and an export for TensorBoard's projector.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from lmlab.plot import scatter_png, shorten

PAD_MULTIPLE = 16  # batches are padded to a multiple of this length: fewer distinct shapes to compile


@dataclasses.dataclass
class Encoded:
    ids: list[list[int]]          # per text: [CLS] pieces [SEP], truncated to the model's length
    hidden_BTD: np.ndarray        # last hidden states, float32, padded positions included
    mask_BT: np.ndarray           # True at real tokens


def text_ids(tokenizer, text: str, max_len: int) -> list[int]:
    return [tokenizer.bos_id] + tokenizer.encode(text)[: max_len - 2] + [tokenizer.eos_id]


@functools.partial(jax.jit, static_argnames="graphdef")
def _encode(graphdef, params, tokens_BT, mask_BT):
    return nnx.merge(graphdef, nnx.State(params)).encode(tokens_BT, padding_mask_BT=mask_BT)


def encode_texts(model, tokenizer, texts: Sequence[str], max_len: int | None = None) -> Encoded:
    """Run the encoder on all texts as one padded batch."""
    if not hasattr(model, "encode"):
        raise ValueError("sentence embeddings need an encoder (BERT-family) run, e.g. one made by "
                         "`lmlab import minilm`; this run's model has no encode()")
    if not texts:
        raise ValueError("no texts to embed")
    max_len = max_len or model.config.max_len
    ids = [text_ids(tokenizer, t, max_len) for t in texts]
    T = min(max_len, -(-max(map(len, ids)) // PAD_MULTIPLE) * PAD_MULTIPLE)
    tokens_BT = np.full((len(ids), T), tokenizer.pad_id, np.int32)
    mask_BT = np.zeros((len(ids), T), bool)
    for row, seq in enumerate(ids):
        tokens_BT[row, : len(seq)] = seq
        mask_BT[row, : len(seq)] = True
    graphdef, state = nnx.split(model)
    hidden = _encode(graphdef, nnx.to_pure_dict(state), jnp.asarray(tokens_BT), jnp.asarray(mask_BT))
    return Encoded(ids, np.asarray(hidden, np.float32), mask_BT)


def l2_normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def mean_pool(hidden_BTD: np.ndarray, mask_BT: np.ndarray) -> np.ndarray:
    """[B, D]: the average hidden state over each row's real tokens ([CLS] and [SEP] included)."""
    weights_BT1 = mask_BT[..., None].astype(np.float32)
    return (hidden_BTD * weights_BT1).sum(1) / np.maximum(weights_BT1.sum(1), 1e-9)


def sentence_embeddings(model, tokenizer, texts: Sequence[str], max_len: int | None = None) -> np.ndarray:
    """[N, D] L2-normalized mean-pooled embeddings: `emb @ emb.T` is the cosine-similarity matrix."""
    encoded = encode_texts(model, tokenizer, texts, max_len)
    return l2_normalize(mean_pool(encoded.hidden_BTD, encoded.mask_BT))


@dataclasses.dataclass
class Occurrence:
    text: int       # which text
    start: int      # first piece's position in that text's ids ([CLS] is 0)
    end: int        # one past the last piece


def find_word(encoded: Encoded, piece_ids: Sequence[int]) -> list[Occurrence]:
    """Every place the word's piece sequence occurs as a whole word (not inside a longer one)."""
    n = len(piece_ids)
    found = []
    for row, seq in enumerate(encoded.ids):
        for start in range(len(seq) - n + 1):
            if seq[start:start + n] == list(piece_ids):
                found.append(Occurrence(row, start, start + n))
    return found


def word_embeddings(model, tokenizer, texts: Sequence[str], word: str,
                    max_len: int | None = None) -> tuple[list[Occurrence], np.ndarray]:
    """(occurrences of `word`, [K, D] L2-normalized contextual embeddings: mean of its pieces)."""
    pieces = tokenizer.encode(word)
    if not pieces:
        raise ValueError(f"--word {word!r} has no word pieces")
    if getattr(tokenizer, "unk_id", None) in pieces:  # [UNK] would match every other unknown word
        raise ValueError(f"--word {word!r} is not in the vocabulary (it encodes to [UNK])")
    encoded = encode_texts(model, tokenizer, texts, max_len)
    occurrences = [o for o in find_word(encoded, pieces) if _is_whole_word(tokenizer, encoded.ids[o.text], o)]
    vectors = [encoded.hidden_BTD[o.text, o.start:o.end].mean(0) for o in occurrences]
    return occurrences, l2_normalize(np.asarray(vectors, np.float32).reshape(len(vectors), encoded.hidden_BTD.shape[-1]))


def _is_whole_word(tokenizer, ids: Sequence[int], occurrence: Occurrence) -> bool:
    """WordPiece: the next piece must not continue the word ("apple" inside "applesauce")."""
    if occurrence.end >= len(ids) or not hasattr(tokenizer, "id_to_token"):
        return True
    return not tokenizer.id_to_token(ids[occurrence.end]).startswith("##")


def pca_2d(x_ND: np.ndarray) -> np.ndarray:
    """[N, 2]: coordinates on the two leading principal components (numpy SVD of the centered data)."""
    return pca_2d_explained(x_ND)[0]


def pca_2d_explained(x_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates [N, 2], [2] fraction of the total variance each of the two components explains)."""
    centered = x_ND - x_ND.mean(0, keepdims=True)
    if len(x_ND) < 2:
        return np.zeros((len(x_ND), 2), np.float32), np.zeros(2)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    coords = centered @ vt[:2].T
    variance = s**2
    explained = variance[:2] / max(variance.sum(), np.finfo(np.float64).tiny)
    return (np.pad(coords, ((0, 0), (0, 2 - coords.shape[1]))).astype(np.float32),
            np.pad(explained, (0, 2 - len(explained))))


def export_projector(directory: str | pathlib.Path, texts: Sequence[str], embeddings: np.ndarray) -> list[pathlib.Path]:
    """TensorBoard projector files (vectors.tsv, metadata.tsv) and pca.png, a 2-D PCA scatter plot."""

    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    vectors = directory / "vectors.tsv"
    vectors.write_text("".join("\t".join(f"{v:.6g}" for v in row) + "\n" for row in embeddings))
    metadata = directory / "metadata.tsv"
    # One column, no header: the projector's format for single-column metadata. Tabs and newlines
    # inside a text would break the TSV.
    metadata.write_text("".join(" ".join(t.split()) + "\n" for t in texts), encoding="utf-8")
    png = directory / "pca.png"
    coords, explained = pca_2d_explained(embeddings)
    scatter_png(png, coords, labels=[f"{i}: {shorten(t)}" for i, t in enumerate(texts)],
                title=f"sentence embeddings, PCA ({len(texts)} texts)",
                axis_labels=(f"PC1: {explained[0]:.0%} of variance", f"PC2: {explained[1]:.0%} of variance"))
    return [vectors, metadata, png]
