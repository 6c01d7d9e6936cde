import json
import pathlib
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


def test_init_from_run_gives_the_model_and_tokenizer_sections_unless_set(tmp_path):
    """A fine-tuning config need not restate the base model: keys it leaves at configs/base.py's
    defaults come from the train.init_from run; keys its file or the command line sets stay."""
    source = config_lib.load("configs/gpt_shakespeare.py", ["--config.model.n_layers=3", "--config.model.d_model=96",
                                                            "--config.model.n_heads=3", "--config.model.n_kv_heads=1",
                                                            "--config.tokenizer.vocab_size=999"])
    config_lib.save(source, tmp_path)
    c = config_lib.load("configs/smollm2_sft.py", [f"--config.train.init_from={tmp_path}", "--config.model.dropout=0.2"])
    assert (c.model.n_layers, c.model.d_model, c.model.n_kv_heads, c.model.norm) == (3, 96, 1, "rmsnorm")
    assert c.tokenizer.vocab_size == 999 and c.model.dropout == 0.2  # overridden on the command line
    assert c.task == "sft" and c.data.seq_len == 128  # other sections are the config's own
    # A key the config file itself sets (away from base.py) is kept too.
    kept = config_lib.load("configs/bert_classify_shakespeare.py", [f"--config.train.init_from={tmp_path}"])
    assert kept.model.n_classes == 4 and kept.model.dropout == 0.1 and kept.model.family == "bert"
    assert kept.model.d_model == 96  # ... while the rest comes from the run


@pytest.mark.parametrize("override, suggestion", [
    ("--config.train.step=3", "train.steps"),
    ("--config.trian.steps=3", "train.steps"),
    ("--config.model.n_head=3", "model.n_heads"),
])
def test_misspelled_key_suggests_the_nearest_real_one(override, suggestion):
    with pytest.raises(config_lib.ConfigError, match=f"did you mean '{suggestion}'") as info:
        config_lib.load(CONFIG, [override])
    assert "\n" not in str(info.value)


def test_key_nothing_like_a_real_one_gets_no_suggestion():
    with pytest.raises(config_lib.ConfigError) as info:
        config_lib.load(CONFIG, ["--config.train.zzzzzzzz=1"])
    assert "did you mean" not in str(info.value)


def test_steps_below_warmup_warn(caplog):
    with caplog.at_level("WARNING", logger="lmlab"):
        config_lib.load(CONFIG, ["--config.train.steps=50"])  # the recipe warms up for 200 steps
    assert "train.steps=50 is below train.warmup_steps=200" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="lmlab"):
        config_lib.load(CONFIG, ["--config.train.steps=50", "--config.train.warmup_steps=5"])
    assert "warmup" not in caplog.text


def test_config_outside_the_repo_imports_the_shipped_configs(tmp_path):
    """`lmlab train ~/exp/my.py`: the user's folder has no configs/ package; lmlab's must be found
    (the subprocess imports lmlab, then drops the checkout from sys.path, as an installed lmlab has it)."""
    exp = tmp_path / "exp"
    exp.mkdir()
    (exp / "my.py").write_text("from configs import base\nfrom configs.gpt_shakespeare import get_config as shipped\n\n"
                               "def get_config():\n    c = shipped()\n    c.train.steps = 7\n    return c\n")
    repo = str(pathlib.Path(config_lib.__file__).resolve().parent.parent)
    script = ("import sys\nfrom lmlab import config\n"
              f"sys.path[:] = [p for p in sys.path if p not in ('', {repo!r})]\n"
              f"print(config.load({str(exp / 'my.py')!r}).train.steps)\n")
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7"]


def test_shipped_config_path_works_from_any_directory(tmp_path, monkeypatch):
    """The README's `lmlab train configs/gpt_shakespeare.py`, pasted in another directory."""
    monkeypatch.chdir(tmp_path)
    assert config_lib.load("configs/gpt_shakespeare.py").to_dict() == config_lib.load(
        pathlib.Path(config_lib.__file__).resolve().parent.parent / CONFIG).to_dict()
    (tmp_path / "configs").mkdir()  # a file of the same relative path here is the one meant
    (tmp_path / "configs" / "gpt_shakespeare.py").write_text(
        "from configs import base\n\ndef get_config():\n    c = base.get_config()\n    c.train.steps = 11\n"
        "    c.train.warmup_steps = 1\n    return c\n")
    assert config_lib.load("configs/gpt_shakespeare.py").train.steps == 11
def test_no_positions_only_for_causal_decoders():
    assert config_lib.load(CONFIG, ["model.positions=none"]).model.positions == "none"
    for other in ("configs/bert_shakespeare.py", "configs/translate_en_fr.py"):
        with pytest.raises(config_lib.ConfigError, match="'model.positions' = none needs model.family gpt"):
            config_lib.load(other, ["model.positions=none"])


def test_smollm2_finetune_takes_model_and_tokenizer_from_the_run_and_a_corpus_path(tmp_path):
    source = config_lib.load("configs/smollm2_135m.py", ["--config.tokenizer.kind=bytelevel_bpe"])
    (tmp_path / "smollm2").mkdir()
    config_lib.save(source, tmp_path / "smollm2")
    c = config_lib.load("configs/smollm2_finetune.py", [f"--config.train.init_from={tmp_path / 'smollm2'}",
                                                        "--config.data.corpus=~/my_texts"])
    assert c.model.to_dict() == source.model.to_dict() and c.tokenizer.to_dict() == source.tokenizer.to_dict()
    assert (c.task, c.data.corpus, c.data.seq_len) == ("lm", "~/my_texts", 256)
@pytest.mark.parametrize("override, message", [
    ("quant.group=48", "'quant.group' must be a positive power of two"),
    ("quant.weights=int8", "describes a quantized run directory"),
    ("quant.kv=int4", "'quant.kv' must be one of none, int8"),
])
def test_quant_settings_refused_in_one_line(override, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.load("configs/gpt_shakespeare.py", [f"--config.{override}"])


def test_qat_and_stored_weights_exclude_each_other():
    config = config_lib.apply_overrides(config_lib.load("configs/gpt_shakespeare.py"),
                                        ["quant.qat=int4", "quant.weights=int4"])
    with pytest.raises(config_lib.ConfigError, match="not both"):
        config_lib.validate(config)


def test_norm_position_is_pre_or_post_and_post_is_for_the_gpt():
    assert config_lib.load("configs/gpt_shakespeare.py").model.norm_position == "pre"
    assert config_lib.load("configs/gpt_shakespeare.py", ["--config.model.norm_position=post"]).model.norm_position == "post"
    with pytest.raises(config_lib.ConfigError, match="'model.norm_position' must be one of pre, post; got 'middle'"):
        config_lib.load("configs/gpt_shakespeare.py", ["--config.model.norm_position=middle"])
    with pytest.raises(config_lib.ConfigError, match="norm_position' = post is for model.family gpt; a 'bert' model uses"):
        config_lib.load("configs/bert_shakespeare.py", ["--config.model.norm_position=post"])
