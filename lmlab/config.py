"""Config files, `--config.a.b=value` overrides and validation.

Configs are plain ml_collections Python files with a `get_config()` function. Every problem a user
can make (unknown key, wrong type, inconsistent shapes) raises ConfigError with a one-line message
naming the key; the CLI turns it into exit status 2.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import logging
import math
import pathlib
import re
import sys
from typing import Any, Iterable

import ml_collections

from lmlab.data.mixture import parse_mixture

log = logging.getLogger("lmlab")

class ConfigError(ValueError):
    """A user-facing config problem; the message is one line and names the key."""


def find_config_file(path: str | pathlib.Path) -> pathlib.Path:
    """`path`, or, for a relative path that does not exist here, the same path in lmlab's checkout:
    `lmlab train configs/gpt_shakespeare.py` works from any directory."""
    path = pathlib.Path(path)
    shipped = BASE_CONFIG.parent.parent / path
    if not path.exists() and not path.is_absolute() and shipped.is_file():
        log.info("config %s: not in this directory; using lmlab's %s", path, shipped)
        return shipped
    return path


def load_config_file(path: str | pathlib.Path) -> ml_collections.ConfigDict:
    path = find_config_file(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    if path.suffix != ".py":
        raise ConfigError(f"config file {path} is not a Python file (.py) with a get_config() function")
    # Config files import shared defaults as `configs.base`: make their parent package importable,
    # and lmlab's own configs/ too, so a config in the user's own folder (~/exp/my.py) can build on them.
    roots = [str(path.resolve().parent.parent), str(BASE_CONFIG.parent.parent)]
    added = [root for root in dict.fromkeys(roots) if root not in sys.path]
    sys.path[:0] = added
    try:
        spec = importlib.util.spec_from_file_location(f"_lmlab_config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as e:  # a config file is user code: report, don't dump a traceback
        raise ConfigError(f"cannot load config {path}: {type(e).__name__}: {e}") from e
    finally:
        for root in added:
            sys.path.remove(root)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config() function")
    try:
        config = module.get_config()
    except Exception as e:
        raise ConfigError(f"get_config() in {path} failed: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise ConfigError(f"get_config() in {path} must return an ml_collections.ConfigDict")
    return config


def _parse_value(key: str, text: str, current: Any) -> Any:
    """Parses `text` into the type of the existing value, so `--config.train.steps=3e2` fails loudly."""
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise ConfigError(f"config key '{key}' expects a bool (true/false), got '{text}'")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects an int, got '{text}'") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"config key '{key}' expects a float, got '{text}'") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = tuple(part for part in text.split(",") if part)  # a,b,c shorthand
        if isinstance(value, str):
            value = (value,)
        if not isinstance(value, (tuple, list)):
            raise ConfigError(f"config key '{key}' expects a tuple, got '{text}'")
        return tuple(value)
    if current is None:
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
    raise ConfigError(f"config key '{key}' cannot be set from the command line")


def _did_you_mean(config: ml_collections.ConfigDict, key: str) -> str:
    """'; did you mean 'train.steps'?' for the real key nearest to a misspelled one, else ''."""
    close = difflib.get_close_matches(key, sorted(_leaf_keys(config.to_dict())), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _lookup(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    parts = key.split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
            raise ConfigError(f"unknown config key '{key}' (no section '{'.'.join(parts[: i + 1])}')"
                              + _did_you_mean(config, key))
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown config key '{key}'" + _did_you_mean(config, key))
    if isinstance(node[parts[-1]], ml_collections.ConfigDict):
        raise ConfigError(f"config key '{key}' is a section; set one of its keys instead")
    return node, parts[-1]


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """Applies `a.b=value` strings (the `--config.` prefix already removed, or still there)."""
    config = ml_collections.ConfigDict(config.to_dict())  # never mutate the caller's copy
    for item in overrides:
        item = item.removeprefix("--config.").removeprefix("config.")
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like --config.section.key=value")
        key, text = item.split("=", 1)
        node, leaf = _lookup(config, key)
        node[leaf] = _parse_value(key, text, node[leaf])
    return config


_CHOICES = {
    "tokenizer.kind": ("bpe", "char", "bytebpe", "bytelevel_bpe", "wordpiece"),  # the last two: imported, pretrained only
    "model.family": ("gpt", "bert", "encdec"),
    "model.positions": ("learned", "sinusoidal", "rope", "alibi", "none"),
    "model.norm": ("layernorm", "rmsnorm"),
    "model.norm_position": ("pre", "post"),
    "model.mlp": ("gelu", "gelu_exact", "swiglu"),
    "model.attention_impl": ("auto", "naive", "blockwise", "cudnn", "pallas"),
    "model.dtype": ("float32", "bfloat16"),
    "model.remat": ("none", "full", "dots_saveable"),
    "quant.weights": ("none", "bfloat16", "int8", "int4"),
    "quant.embeddings": ("int8", "float"),
    "quant.kv": ("none", "int8"),
    "quant.qat": ("none", "int4"),
}
LOADERS = ("auto", "device", "host")  # data.loader (task lm): lmlab.data.host_loader.choose_loader
_POSITIVE_INTS = (
    "data.seq_len", "data.batch_size", "tokenizer.vocab_size", "model.n_layers", "model.d_model",
    "model.n_heads", "model.n_kv_heads", "model.d_ff", "model.max_len", "train.steps",
    "data.src_len", "data.tgt_len", "model.n_encoder_layers", "sample.beam_size",
    "train.grad_accum", "train.steps_per_call", "train.log_every", "train.eval_every",
    "train.checkpoint_every", "train.keep_checkpoints", "sample.max_new_tokens",
)
_NON_NEGATIVE = (
    "train.warmup_steps", "train.weight_decay", "train.grad_clip", "train.label_smoothing",
    "train.z_loss", "train.eval_batches", "train.profile_chunks", "model.dropout", "sample.temperature", "sample.top_k",
    "sample.length_penalty",
)
_POSITIVE_FLOATS = ("model.rope_theta", "model.norm_eps", "train.eps", "distill.temperature", "dpo.beta")
# Checked for range below; first they must be numbers.
_NUMBERS = ("train.min_lr_ratio", "train.b1", "train.b2", "sample.top_p", "distill.alpha", "dpo.label_smoothing")


def _get(config, key):
    node, parts = config, key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict):
            raise ConfigError(f"config key '{'.'.join(parts[:i])}' must be a section; got {node!r}")
        if part not in node:
            raise ConfigError(f"config has no key '{key}'; build it from configs/base.py, which has every key")
        node = node[part]
    return node


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def validate(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Checks types, ranges and cross-key constraints; returns the config unchanged."""
    if not isinstance(_get(config, "task"), str):  # which tasks exist, and for which family: lmlab.tasks
        raise ConfigError(f"config key 'task' must be a task name such as 'lm'; got {config.task!r}")
    for key, choices in _CHOICES.items():
        value = _get(config, key)
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(choices)}; got '{value}'")
    for key in _POSITIVE_INTS:
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ConfigError(f"config key '{key}' must be a positive integer; got {value!r}")
    for key in _NON_NEGATIVE:
        value = _get(config, key)
        if not _is_number(value) or value < 0:
            raise ConfigError(f"config key '{key}' must be a finite number >= 0; got {value!r}")
    for key in _POSITIVE_FLOATS:
        value = _get(config, key)
        if not _is_number(value) or value <= 0:
            raise ConfigError(f"config key '{key}' must be a finite number > 0; got {value!r}")
    for key in _NUMBERS:
        if not _is_number(_get(config, key)):
            raise ConfigError(f"config key '{key}' must be a finite number; got {_get(config, key)!r}")
    lr = _get(config, "train.learning_rate")
    if not _is_number(lr) or lr <= 0:
        raise ConfigError(f"config key 'train.learning_rate' must be a positive number; got {lr!r}")
    m = config.model
    if m.d_model % m.n_heads:
        raise ConfigError(f"config key 'model.d_model' ({m.d_model}) must be divisible by model.n_heads ({m.n_heads})")
    if m.n_heads % m.n_kv_heads:
        raise ConfigError(f"config key 'model.n_kv_heads' ({m.n_kv_heads}) must divide model.n_heads ({m.n_heads})")
    if m.positions == "none" and m.family != "gpt":  # only causal masking tells a decoder the order
        raise ConfigError(f"config key 'model.positions' = none needs model.family gpt (a causal decoder); "
                          f"a '{m.family}' encoder without positions cannot tell word order")
    if m.positions == "rope" and (m.d_model // m.n_heads) % 2:
        raise ConfigError("config key 'model.positions' = rope needs an even head dimension (d_model / n_heads)")
    if m.family != "encdec" and config.data.seq_len > m.max_len:  # encdec: data.src_len / tgt_len instead
        raise ConfigError(f"config key 'data.seq_len' ({config.data.seq_len}) exceeds model.max_len ({m.max_len})")
    if m.family == "encdec" and max(config.data.src_len, config.data.tgt_len) > m.max_len:
        raise ConfigError(f"config keys 'data.src_len' / 'data.tgt_len' exceed model.max_len ({m.max_len})")
    if m.norm_position == "post" and m.family != "gpt":  # BERT has model.prenorm; encdec is pre-norm only
        raise ConfigError(f"config key 'model.norm_position' = post is for model.family gpt; "
                          f"a '{m.family}' model {'uses model.prenorm' if m.family == 'bert' else 'is pre-norm only'}")
    if not 0.0 <= m.dropout < 1.0:
        raise ConfigError(f"config key 'model.dropout' must be in [0, 1); got {m.dropout}")
    if not 0.0 <= config.train.label_smoothing < 1.0:
        raise ConfigError(f"config key 'train.label_smoothing' must be in [0, 1); got {config.train.label_smoothing}")
    if not 0.0 <= config.train.min_lr_ratio <= 1.0:
        raise ConfigError(f"config key 'train.min_lr_ratio' must be in [0, 1]; got {config.train.min_lr_ratio}")
    _validate_lora(config)
    _validate_data(config.data, config.task)
    _validate_quant(config.quant)
    if not 0.0 <= config.dpo.label_smoothing < 0.5:
        raise ConfigError(f"config key 'dpo.label_smoothing' must be in [0, 0.5); got {config.dpo.label_smoothing}")
    if (config.task == "reward") != bool(m.reward_head):
        raise ConfigError(f"config key 'model.reward_head' ({m.reward_head}) adds the scalar head of task=reward: it "
                          f"must be true for task=reward and false otherwise (task={config.task})")
    _validate_distill(config)
    if not 0.0 < config.sample.top_p <= 1.0:
        raise ConfigError(f"config key 'sample.top_p' must be in (0, 1]; got {config.sample.top_p}")
    if m.family == "bert":
        _validate_bert(config)
    for key in ("train.b1", "train.b2"):
        if not 0.0 <= _get(config, key) < 1.0:
            raise ConfigError(f"config key '{key}' must be in [0, 1); got {_get(config, key)}")
    if "mesh" in config:  # run directories from before the mesh section have none: defaults apply
        if not isinstance(config.mesh, ml_collections.ConfigDict):
            raise ConfigError(f"config key 'mesh' must be a section; got {config.mesh!r}")
        _mesh_sizes(config.mesh)
    return config


MESH_DEFAULTS = {"data": -1, "fsdp": 1, "tensor": 1}
MESH_KEYS = tuple(MESH_DEFAULTS)


def _mesh_sizes(mesh) -> dict[str, int]:
    sizes = {key: default if mesh is None else mesh.get(key, default) for key, default in MESH_DEFAULTS.items()}
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1):
            raise ConfigError(f"config key 'mesh.{key}' must be a positive integer or -1; got {value!r}")
    if sum(value == -1 for value in sizes.values()) > 1:
        raise ConfigError("at most one of mesh.data, mesh.fsdp, mesh.tensor may be -1")
    return sizes


