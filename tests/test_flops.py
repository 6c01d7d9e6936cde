"""lmlab.flops: the FLOPs-per-token formula against hand counts, and the peak-FLOP/s table."""

import jax
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab import flops
from lmlab.models import build_model
from lmlab.tasks import get_task


def model_config(**overrides):
    c = config_lib.load_config_file("configs/base.py").model
    c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.max_len = 2, 32, 4, 2, 64, 64
    c.mlp = "swiglu"
    for key, value in overrides.items():
        setattr(c, key, value)
    return c


def test_flops_per_token_matches_a_hand_count():
    # L=2, d=32, 4 query heads and 2 kv heads of 8, SwiGLU d_ff=64, V=50, T=16.
    qkv = 32 * (4 + 2 * 2) * 8         # 2048: fused q/k/v projection
    out = 32 * 32                      # 1024: attention output projection
    mlp = 3 * 32 * 64                  # 6144: gate, up, down
    head = 32 * 50                     # 1600: output projection (counted even when tied)
    n = 2 * (qkv + out + mlp) + head   # 20032
    assert flops.matmul_params(model_config(), 50) == n == 20032
    attention = 12 * 2 * 16 * 32 // 2  # 6144: 12 L T d, halved for causal
    assert flops.flops_per_token(model_config(), 50, 16) == 6 * n + attention == 126336
    assert flops.flops_per_token(model_config(), 50, 16, causal=False) == 6 * n + 2 * attention
    gelu = model_config(mlp="gelu", n_kv_heads=4)  # 2 MLP matrices, MHA
    assert flops.matmul_params(gelu, 50) == 2 * (32 * 12 * 8 + 32 * 32 + 2 * 32 * 64) + 32 * 50


@pytest.mark.parametrize("overrides", [{}, {"tie_embeddings": False}, {"mlp": "gelu", "positions": "learned"}])
def test_matmul_params_are_the_models_kernels_plus_the_output_projection(overrides):
    m = model_config(**overrides)
    model = nnx.eval_shape(lambda: build_model(m, 50))
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0]
    kernels = sum(leaf.size for path, leaf in leaves if str(path[-1].key) == "kernel")
    tied_head = 50 * m.d_model if m.tie_embeddings else 0  # the embedding table, reused as a matmul
    assert flops.matmul_params(m, 50) == kernels + tied_head


@pytest.mark.parametrize("kind, peak", [
    ("NVIDIA H100 80GB HBM3", 989e12),
    ("NVIDIA H100 PCIe", 756e12),
    ("NVIDIA H200", 989e12),
    ("NVIDIA A100-SXM4-80GB", 312e12),
    ("NVIDIA A100 80GB PCIe", 312e12),
    ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12),
    ("TPU v5", 459e12),
    ("TPU v5p", 459e12),
    ("TPU v6 lite", 918e12),
    ("tpu V6E", 918e12),
])
def test_peak_table_matches_device_kinds(kind, peak):
    assert flops.peak_bf16_flops(kind) == peak


