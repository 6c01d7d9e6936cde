"""`lmlab params`: how many parameters each kind of matrix holds, per layer and in total.

Counts come from the model itself: the family's constructor runs under `nnx.eval_shape` (shapes
only, nothing allocated, so a 175B shape costs nothing) and every parameter is sorted into a kind
by its path. Biases count with their matrix. The fused q/k/v projection is split by heads
(n_heads : n_kv_heads : n_kv_heads), the cross-attention k/v projection in half. Tied embeddings
have no head of their own (the output projection reuses the embedding). FLOPs per token are
lmlab.flops' figures (training = 6 N + attention; forward = a third of it).
"""

from __future__ import annotations

import pathlib
import re
from collections.abc import Sequence

import jax
import ml_collections
from flax import nnx

from lmlab import config as config_lib
from lmlab.models import build_model
from lmlab.tasks import get_task
from lmlab.tokenizers import METADATA_FILE, load_tokenizer

KINDS = ("embedding", "positions", "attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out", "norms",
         "head", "other")
# Stacks of identical layers, by the name of their list in the model ("blocks.0", "decoder.3", ...).
_LAYER = re.compile(r"^(blocks|encoder|decoder)\.(\d+)\.")


def _kind_of(path: str) -> str:
    """The kind of the parameter at `path` ("blocks.0.attn.qkv.kernel"); fused ones are split later."""
    parts = path.split(".")
    if any("norm" in part for part in parts):
        return "norms"
    if parts[0] in ("embed", "type_embed"):
        return "embedding"
    if parts[0] == "pos_embed":
        return "positions"
    if parts[0] in ("lm_head", "mlm_head", "pooler", "classifier"):
        return "head"
    module = parts[-2] if len(parts) >= 2 else ""
    return {"qkv": "qkv", "kv": "kv", "q": "attn_q", "out": "attn_o", "up": "mlp_in", "gate": "mlp_in",
            "down": "mlp_out"}.get(module, "other")


def _split(kind: str, size: int, model_config) -> list[tuple[str, int]]:
    """(kind, count) pairs for one parameter of `size` values; fused projections split by heads."""
    if kind == "qkv":
        q, kv = model_config.n_heads, model_config.n_kv_heads
        unit = size // (q + 2 * kv)
        return [("attn_q", q * unit), ("attn_k", kv * unit), ("attn_v", kv * unit)]
    if kind == "kv":
        return [("attn_k", size // 2), ("attn_v", size // 2)]
    return [(kind, size)]


def param_paths(config, vocab_size: int) -> dict[str, int]:
    """Every parameter of the model `config` builds, by dotted path, with its number of values."""
    model = nnx.eval_shape(lambda: build_model(config.model, vocab_size, seed=0))
    flat = jax.tree_util.tree_flatten_with_path(nnx.state(model, nnx.Param))[0]
    out = {}
    for path, leaf in flat:
        keys = [str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path]
        out[".".join(k for k in keys if k != "value")] = int(leaf.size)
    return out


def load_source(source: str, overrides: Sequence[str] = ()) -> tuple[object, int]:
    """(config, vocabulary size) of a config file (with overrides; vocabulary: tokenizer.vocab_size)
    or of a run directory (vocabulary: its tokenizer's)."""
    path = pathlib.Path(source)
    if path.is_dir():
        if overrides:
            raise config_lib.ConfigError("--config overrides apply to a config file, not to a run directory")
        config = config_lib.load_run_config(path)
        tokenizer_dir = path / "tokenizer"
        if (tokenizer_dir / METADATA_FILE).is_file():
            return config, load_tokenizer(tokenizer_dir).vocab_size
        return config, config.tokenizer.vocab_size
    return (config := config_lib.load(path, overrides)), config.tokenizer.vocab_size


def count(config, vocab_size: int) -> dict:
    """{"total", "parts": {kind: n}, "layers": {layer: {kind: n}}, "flops_per_token", ...}.

    The layers of a stack are built alike, so the model is built with one layer per stack and
    that layer's counts repeated: tracing 96 layers of GPT-3 would take seconds for nothing.
    """
    one_layer = ml_collections.ConfigDict(config.to_dict())
    one_layer.model.n_layers = 1
    one_layer.model.n_encoder_layers = 1
    stack_sizes = {"blocks": config.model.n_layers, "decoder": config.model.n_layers,
                   "encoder": config.model.n_encoder_layers}
    parts, layers = dict.fromkeys(KINDS, 0), {}
    for path, size in param_paths(one_layer, vocab_size).items():
        match = _LAYER.match(path)
        names = [f"{match[1]}.{i}" for i in range(stack_sizes[match[1]])] if match else []
        for kind, n in _split(_kind_of(path), size, config.model):
            parts[kind] += n * max(len(names), 1) if match else n
            for name in names:
                layers.setdefault(name, dict.fromkeys(KINDS, 0))[kind] += n
    total = sum(parts.values())
    train = get_task(config).flops_per_token(vocab_size)  # per token as the task counts them
    return {"total": total, "parts": parts,
            "non_embedding": total - parts["embedding"] - parts["positions"],
            "layers": {name: {"total": sum(kinds.values()), **kinds} for name, kinds in layers.items()},
            "tied_embeddings": bool(config.model.tie_embeddings) and config.model.family == "gpt",
            "vocab_size": vocab_size, "seq_len": config.data.seq_len,
            "flops_per_token": {"forward": train / 3, "train": train}}


def format_table(result: dict) -> list[str]:
    """Kinds down, then one column per stack's layer (the first of each), all layers, share of total."""
    stacks = {}
    for name in result["layers"]:
        stacks.setdefault(name.split(".")[0], []).append(name)
    columns = [(f"{stack} layer (x{len(names)})", result["layers"][names[0]]) for stack, names in stacks.items()]
    header = f"{'kind':<12}" + "".join(f"{title:>24}" for title, _ in columns) + f"{'whole model':>16}{'share':>8}"
    lines = [header]
    for kind in KINDS:
        n = result["parts"][kind]
        if n == 0 and kind in ("positions", "other", "head"):
            continue
        cells = "".join(f"{layer[kind]:>24,}" if layer[kind] else f"{'-':>24}" for _, layer in columns)
        lines.append(f"{kind:<12}{cells}{n:>16,}{n / result['total']:>8.1%}")
    cells = "".join(f"{layer['total']:>24,}" for _, layer in columns)
    lines.append(f"{'total':<12}{cells}{result['total']:>16,}{1:>8.0%}")
    return lines


def si(value: float) -> str:
    """1.062e12 -> "1.06 T": FLOPs and parameter counts in engineering units."""
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.3g}"