def resolve_mesh(mesh, n_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) for `n_devices`: a -1 takes what the others leave; the product must
    equal the device count. `mesh` is the config's mesh section (None: all devices on data)."""
    sizes = _mesh_sizes(mesh)
    fixed = math.prod(value for value in sizes.values() if value != -1)
    for key, value in sizes.items():
        if value == -1:
            if n_devices % fixed:
                raise ConfigError(f"config key 'mesh.{key}' = -1 cannot fill {n_devices} devices: the other mesh "
                                  f"axes multiply to {fixed}, which does not divide {n_devices}")
            sizes[key] = n_devices // fixed
    if math.prod(sizes.values()) != n_devices:
        shown = " x ".join(f"{k}={v}" for k, v in sizes.items())
        raise ConfigError(f"config section 'mesh' ({shown}) needs {math.prod(sizes.values())} devices, "
                          f"but {n_devices} are available; set one axis to -1 or change the sizes")
    return tuple(sizes[key] for key in MESH_KEYS)


def _validate_data(d, task: str) -> None:
    """The corpus keys of lmlab.data (absent from run configs older than them: their defaults apply)."""
    if d.get("mixture", ""):
        if task != "lm":
            raise ConfigError(f"config key 'data.mixture' applies to task lm (language modelling); task is {task}")
        try:
            parse_mixture(d.mixture)
        except ValueError as e:
            raise ConfigError(f"config key {e}") from None
    loader = d.get("loader", "auto")
    if loader not in LOADERS:
        raise ConfigError(f"config key 'data.loader' must be one of {', '.join(LOADERS)}; got {loader!r}")
    if loader == "host" and task != "lm":
        raise ConfigError(f"config key 'data.loader=host' applies to task lm (language modelling); task is {task}")
    min_chars, min_printable = d.get("min_chars", 0), d.get("min_printable", 0.0)
    if isinstance(min_chars, bool) or not isinstance(min_chars, int) or min_chars < 0:
        raise ConfigError(f"config key 'data.min_chars' must be an integer >= 0; got {min_chars!r}")
    if not _is_number(min_printable) or not 0.0 <= min_printable <= 1.0:
        raise ConfigError(f"config key 'data.min_printable' must be a share in [0, 1]; got {min_printable!r}")


