"""lmlab params: counts by kind of matrix equal the model's own parameters and published totals."""

from __future__ import annotations

import json

import pytest
from flax import nnx

from lmlab import cli, flops, params
from lmlab import config as config_lib
from lmlab.models import build_model, count_params


def test_gpt3_175b_shape_gives_the_papers_total():
    config = config_lib.load("configs/gpt3_175b.py")
    result = params.count(config, config.tokenizer.vocab_size)
    assert abs(result["total"] - 175e9) / 175e9 < 0.005
    # 12 L d^2 for the matrices of the blocks, as Kaplan et al. count them
    blocks = sum(result["parts"][k] for k in ("attn_q", "attn_k", "attn_v", "attn_o", "mlp_in", "mlp_out"))
    assert abs(blocks - 12 * 96 * 12288**2) / blocks < 1e-3


def test_smollm2_shape_gives_its_count():
    config = config_lib.load("configs/smollm2_135m.py")
    result = params.count(config, 49152)
    assert result["total"] == 134_515_008  # the safetensors of SmolLM2-135M hold exactly this many
    assert result["parts"]["attn_k"] == 30 * 576 * 192 and result["parts"]["head"] == 0


@pytest.mark.parametrize("config_file", ["configs/gpt_shakespeare.py", "configs/bert_shakespeare.py",
                                         "configs/translate_en_fr.py", "configs/bert_classify_shakespeare.py"])
def test_parts_add_up_to_the_built_models_count(config_file):
    config = config_lib.load(config_file, ["--config.model.n_layers=2", "--config.model.n_encoder_layers=2"])
    result = params.count(config, 300)
    model = nnx.eval_shape(lambda: build_model(config.model, 300))  # both layers, counted without kinds
    assert result["total"] == sum(result["parts"].values()) == count_params(model)
    assert result["parts"]["other"] == 0
    full = params.param_paths(config, 300)  # every layer traced: the per-layer counts must agree
    for name, layer in result["layers"].items():
        assert layer["total"] == sum(n for path, n in full.items() if path.startswith(name + "."))
    assert len(result["layers"]) == len({".".join(p.split(".")[:2]) for p in full if params._LAYER.match(p)})


def test_gqa_split_and_flops_by_hand():
    overrides = ["--config.model.d_model=16", "--config.model.n_heads=4", "--config.model.n_kv_heads=2",
                 "--config.model.d_ff=32", "--config.model.n_layers=1", "--config.model.mlp=swiglu",
                 "--config.model.positions=learned", "--config.model.max_len=8", "--config.data.seq_len=8",
                 "--config.model.tie_embeddings=false", "--config.model.norm=rmsnorm"]
    config = config_lib.load("configs/base.py", overrides)
    result = params.count(config, 10)
    head_dim = 4
    assert result["parts"] == {
        "embedding": 10 * 16, "positions": 8 * 16,
        "attn_q": 16 * 4 * head_dim + 4 * head_dim, "attn_k": 16 * 2 * head_dim + 2 * head_dim,
        "attn_v": 16 * 2 * head_dim + 2 * head_dim, "attn_o": 16 * 16 + 16,
        "mlp_in": 2 * (16 * 32 + 32), "mlp_out": 32 * 16 + 16, "norms": 3 * 16, "head": 16 * 10, "other": 0}
    assert result["layers"]["blocks.0"]["attn_q"] == 272 and result["non_embedding"] == result["total"] - 288
    assert result["flops_per_token"]["train"] == flops.flops_per_token(config.model, 10, config.data.seq_len)
    assert result["flops_per_token"]["forward"] * 3 == result["flops_per_token"]["train"]


def test_cli_params_json_run_dir_and_text(tmp_path, capsys):
    assert cli.main(["params", "configs/gpt_shakespeare.py", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 1_321_280  # the main job, docs/benchmarks.md
    run = tmp_path / "run"
    run.mkdir()
    config = config_lib.load("configs/gpt_shakespeare.py")
    (run / "config.json").write_text(json.dumps(config.to_dict()))
    assert cli.main(["params", str(run), "--config.seed=3"]) == 2
    assert "overrides apply to a config file" in capsys.readouterr().err
    assert cli.main(["params", str(run)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2].split() == ["total", "199,216", "1,321,280", "100%"]
    assert out[-1].startswith("FLOPs per token at seq_len 128: forward 2.24 M, training 6.71 M")
    assert params.si(1.0619e12) == "1.06 T" and params.si(12) == "12"
