"""lmlab.flops: the FLOPs-per-token formula against hand counts, and the peak-FLOP/s table."""

import jax
import pytest
from flax import nnx

from lmlab import config as config_lib
from lmlab import flops
from lmlab.models import build_model


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