@pytest.mark.parametrize("kind", ["cpu", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB", ""])
def test_unknown_devices_have_no_peak_and_no_mfu(kind):
    assert flops.peak_bf16_flops(kind) is None
    assert flops.mfu(1e6, 1e9, kind) is None


def test_mfu_divides_achieved_by_peak_times_devices():
    # 5e4 tokens/s x 9.89e9 FLOPs/token = 4.945e14 FLOP/s: half an H100's 989e12.
    assert flops.mfu(5e4, 989e7, "NVIDIA H100 80GB HBM3") == pytest.approx(0.5)
    assert flops.mfu(5e4, 989e7, "NVIDIA H100 80GB HBM3", n_devices=2) == pytest.approx(0.25)


def test_exact_gelu_mlp_counts_two_matrices_like_gelu():
    # model.mlp = "gelu_exact" (BERT checkpoints) is the same two matrices as the tanh GELU.
    assert flops.matmul_params(model_config(mlp="gelu_exact"), 50) == flops.matmul_params(model_config(mlp="gelu"), 50)
    assert flops.matmul_params(model_config(mlp="gelu_exact"), 50) == 2 * (2048 + 1024 + 2 * 32 * 64) + 32 * 50


def run_config(path, *overrides):
    return config_lib.load(path, [
        "--config.model.n_layers=2", "--config.model.d_model=32", "--config.model.n_heads=4",
        "--config.model.n_kv_heads=2", "--config.model.d_ff=64", "--config.model.mlp=swiglu",
        "--config.model.max_len=64", *overrides])


def test_training_flops_of_a_gpt_run_are_the_decoder_formula():
    c = run_config("configs/gpt_shakespeare.py", "--config.data.seq_len=16")
    assert get_task(c).flops_per_token(50) == flops.flops_per_token(c.model, 50, 16) == 126336


def test_training_flops_of_a_bert_mlm_run_hand_count():
    # Bidirectional: the full 12 L T d (no causal halving). The MLM head (dense d x d + decoder
    # d x V) runs on max_selected(T, rate) gathered positions per row only: 4 of T = 16 here.
    c = run_config("configs/bert_shakespeare.py", "--config.data.seq_len=16", "--config.data.mlm_rate=0.25")
    layers = 2 * (2048 + 1024 + 3 * 32 * 64)            # 18432: encoder q/k/v, out, SwiGLU
    attention = 12 * 2 * 16 * 32                         # 12288
    head = 6 * (32 * 32 + 32 * 50) * 4 / 16              # 3936 per token
    assert get_task(c).flops_per_token(50) == pytest.approx(6 * layers + attention + head) == 126816
    # Classifier: pooler (d x d) and classifier (d x n_classes) once per row of T tokens, no MLM head.
    c = run_config("configs/bert_classify_shakespeare.py", "--config.data.seq_len=16", "--config.model.n_classes=4")
    assert get_task(c).flops_per_token(50) == pytest.approx(6 * layers + attention + 6 * (32 * 32 + 32 * 4) / 16)


def test_training_flops_of_an_encdec_run_hand_count():
    # Per row: S = 12 source positions through the encoder, T' = tgt_len - 1 = 15 decoder
    # positions; tokens per row = S + T' (TranslationTask.tokens_per_batch).
    c = run_config("configs/translate_en_fr.py", "--config.model.n_encoder_layers=2", "--config.model.n_layers=1",
                   "--config.data.src_len=12", "--config.data.tgt_len=16")
    self_block = 2048 + 1024 + 3 * 32 * 64               # 9216: q/k/v, out, SwiGLU
    encoder = 12 * (6 * 2 * self_block + 12 * 2 * 12 * 32)  # bidirectional self-attention over S
    cross_kv = 12 * 6 * 1 * (32 * 2 * 2 * 8)             # k/v of the encoder output, per decoder layer
    decoder = 15 * (6 * (self_block + 32 * 32 + 32 * 32)  # + cross q and out projections
                    + 6 * 1 * 15 * 32                    # causal self-attention over T'
                    + 12 * 1 * 12 * 32                   # cross-attention over S
                    + 6 * 32 * 50)                       # output projection
    assert encoder + cross_kv + decoder == 2781504
    assert get_task(c).flops_per_token(50) == pytest.approx(2781504 / 27)


@pytest.mark.parametrize("path, overrides, per_layer", [
    # bert: each encoder block is q/k/v, out and SwiGLU (the MLM head dense d x d and the pooler
    # d x d are separate); encdec: 2 encoder blocks, 1 decoder block + cross q, k/v, out.
    ("configs/bert_shakespeare.py", ("--config.data.seq_len=16",), 2 * 9216 + 2 * 32 * 32),
    ("configs/translate_en_fr.py", ("--config.model.n_encoder_layers=2", "--config.model.n_layers=1"),
     3 * 9216 + 32 * 32 + 32 * 2 * 2 * 8 + 32 * 32),
])
def test_hand_counts_above_are_the_models_kernels(path, overrides, per_layer):
    c = run_config(path, *overrides)
    model = nnx.eval_shape(lambda: build_model(c.model, 50))
    leaves = jax.tree_util.tree_flatten_with_path(nnx.to_pure_dict(nnx.state(model, nnx.Param)))[0]
    assert sum(leaf.size for path, leaf in leaves if str(path[-1].key) == "kernel") == per_layer
