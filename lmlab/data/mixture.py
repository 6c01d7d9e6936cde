"""Mixtures of corpora: `data.mixture = "shakespeare:0.7,python_stdlib:0.3"`.

Each source is a corpus as `data.corpus` takes it (a registered name or a path), optionally
labelled (`code=~/src/**/*.py:0.3`); the label names its token files and its held-out metrics
(`val_bpb/<label>`). Weights are relative (they need not sum to 1) and are the share of training
windows drawn from each source, whatever its size: a small corpus with a large weight is repeated
more often. A weight of 0 makes a source held-out only (evaluated, never trained on).
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np

from lmlab.data.corpora import available_corpora
from lmlab.data.text_files import JSONL_SUFFIXES

_LABEL = re.compile(r"[A-Za-z0-9_.-]+")


def default_label(spec: str) -> str:
    """A registered name as it is; a path by its file or folder name without the data suffix."""
    if spec in available_corpora():
        return spec
    name = pathlib.PurePath(spec.rstrip("/")).name
    for suffix in (*JSONL_SUFFIXES, ".txt"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_.") or "source"


def parse_mixture(text: str) -> dict[str, tuple[str, float]]:
    """{label: (corpus, weight)} of a mixture string; a ValueError naming the part that is wrong."""
    sources: dict[str, tuple[str, float]] = {}
    for part in text.split(","):
        part = part.strip()
        spec, sep, weight_text = part.rpartition(":")
        if not sep or not spec.strip():
            raise ValueError(f"data.mixture: {part!r} is not CORPUS:WEIGHT (e.g. \"shakespeare:0.7,python_stdlib:0.3\")")
        try:
            weight = float(weight_text)
        except ValueError:
            raise ValueError(f"data.mixture: the weight {weight_text!r} of {part!r} is not a number") from None
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"data.mixture: the weight of {part!r} must be a finite number >= 0")
        label, eq, corpus = spec.strip().partition("=")
        label, corpus = (label.strip(), corpus.strip()) if eq else (default_label(label.strip()), label.strip())
        if not _LABEL.fullmatch(label):
            raise ValueError(f"data.mixture: the label {label!r} of {part!r} may hold only letters, digits, _ . -")
        if label in sources:
            raise ValueError(f"data.mixture: two sources are labelled {label!r}; name them as LABEL=CORPUS:WEIGHT")
        sources[label] = (corpus, weight)
    if not sum(weight for _, weight in sources.values()) > 0:
        raise ValueError(f"data.mixture={text!r}: the weights sum to 0; at least one source needs a weight > 0")
    return sources


def mixture_weights(text: str) -> np.ndarray:
    """The sources' weights, normalised to sum to 1, in the mixture's order."""
    weights = np.asarray([weight for _, weight in parse_mixture(text).values()], np.float64)
    return weights / weights.sum()
