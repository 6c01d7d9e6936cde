"""lmlab.sharding (and lmlab.eval.batching, lmlab.distributed): mesh config, logical-axis rules, parameter annotations, the one-device path, and
(in a subprocess with 8 simulated CPU devices, tests/parallel_worker.py) data / FSDP / tensor
parallel training equal to one device, real sharding, checkpoints across meshes, sharded decoding,
data-parallel evaluation of every task family."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh, PartitionSpec as P

from lmlab import config as config_lib
from lmlab import sharding
from lmlab.models import build_model

CONFIG = "configs/gpt_shakespeare.py"
TINY = ["data.seq_len=16", "data.batch_size=4", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
        "model.n_kv_heads=1", "model.d_ff=32", "model.max_len=32", "train.warmup_steps=1", "model.dropout=0.1"]


def mesh_of(data, fsdp, tensor):
    return AbstractMesh((data, fsdp, tensor), sharding.MESH_AXES)


# ------------------------------------------------------------------------------------ mesh config

def test_mesh_section_defaults_and_minus_one_fills_the_rest():
    c = config_lib.load(CONFIG)
    assert (c.mesh.data, c.mesh.fsdp, c.mesh.tensor) == (-1, 1, 1)
    assert config_lib.resolve_mesh(c.mesh, 1) == (1, 1, 1)
    assert config_lib.resolve_mesh(c.mesh, 8) == (8, 1, 1)
    assert config_lib.resolve_mesh({"data": 2, "fsdp": -1, "tensor": 2}, 8) == (2, 2, 2)
    assert config_lib.resolve_mesh(None, 4) == (4, 1, 1)


@pytest.mark.parametrize("mesh, n, words", [
    ({"data": 2, "fsdp": 2, "tensor": 1}, 8, "needs 4 devices, but 8 are available"),
    ({"data": -1, "fsdp": 3, "tensor": 1}, 8, "mesh.data"),
    ({"data": -1, "fsdp": -1, "tensor": 1}, 8, "at most one"),
    ({"data": 0, "fsdp": 1, "tensor": 1}, 1, "mesh.data"),
])
def test_mesh_that_does_not_fit_is_one_line_config_error(mesh, n, words):
    with pytest.raises(config_lib.ConfigError, match=words) as info:
        config_lib.resolve_mesh(mesh, n)
    assert "\n" not in str(info.value)


def test_bad_mesh_values_fail_validation_with_the_key():
    with pytest.raises(config_lib.ConfigError, match="mesh.tensor"):
        config_lib.load(CONFIG, ["--config.mesh.tensor=-3"])


def test_batch_must_split_over_data_and_fsdp():
    c = config_lib.load(CONFIG, ["data.batch_size=6"])
    sharding.check_batch(c, mesh_of(2, 3, 2))
    with pytest.raises(config_lib.ConfigError, match="data.batch_size"):
        sharding.check_batch(c, mesh_of(4, 1, 1))


# ------------------------------------------------------------------------------------------ rules

def test_rules_map_logical_axes_to_mesh_axes():
    mesh = mesh_of(2, 4, 2)
    spec = sharding.logical_to_spec
    assert spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    assert spec(("mlp", "embed"), (128, 64), mesh) == P("tensor", "fsdp")
    assert spec(("vocab", "embed"), (256, 64), mesh) == P("tensor", "fsdp")
    assert spec(("embed", "qkv"), (64, 192), mesh) == P("fsdp", "tensor")
    assert spec(("norm",), (64,), mesh) == P()
    # Activations: the batch takes data and fsdp, so embed (fsdp) is not split again.
    assert spec(("batch", "length", "embed"), (16, 8, 64), mesh) == P(("data", "fsdp"))
    assert spec(("batch", "length", "mlp"), (16, 8, 128), mesh) == P(("data", "fsdp"), None, "tensor")
    # Size-1 axes are left out: on one device everything is replicated.
    assert spec(("embed", "mlp"), (64, 128), mesh_of(1, 1, 1)) == P()


def test_axis_that_does_not_divide_a_dimension_is_skipped():
    mesh = mesh_of(1, 4, 2)
    assert sharding.logical_to_spec(("vocab", "embed"), (65, 32), mesh) == P(None, "fsdp")
    assert sharding.logical_to_spec(("batch",), (6,), mesh_of(2, 4, 1)) == P("data")
    with pytest.raises(KeyError, match="no sharding rule"):
        sharding.logical_to_spec(("nonsense",), (4,), mesh)
    with pytest.raises(ValueError, match="do not match"):
        sharding.logical_to_spec(("embed",), (4, 4), mesh)


@pytest.mark.parametrize("overrides", [
    [],  # the main job: RMSNorm, SwiGLU, RoPE, untied
    ["model.norm=layernorm", "model.mlp=gelu", "model.positions=learned", "model.tie_embeddings=true"],
])
def test_every_gpt_parameter_has_logical_axes_of_its_rank(overrides):
    config = config_lib.load(CONFIG, TINY + overrides)
    model = nnx.eval_shape(lambda: build_model(config.model, 64))
    names = sharding.logical_axes(nnx.state(model, nnx.Param))
    shapes = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    flat_names = dict(jax.tree_util.tree_flatten_with_path(names, is_leaf=lambda x: isinstance(x, tuple))[0])
    flat_shapes = dict(jax.tree_util.tree_flatten_with_path(shapes)[0])
    assert set(flat_names) == set(flat_shapes)
    rules = dict(sharding.RULES)
    for path, axes in flat_names.items():
        assert axes is not None, jax.tree_util.keystr(path)
        assert len(axes) == len(flat_shapes[path].shape)
        assert all(a is None or a in rules for a in axes)
    assert names["blocks"][0]["attn"]["out"]["kernel"] == ("heads", "embed")
    assert names["blocks"][0]["mlp"]["up"]["kernel"] == ("embed", "mlp")


def test_optimizer_moments_mirror_parameter_shardings():
    config = config_lib.load(CONFIG, TINY)
    mesh = jax.make_mesh((1, 1, 1), sharding.MESH_AXES, axis_types=(jax.sharding.AxisType.Auto,) * 3)
    from lmlab.train.state import abstract_state

    _, _, _, state = abstract_state(config, 64, mesh)
    adam = state["opt_state"][1][0]
    assert jax.tree.structure(adam.mu) == jax.tree.structure(state["params"])
    for p, m in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(adam.mu)):
        assert p.sharding == m.sharding and p.shape == m.shape
    assert state["step"].sharding.spec == P() and state["rng"].sharding.spec == P()


# ------------------------------------------------------------------------- the one-device path

def test_activation_constraints_are_inert_without_a_multi_device_mesh():
    x = jnp.ones((4, 3, 8))
    assert sharding.constrain(x, ("batch", None, "mlp")) is x
    with sharding.activate(sharding.make_mesh(None)):  # one device here
        assert sharding.constrain(x, ("batch", None, "mlp")) is x
    assert sharding.shard_batch({"tokens": x}, None)["tokens"] is x


# ----------------------------------------------------------------------- 8 simulated devices

@pytest.fixture(scope="module", autouse=True)
def worker(request, tmp_path_factory):
    """Starts tests/parallel_worker.py (8 simulated devices: XLA_FLAGS must be set before jax
    starts, hence a process of its own) with this module's first test, if any selected test needs
    its report, so it runs while the in-process tests do. The LLVM optimisation level only
    shortens compilation; every comparison is between runs in that one process."""
    if not any("report" in item.fixturenames for item in request.session.items
               if item.module is request.module):
        yield None
        return
    out = tmp_path_factory.mktemp("parallel")
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, str(root / "tests" / "parallel_worker.py"), str(out)], cwd=root,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield proc
    if proc.poll() is None:
        proc.kill()
        proc.communicate()


@pytest.fixture(scope="module")
def report(worker):
    try:
        out, err = worker.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise
    assert worker.returncode == 0, err[-4000:]
    return json.loads(out.strip().splitlines()[-1])


EXPECTED_SPECS = {  # mesh -> parameter -> PartitionSpec (as JSON); dims: see parallel_worker.WATCH
    "8,1,1": {"mlp_up": [], "qkv": [], "embed": [], "norm": []},
    "2,4,1": {"mlp_up": ["fsdp"], "mlp_down": [None, "fsdp"], "attn_out": [None, "fsdp"], "embed": [None, "fsdp"],
              "lm_head": ["fsdp"], "norm": []},
    "2,2,2": {"mlp_up": ["fsdp", "tensor"], "mlp_down": ["tensor", "fsdp"], "qkv": ["fsdp", "tensor"],
              "attn_out": ["tensor", "fsdp"], "embed": ["tensor", "fsdp"], "lm_head": ["fsdp", "tensor"], "norm": []},
    "1,1,8": {"mlp_up": [None, "tensor"], "mlp_down": ["tensor"], "qkv": [None, "tensor"], "attn_out": ["tensor"],
              "embed": ["tensor"], "lm_head": [None, "tensor"], "norm": []},
}


def test_eight_simulated_devices(report):
    assert report["n_devices"] == 8


def test_one_device_mesh_trains_bit_for_bit_like_no_mesh(report):
    """The single-device path through lmlab.sharding (mesh 1x1x1, NamedShardings, jit with
    in/out shardings) computes exactly what the code without a mesh computes."""
    assert report["one_device_bitwise"] is True


@pytest.mark.parametrize("mesh", list(EXPECTED_SPECS))
def test_losses_equal_one_device_and_parameters_are_really_sharded(report, mesh):
    ref, run = report["reference"], report[mesh]
    np.testing.assert_allclose(run["losses"], ref["losses"], rtol=1e-5)
    assert run["max_param_diff"] < 1e-5
    data, fsdp, tensor = map(int, mesh.split(","))
    for name, spec in EXPECTED_SPECS[mesh].items():
        got = run["state"][name]
        assert got["spec"] == spec, (name, got)
        assert got["mu_spec"] == spec, (name, got)  # Adam moments sharded like their parameter
        assert got["n_devices"] == 8
        split = {"fsdp": fsdp, "tensor": tensor}
        expected_shard = [n // split[s] if s else n for n, s in zip(got["shape"], spec + [None] * 2)]
        assert got["shard_shape"] == expected_shard, (name, got)
    # Each device gathers only its own rows of the global batch of 8.
    assert run["batch_rows_per_device"] and set(run["batch_rows_per_device"]) == {8 / (data * fsdp)}


def test_checkpoint_saved_on_8_devices_restores_on_1(report):
    assert report["restore_8_to_1"] == {"equal": True, "n_devices": [1]}


def test_checkpoint_saved_on_1_device_restores_on_4(report):
    restored = report["restore_1_to_4"]
    assert restored["equal"]
    assert restored["state"]["mlp_up"]["spec"] == ["fsdp", "tensor"]
    assert restored["state"]["mlp_up"]["shard_shape"] == [16, 32] and restored["state"]["mlp_up"]["n_devices"] == 4


@pytest.mark.slow
def test_bert_and_encoder_decoder_train_on_a_mesh_like_one_device(tmp_path):
    """Other families on mesh (2, 2, 2) vs one device; and the jitted in-place initialiser."""
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0",
               JAX_PLATFORMS="cpu")
    root = pathlib.Path(__file__).resolve().parent.parent
    proc = subprocess.run([sys.executable, str(root / "tests" / "parallel_worker.py"), str(tmp_path), "--families"],
                          cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    init = report.pop("sharded_init")
    assert init["same_shardings"] and init["max_diff"] < 1e-6  # jitted in-place init == eager init
    for family, losses in report.items():
        np.testing.assert_allclose(losses["2,2,2"], losses["1,1,1"], rtol=1e-5, err_msg=family)
        assert losses["sharded_params_2,2,2"] > 0 and losses["sharded_params_1,1,1"] == 0, family


EVAL_SPECS = {"8,1,1": ["data"], "2,2,2": [["data", "fsdp"]]}  # the batch axes of each mesh, as JSON


@pytest.mark.parametrize("family", ["gpt", "bert", "encdec", "classify"])
def test_evaluation_is_data_parallel_and_equals_one_device(report, family):
    """Each task's evaluator with the same parameters on one device and on meshes (8,1,1) and
    (2,2,2): held-out sets of 14 LM windows / 13 MLM examples / 13 translation pairs / 13
    labelled passages, which no batch of 8 divides, so the last batch carries zero-weight padding
    rows. The metrics (losses, accuracy, token and example counts) equal one device's, and every
    batch reaches the jitted step split over the batch axes: each device holds 8 / (data x fsdp)
    rows, inside the step as well."""
    runs = report["eval"][family]
    ref = runs["1,1,1"]
    assert ref["put"] == [] and ref["inside"] == []  # one device: batches go in as before
    for mesh, spec in EVAL_SPECS.items():
        run = runs[mesh]
        assert run["metrics"].keys() == ref["metrics"].keys()
        for call, metrics in run["metrics"].items():
            expected = ref["metrics"][call]
            assert metrics.keys() == expected.keys()
            for key, value in metrics.items():
                if isinstance(value, int):  # counts (tokens, examples): padding scored nothing
                    assert value == expected[key], (mesh, call, key)
                else:
                    assert value == pytest.approx(expected[key], rel=1e-5), (mesh, call, key)
        data, fsdp, _ = map(int, mesh.split(","))
        assert run["put"], mesh
        for batch in run["put"]:
            assert batch == {"spec": spec, "rows": 8, "rows_per_device": [8 // (data * fsdp)], "n_devices": 8}
        assert run["inside"] and all(s == spec for s in run["inside"]), (mesh, run["inside"])


def test_load_run_and_greedy_decoding_with_sharded_parameters(report):
    sharded, single = report["decode"]["8"], report["decode"]["1"]
    assert sharded["n_devices"] == 8 and sharded["spec"] == ["fsdp", "tensor"]
    assert single["n_devices"] == 1
    assert sharded["tokens"] == single["tokens"]


def test_pallas_attention_runs_per_shard_on_a_mesh(report):
    pallas = report["pallas"]
    assert pallas["max_diff"] < 1e-5  # outputs and dq, dk, dv against naive on one device
    # Forward and backward kernels each inside a manual (shard_map) region, fed batch and head
    # shards: no all-gather of q, k, v or the mask anywhere in the program.
    assert pallas["manual_regions"] >= 1 and pallas["all_gathers"] == 0
    assert pallas["out_spec"] == [["data", "fsdp"], None, "tensor"]


def test_frozen_teacher_is_sharded_like_parameters_and_distills_like_one_device(report):
    """A frozen model (lmlab.train.frozen) on the (2,2,2) mesh: placed by the parameters' logical
    rules (not replicated wholesale), never changed by the step, with the same fingerprint and the
    same distilled losses as on one device."""
    frozen = report["frozen"]
    assert frozen["specs_match_params"] is True
    assert frozen["2,2,2"]["sharded_leaves"] > 0 and frozen["1,1,1"]["sharded_leaves"] == 0
    assert frozen["2,2,2"]["fingerprint"] == frozen["1,1,1"]["fingerprint"]
    assert frozen["2,2,2"]["unchanged"] and frozen["1,1,1"]["unchanged"]
    np.testing.assert_allclose(frozen["2,2,2"]["losses"], frozen["1,1,1"]["losses"], rtol=1e-5)
    np.testing.assert_allclose(frozen["2,2,2"]["kl"], frozen["1,1,1"]["kl"], rtol=1e-4, atol=1e-6)
    assert min(frozen["1,1,1"]["kl"]) > 0  # a different, randomly initialised student


def test_lora_trains_on_a_mesh_like_one_device(report):
    """Adapters sharded by their layer's logical axes (B like the qkv output: tensor), the base
    run frozen and sharded like parameters: the same losses as on one device."""
    lora = report["lora"]
    np.testing.assert_allclose(lora["2,2,2"]["losses"], lora["1,1,1"]["losses"], rtol=1e-5)
    assert lora["1,1,1"]["losses"][-1] < lora["1,1,1"]["losses"][0]
    assert lora["2,2,2"]["lora_b_spec"] == [None, "tensor"] and lora["2,2,2"]["n_trained"] == lora["1,1,1"]["n_trained"]