def _validate_distill(config) -> None:
    d = config.distill
    if not 0.0 <= d.alpha <= 1.0:
        raise ConfigError(f"config key 'distill.alpha' must be in [0, 1]; got {d.alpha}")
    if not isinstance(d.teacher, str):
        raise ConfigError(f"config key 'distill.teacher' must be a run directory (a string); got {d.teacher!r}")
    cache = d.get("cache", "")
    if not isinstance(cache, str):
        raise ConfigError(f"config key 'distill.cache' must be a directory (a string); got {cache!r}")
    if cache and d.teacher:
        raise ConfigError("config keys 'distill.teacher' and 'distill.cache': distil from the teacher run (online) "
                          "or from its cached top-k (offline), not both; set one of them empty")
    if cache and (config.task != "lm" or config.data.get("mixture", "")):
        raise ConfigError(f"config key 'distill.cache' applies to task lm on one corpus (windows of one token "
                          f"stream); this run has task={config.task}"
                          + (f", data.mixture={config.data.mixture}" if config.data.get("mixture", "") else ""))


def _validate_lora(config) -> None:
    settings = config.lora
    if isinstance(settings.rank, bool) or not isinstance(settings.rank, int) or settings.rank < 0:
        raise ConfigError(f"config key 'lora.rank' must be an integer >= 0; got {settings.rank!r}")
    if not settings.rank:
        return
    if not _is_number(settings.alpha) or settings.alpha <= 0:
        raise ConfigError(f"config key 'lora.alpha' must be a finite number > 0; got {settings.alpha!r}")
    if not _is_number(settings.dropout) or not 0.0 <= settings.dropout < 1.0:
        raise ConfigError(f"config key 'lora.dropout' must be in [0, 1); got {settings.dropout!r}")
    try:
        re.compile(settings.targets)
    except (re.error, TypeError) as e:
        raise ConfigError(f"config key 'lora.targets' must be a regular expression; {settings.targets!r}: {e}") from None
    if not config.train.init_from:
        raise ConfigError("config key 'lora.rank' > 0 adapts a trained model: set train.init_from to the base run")


