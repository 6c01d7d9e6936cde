"""Packing variable-length sequences into fixed-length rows with segment ids.

Several sequences share a row; `segments` numbers them 1, 2, ... within the row (0 is padding),
so the decoder's attention never crosses from one into another and positions restart in each
(lmlab.models.gpt, segment_ids_BT). A sequence longer than a row is cut to the row length and
counted, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

OPEN_ROWS = 64  # rows still considered for a new sequence (first fit among the newest ones)


@dataclass
class PackedRows:
    tokens: np.ndarray    # [N, L] int32, 0 where padding
    segments: np.ndarray  # [N, L] int32, 1.. per sequence, 0 where padding
    weights: np.ndarray   # [N, L] float32, the weight of each token as a target
    n_cut: int            # sequences longer than L, cut to L


def pack(sequences, row_len: int) -> PackedRows:
    """`sequences`: (ids, weights) pairs of equal-length lists; rows of `row_len` tokens."""
    rows: list[list[tuple[list[int], list[int]]]] = []
    free: list[int] = []
    n_cut = 0
    for ids, weights in sequences:
        if len(ids) > row_len:
            ids, weights, n_cut = ids[:row_len], weights[:row_len], n_cut + 1
        if not ids:
            continue
        first = max(0, len(rows) - OPEN_ROWS)
        slot = next((r for r in range(first, len(rows)) if free[r] >= len(ids)), None)
        if slot is None:
            rows.append([])
            free.append(row_len)
            slot = len(rows) - 1
        rows[slot].append((ids, weights))
        free[slot] -= len(ids)
    tokens = np.zeros((len(rows), row_len), np.int32)
    segments = np.zeros((len(rows), row_len), np.int32)
    weights_out = np.zeros((len(rows), row_len), np.float32)
    for r, members in enumerate(rows):
        at = 0
        for segment, (ids, weights) in enumerate(members, 1):
            tokens[r, at:at + len(ids)] = ids
            segments[r, at:at + len(ids)] = segment
            weights_out[r, at:at + len(ids)] = weights
            at += len(ids)
    return PackedRows(tokens, segments, weights_out, n_cut)


def target_weights(segments_BL, weights_BL):
    """Weights of the targets tokens[:, 1:] predicted from tokens[:, :-1]: a target counts only if
    it is in the same (non-padding) segment as its input, so no sequence predicts the next one."""
    same = (segments_BL[:, 1:] == segments_BL[:, :-1]) & (segments_BL[:, :-1] > 0)
    return weights_BL[:, 1:] * same
