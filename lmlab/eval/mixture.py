"""Held-out metrics of a mixture: each source's, and the mixture's as training samples it.

The mixture's val_loss is the weight-averaged per-token loss of its sources (the expected loss of a
training window), and its val_bpb the expected bits over the expected bytes, Σ w·bits/token over
Σ w·bytes/token, so a source with a large held-out split does not outweigh the mixture's weights.
"""

from __future__ import annotations

import math


def combine_source_metrics(per_source: dict[str, dict], weights: dict[str, float]) -> dict:
    """`per_source`: {label: evaluate()'s dict}; `weights`: {label: weight}, summing to 1."""
    total = sum(weights.values())
    loss = sum(weights[s] * m["val_loss"] for s, m in per_source.items()) / total
    # bytes per token of each source, from its loss (nats/token) and bits per byte
    bytes_per_token = {s: m["val_loss"] / math.log(2) / m["val_bpb"] if m["val_bpb"] > 0 else 0.0
                       for s, m in per_source.items()}
    mean_bytes = sum(weights[s] * bytes_per_token[s] for s in per_source) / total
    out = {"val_loss": loss, "val_ppl": math.exp(min(loss, 700.0)),
           "val_bpb": loss / math.log(2) / mean_bytes if mean_bytes > 0 else 0.0,
           "val_tokens": sum(m["val_tokens"] for m in per_source.values())}
    eval_keys = sorted({k for m in per_source.values() for k in m if k.startswith("eval/")})
    out.update({k: sum(weights[s] * m[k] for s, m in per_source.items()) / total for k in eval_keys})
    for source, metrics in per_source.items():
        out.update({f"val_loss/{source}": metrics["val_loss"], f"val_bpb/{source}": metrics["val_bpb"]})
    return out


def mixture_evaluator(evaluators: dict, weights: dict[str, float]):
    """`evaluate(params, full=False, batch_size=0)` of a mixture from its sources' evaluators."""
    def evaluate(params, full: bool = False, batch_size: int = 0) -> dict:
        return combine_source_metrics({label: ev(params, full, batch_size) for label, ev in evaluators.items()}, weights)

    return evaluate