def _validate_quant(quant) -> None:
    group = quant.group
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or group & (group - 1):
        raise ConfigError(f"config key 'quant.group' must be a positive power of two (32, 64, 128, ...); got {group!r}")
    if not isinstance(quant.asymmetric, bool):
        raise ConfigError(f"config key 'quant.asymmetric' must be true or false; got {quant.asymmetric!r}")
    if quant.qat != "none" and quant.weights != "none":
        raise ConfigError("config keys 'quant.qat' and 'quant.weights': a run either trains with fake quantization "
                          "(qat) or holds quantized weights (weights, from `lmlab quantize`), not both")


# The task each family trained before the `task` key existed (old run directories).
_FAMILY_TASKS = {"gpt": "lm", "bert": "mlm", "encdec": "translate"}


def infer_task(config) -> str:
    """The task a config without a `task` key meant: its family's, a BERT with a class head classifying."""
    model = config["model"]
    if model.get("family") == "bert" and model.get("n_classes", 0):
        return "classify"
    return _FAMILY_TASKS.get(model.get("family"), "lm")


def _validate_bert(config) -> None:
    m, d = config.model, config.data
    for key in ("model.type_vocab_size", "model.n_classes"):
        value = _get(config, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"config key '{key}' must be an integer >= 0; got {value!r}")
    for key in ("data.mlm_rate", "data.classify_val_fraction"):
        if not _is_number(_get(config, key)):
            raise ConfigError(f"config key '{key}' must be a finite number; got {_get(config, key)!r}")
    if not 0.0 < d.mlm_rate < 1.0:
        raise ConfigError(f"config key 'data.mlm_rate' must be in (0, 1); got {d.mlm_rate}")
    if d.seq_len < 3:
        raise ConfigError(f"config key 'data.seq_len' must be >= 3 for bert ([CLS] text [SEP]); got {d.seq_len}")
    if (config.task == "classify") != (m.n_classes > 0):
        raise ConfigError(f"config key 'model.n_classes' ({m.n_classes}) builds a classification head: it must be "
                          f"> 0 for task=classify and 0 otherwise (task={config.task})")
    if m.n_classes:
        if len(d.classify_docs) != m.n_classes:
            raise ConfigError(f"config key 'data.classify_docs' names {len(d.classify_docs)} documents, "
                              f"model.n_classes is {m.n_classes}; they must match")
        if not 0.0 < d.classify_val_fraction < 1.0:
            raise ConfigError("config key 'data.classify_val_fraction' must be in (0, 1); "
                              f"got {d.classify_val_fraction}")


