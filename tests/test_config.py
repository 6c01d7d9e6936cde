import json
import subprocess
import sys

import pytest

from lmlab import config as config_lib

CONFIG = "configs/gpt_shakespeare.py"


def test_load_and_overrides_parse_to_the_existing_types():
    c = config_lib.load(CONFIG, ["--config.train.steps=7", "--config.model.d_model=64",
                                 "--config.train.learning_rate=1e-3", "--config.model.tie_embeddings=false",
                                 "--config.model.positions=learned", "--config.sample.prompts=('A:', 'B:')"])
    assert c.train.steps == 7 and isinstance(c.train.steps, int)
    assert c.model.d_model == 64
    assert c.train.learning_rate == pytest.approx(1e-3)
    assert c.model.tie_embeddings is False
    assert c.model.positions == "learned"
    assert c.sample.prompts == ("A:", "B:")


def test_overrides_do_not_mutate_the_input():
    base = config_lib.load_config_file(CONFIG)
    config_lib.apply_overrides(base, ["train.steps=3"])
    assert base.train.steps != 3


@pytest.mark.parametrize("override, key", [
    ("--config.train.stpes=3", "train.stpes"),
    ("--config.nosection.x=3", "nosection.x"),
    ("--config.train.steps=abc", "train.steps"),
    ("--config.train.steps=-5", "train.steps"),
    ("--config.model.d_model=130", "model.d_model"),
    ("--config.model.n_kv_heads=3", "model.n_kv_heads"),
    ("--config.train.learning_rate=-0.1", "train.learning_rate"),
    ("--config.train.learning_rate=nan", "train.learning_rate"),
    ("--config.model.norm=batchnorm", "model.norm"),
    ("--config.model.tie_embeddings=maybe", "model.tie_embeddings"),
    ("--config.data.seq_len=4096", "data.seq_len"),
    ("--config.model=3", "model"),
])
def test_invalid_values_name_the_key(override, key):
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load(CONFIG, [override])
    message = str(info.value)
    assert f"'{key}'" in message and "\n" not in message


def test_json_round_trip_preserves_values():
    c = config_lib.load(CONFIG)
    again = config_lib.from_json(config_lib.to_json(c))
    assert again.to_dict() == c.to_dict()


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(config_lib.ConfigError, match="not found"):
        config_lib.load(tmp_path / "nope.py")


@pytest.mark.parametrize("override", ["--config.model.d_model=130", "--config.bogus=1",
                                      "--config.train.learning_rate=-1"])
def test_cli_config_error_is_one_line_exit_2(override, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lmlab.cli", "train", CONFIG, override,
                           "--workdir", str(tmp_path / "run")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lmlab: error:"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()  # nothing written for a rejected config


def test_llama_tiny_preset_builds_a_gqa_model_without_biases():
    import jax

    from flax import nnx

    from lmlab.models import build_model

    c = config_lib.load("configs/llama_tiny.py")
    assert (c.model.norm, c.model.mlp, c.model.positions, c.model.use_bias) == ("rmsnorm", "swiglu", "rope", False)
    assert c.model.n_heads // c.model.n_kv_heads == 2
    model = build_model(c.model, 64)
    paths = ["/".join(map(str, path)) for path, _ in jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model)))[0]]
    assert not any("bias" in p for p in paths)
    assert model.blocks[0].attn.init_cache(1, 4)["k"].shape == (1, 4, 2, 32)


def test_run_config_from_before_a_new_key_gets_its_default(tmp_path):
    config = config_lib.load("configs/gpt_shakespeare.py")
    config_lib.save(config, tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["model"]["n_classes"], saved["train"]["init_from"]  # as written by an older lmlab
    (tmp_path / "config.json").write_text(json.dumps(saved))
    loaded = config_lib.load_run_config(tmp_path)
    assert loaded.model.n_classes == 0 and loaded.train.init_from == ""
    assert loaded.to_dict() == config.to_dict()


def test_no_positions_only_for_causal_decoders():
    assert config_lib.load(CONFIG, ["model.positions=none"]).model.positions == "none"
    for other in ("configs/bert_shakespeare.py", "configs/translate_en_fr.py"):
        with pytest.raises(config_lib.ConfigError, match="'model.positions' = none needs model.family gpt"):
            config_lib.load(other, ["model.positions=none"])