def load(path: str | pathlib.Path, overrides: Iterable[str] = ()) -> ml_collections.ConfigDict:
    """The whole user path: file, then overrides, then the init_from run's model, then validation."""
    config = load_config_file(path)
    _check_complete(config, path)
    overrides = list(overrides)
    config = inherit_from_init(apply_overrides(config, overrides), config, overrides)
    config = validate(config)
    if config.quant.weights != "none":  # integer weights have no gradient; only run directories hold them
        raise ConfigError(f"config key 'quant.weights' ({config.quant.weights}) describes a quantized run directory "
                          "(written by `lmlab quantize` from a trained run): a config trains float weights; "
                          "for quantization-aware training set quant.qat=int4")
    _warn_short_run(config.train)
    return config


# Sections a fine-tuning run takes from its train.init_from run: the parameters' shapes and ids.
INHERITED_SECTIONS = ("model", "tokenizer")


def inherit_from_init(config, file_config, overrides: Iterable[str]) -> ml_collections.ConfigDict:
    """With train.init_from, the model and tokenizer sections come from that run, except the keys
    this config sets: those its file changes from configs/base.py and those overridden on the
    command line. A fine-tuning config need not restate the base model's shape."""
    source = pathlib.Path(config.train.init_from) if config.train.init_from else None
    if source is None or not (source / "config.json").is_file() or not BASE_CONFIG.is_file():
        return config  # no init_from, or not a run: the trainer reports that
    base = load_config_file(BASE_CONFIG)
    given = {item.removeprefix("--config.").removeprefix("config.").split("=", 1)[0] for item in overrides}
    inherited = load_run_config(source)
    if inherited.quant.weights != "none":  # its dense layers hold no float kernels to start from
        raise ConfigError(f"config key 'train.init_from' names a quantized run ({source}, quant.weights="
                          f"{inherited.quant.weights}); start from the float run it was quantized from")
    config = ml_collections.ConfigDict(config.to_dict())
    for section in INHERITED_SECTIONS:
        for key, value in inherited[section].items():
            if f"{section}.{key}" in given or file_config[section].get(key) != base[section].get(key):
                continue
            config[section][key] = value
    return config
def _warn_short_run(t) -> None:
    """A run shorter than its warmup (`--config.train.steps=50` on a recipe with warmup 200) is
    all warmup: the learning rate peaks at the last step and never decays (train.optimizer)."""
    if t.steps < t.warmup_steps:
        log.warning("train.steps=%d is below train.warmup_steps=%d: the whole run is warmup (the learning rate "
                    "reaches its peak at the last step and never decays); lower train.warmup_steps too",
                    t.steps, t.warmup_steps)


def flatten(d: dict, sep: str = ".", prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: the leaves of nested dicts by their joined keys."""
    out = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        out.update(flatten(value, sep, name + sep) if isinstance(value, dict) else {name: value})
    return out


def _leaf_keys(d: dict) -> set[str]:
    return set(flatten(d))


def _check_complete(config: ml_collections.ConfigDict, path) -> None:
    """A config file must set every key of configs/base.py (the code reads them all)."""
    if not BASE_CONFIG.is_file() or pathlib.Path(path).resolve() == BASE_CONFIG:
        return
    missing = sorted(_leaf_keys(load_config_file(BASE_CONFIG).to_dict()) - _leaf_keys(config.to_dict()))
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise ConfigError(f"config {path} has no key '{missing[0]}'{more}; start from configs/base.py's "
                          "get_config(), which has every key")


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True)


def from_json(text: str) -> ml_collections.ConfigDict:
    return _from_data(json.loads(text))


def _from_data(data: dict) -> ml_collections.ConfigDict:
    def tuples(value):
        if isinstance(value, list):
            return tuple(tuples(v) for v in value)
        if isinstance(value, dict):
            return {k: tuples(v) for k, v in value.items()}
        return value

    return ml_collections.ConfigDict(tuples(data))


def save(config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> None:
    path = pathlib.Path(run_dir) / "config.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(to_json(config) + "\n")
    tmp.replace(path)


# The defaults every run config starts from; keys added after a run was created take them.
BASE_CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "base.py"


def _with_defaults(saved: dict, defaults: dict) -> dict:
    out = dict(defaults)
    for key, value in saved.items():
        out[key] = (_with_defaults(value, defaults[key]) if isinstance(value, dict) and isinstance(defaults.get(key), dict)
                    else value)
    return out


def load_run_config(run_dir: str | pathlib.Path) -> ml_collections.ConfigDict:
    """A run's saved config; keys introduced since it was written get their (behaviour-preserving) defaults.

    A directory without config.json is a wrong argument (ConfigError); a config.json that cannot
    be read as a valid config is damaged data (ValueError naming the file: exit status 1)."""
    path = pathlib.Path(run_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not an lmlab run directory (no config.json)")
    try:
        saved = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(saved, dict):
        raise ValueError(f"{path} is not an lmlab config: expected a JSON object, got {type(saved).__name__}")
    if isinstance(saved.get("model"), dict) and "task" not in saved:
        saved["task"] = infer_task(saved)
    base = load_config_file(BASE_CONFIG).to_dict() if BASE_CONFIG.is_file() else None
    try:
        config = _from_data(saved)
        if base is not None:
            config = ml_collections.ConfigDict(_with_defaults(config.to_dict(), base))
        return validate(config)
    except ConfigError as e:
        raise ValueError(f"{path}: {e}") from None
