"""Runs in its own process with 8 simulated CPU devices (XLA_FLAGS set by tests/test_parallel.py
before jax starts) and prints one JSON report that the test checks:

  * 5 train steps (one jitted chunk) of a tiny GPT on meshes (8,1,1), (2,4,1), (2,2,2), (1,1,8)
    and on one device: losses, final parameters, the shardings of parameters and optimizer
    moments, the shape of each device's shard, and how many batch rows each device gathers;
  * checkpoints saved on 8 devices restored on 1, and saved on 1 restored on 4;
  * lmlab.runs.load_run + greedy generation with parameters sharded over 8 devices vs 1;
  * each task family's evaluator (LM, MLM, translation) with the same parameters on one device
    and on meshes (8,1,1) and (2,2,2): metrics, and the shardings of the batches it runs;
  * Pallas attention under a (2,2,2) mesh against naive attention on one device;
  * a frozen model (a distillation teacher, from the run directory above) loaded onto (2,2,2):
    its parameters' shardings, its fingerprint against one device's, and distilled training
    losses on (2,2,2) against one device.

Usage: python tests/parallel_worker.py OUT_DIR
       python tests/parallel_worker.py OUT_DIR --families   (BERT and encoder-decoder on (2,2,2) vs 1 device)
"""

from __future__ import annotations

import json
import math
import pathlib
import re
import sys

import jax
import numpy as np

from lmlab import config as config_lib
from lmlab import sharding
from lmlab.eval import batching
from lmlab.tasks import get_task
from lmlab.train.checkpoint import Checkpointer
from lmlab.train.optimizer import make_schedule
from lmlab.train.state import abstract_state, init_state
from lmlab.train.step import make_train_chunk

# 60 distinct characters: a char tokenizer with one special token has 3 + 1 + 60 + 256 = 320 ids,
# so the vocabulary splits over tensor=8 too.
TEXT = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ01234567"
VOCAB = 320
STEPS = 5
TINY = ["data.seq_len=16", "data.batch_size=8", "model.n_layers=1", "model.d_model=32", "model.n_heads=4",
        "model.n_kv_heads=2", "model.d_ff=64", "model.max_len=64", "model.dropout=0.1", "train.warmup_steps=2",
        f"train.steps={STEPS}", "train.steps_per_call=5", f"tokenizer.vocab_size={VOCAB}",
        "tokenizer.kind=char"]
MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2), (1, 1, 8)]
# Parameters (and their Adam moments) whose shardings the test checks.
WATCH = {
    "embed": ("params", "embed", "embedding"),
    "qkv": ("params", "blocks", 0, "attn", "qkv", "kernel"),
    "attn_out": ("params", "blocks", 0, "attn", "out", "kernel"),
    "mlp_up": ("params", "blocks", 0, "mlp", "up", "kernel"),
    "mlp_down": ("params", "blocks", 0, "mlp", "down", "kernel"),
    "lm_head": ("params", "lm_head", "kernel"),
    "norm": ("params", "final_norm", "scale"),
}


def get(tree, path):
    for key in path:
        tree = tree[key]
    return tree


def config_for(shape):
    data, fsdp, tensor = shape
    return config_lib.load("configs/gpt_shakespeare.py",
                           TINY + [f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}"])


def spec_text(sharding) -> list:
    return [list(s) if isinstance(s, tuple) else s for s in sharding.spec]


def gathered_token_rows(hlo: str, seq_len: int) -> list[int]:
    """Elements of each gather from the uint16 token array in a compiled (per-device) HLO module,
    in rows of seq_len + 1 tokens."""
    sizes = []
    for dims in re.findall(r"= u16\[([\d,]*)\][^ ]* gather\(", hlo):
        n = math.prod(int(d) for d in dims.split(",") if d)
        sizes.append(n / (seq_len + 1))
    return sizes


def lower(shape, devices, arrays_host):
    """The train chunk on a mesh of this shape (None: no mesh, the code path before
    lmlab.sharding existed), lowered (compiled later, two at a time)."""
    config = config_for(shape or (1, 1, 1))
    mesh = None if shape is None else sharding.make_mesh(config.mesh, devices=devices)
    _, graphdef, tx, state = init_state(config, VOCAB, mesh)
    task = get_task(config)
    arrays = jax.tree.map(jax.numpy.asarray, arrays_host) if mesh is None else sharding.put_replicated(arrays_host, mesh)
    shardings = None if mesh is None else sharding.shardings_of(state)
    lowered = make_train_chunk(graphdef, tx, config, STEPS, make_schedule(config.train), task, mesh=mesh,
                               state_shardings=shardings).lower(state, arrays, {})
    return config, state, arrays, lowered


def train_all(shapes, arrays_host) -> dict:
    """shape -> (config, final state, losses, per-device HLO); XLA compiles in two threads."""
    from concurrent.futures import ThreadPoolExecutor

    devices = jax.devices()
    lowered = {shape: lower(shape, devices[:1] if shape in (None, (1, 1, 1)) else devices, arrays_host)
               for shape in shapes}
    with ThreadPoolExecutor(2) as pool:
        compiled = dict(zip(lowered, pool.map(lambda item: item[3].compile(), lowered.values())))
    results = {}
    for shape, (config, state, arrays, _) in lowered.items():
        state, metrics = compiled[shape](state, arrays, {})
        results[shape] = (config, state, np.asarray(metrics["loss"]), compiled[shape].as_text())
    return results


def describe_state(state) -> dict:
    out = {}
    for name, path in WATCH.items():
        param = get(state, path)
        mu = state["opt_state"][1][0].mu
        out[name] = {"shape": list(param.shape), "spec": spec_text(param.sharding),
                     "shard_shape": list(param.addressable_shards[0].data.shape),
                     "n_devices": len(param.sharding.device_set),
                     "mu_spec": spec_text(get(mu, path[1:]).sharding)}
    return out


def main(out_dir: pathlib.Path) -> dict:
    report: dict = {"n_devices": jax.device_count()}
    devices = jax.devices()
    task = get_task(config_for((1, 1, 1)))
    arrays_host = jax.tree.map(np.asarray, task.synthetic_train_arrays(VOCAB, jax.random.key(7)))

    results = train_all([None, (1, 1, 1)] + MESHES, arrays_host)
    _, ref_state, ref_losses, _ = results[(1, 1, 1)]
    report["reference"] = {"losses": ref_losses.tolist(), "state": describe_state(ref_state)}
    ref_params = jax.device_get(ref_state["params"])
    # One device: the mesh path against no mesh at all, bit for bit (losses and the whole state).
    _, plain_state, plain_losses, _ = results[None]
    report["one_device_bitwise"] = bool(
        np.array_equal(plain_losses, ref_losses)
        and all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(plain_state)),
                                                     jax.tree.leaves(jax.device_get(ref_state)))))

    states = {}
    for shape in MESHES:
        config, state, losses, hlo = results[shape]
        params = jax.device_get(state["params"])
        report[",".join(map(str, shape))] = {
            "losses": losses.tolist(),
            "max_param_diff": max(float(np.max(np.abs(a - b))) for a, b in
                                  zip(jax.tree.leaves(params), jax.tree.leaves(ref_params))),
            "state": describe_state(state),
            "batch_rows_per_device": gathered_token_rows(hlo, config.data.seq_len),
        }
        states[shape] = state

    # Checkpoints: saved on 8 devices (2, 2, 2), restored on 1; saved on 1, restored on 4 (1, 2, 2).
    config = config_for((1, 1, 1))
    saved = states[(2, 2, 2)]
    ckpt = Checkpointer(out_dir / "ckpt_8", keep=1)
    ckpt.save(STEPS, saved, {"step": STEPS})
    ckpt.wait()
    one = sharding.make_mesh(config.mesh, devices=devices[:1])
    _, restored, _ = ckpt.restore_latest(abstract_state(config, VOCAB, one)[3])
    ckpt.close()
    report["restore_8_to_1"] = {
        "equal": all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(restored)),
                                                          jax.tree.leaves(jax.device_get(saved)))),
        "n_devices": sorted({len(x.sharding.device_set) for x in jax.tree.leaves(restored)}),
    }

    ckpt = Checkpointer(out_dir / "ckpt_1", keep=1)
    ckpt.save(STEPS, ref_state, {"step": STEPS})
    ckpt.wait()
    four = sharding.make_mesh({"data": 1, "fsdp": 2, "tensor": 2}, devices=devices[:4])
    _, restored, _ = ckpt.restore_latest(abstract_state(config, VOCAB, four)[3])
    ckpt.close()
    report["restore_1_to_4"] = {
        "equal": all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(jax.device_get(restored)),
                                                          jax.tree.leaves(jax.device_get(ref_state)))),
        "state": describe_state(restored),
    }

    # A run directory from the 8-device state, opened sharded over 8 devices and over 1.
    from lmlab.decode.sampling import generate
    from lmlab.runs import load_run
    from lmlab.tokenizers import train_tokenizer

    run_dir = out_dir / "run"
    run_dir.mkdir()
    run_config = config_for((2, 2, 2))
    config_lib.save(run_config, run_dir)
    tokenizer = train_tokenizer("char", TEXT, vocab_size=0, special_tokens=tuple(run_config.tokenizer.special_tokens),
                                out_dir=run_dir / "tokenizer")
    assert tokenizer.vocab_size == VOCAB, tokenizer.vocab_size
    ckpt = Checkpointer(run_dir / "checkpoints")
    ckpt.save(STEPS, saved, {"step": STEPS})
    ckpt.close()
    prompt = [tokenizer.encode("abcABC012")] * 2
    outputs = {}
    for name, mesh in (("8", None), ("1", one)):  # None: the run's own mesh, (2, 2, 2)
        run = load_run(run_dir, mesh=mesh)
        up = get(run.params, WATCH["mlp_up"][1:])
        outputs[name] = {
            "tokens": np.asarray(generate(run.model, prompt, max_new_tokens=6, key=jax.random.key(0),
                                          temperature=0.0)).tolist(),
            "n_devices": len(up.sharding.device_set), "spec": spec_text(up.sharding),
        }
    report["decode"] = outputs
    report["eval"] = evaluation(out_dir)
    report["pallas"] = pallas_on_mesh()
    report["frozen"] = frozen_on_mesh(run_dir, devices)
    report["lora"] = lora_on_mesh(run_dir, devices)
    return report


def lora_on_mesh(base_dir: pathlib.Path, devices) -> dict:
    """A LoRA chunk (adapters trained, the base run frozen) on (2,2,2) and on one device."""
    from lmlab.train import frozen as frozen_lib

    arrays_host = jax.tree.map(np.asarray, get_task(config_for((1, 1, 1))).synthetic_train_arrays(VOCAB, jax.random.key(5)))
    out = {}
    for shape, devs in (((1, 1, 1), devices[:1]), ((2, 2, 2), devices)):
        config = config_lib.apply_overrides(config_for(shape), [f"train.init_from={base_dir}", "lora.rank=4",
                                                                 "train.learning_rate=0.05"])
        mesh = sharding.make_mesh(config.mesh, devices=devs)
        _, graphdef, tx, state = init_state(config, VOCAB, mesh)
        task = get_task(config)
        frozen = frozen_lib.load_frozen(frozen_lib.run_frozen_sources(task, config), mesh)
        frozen_params = frozen_lib.params_of(frozen)
        chunk = make_train_chunk(graphdef, tx, config, STEPS, make_schedule(config.train), task, mesh=mesh,
                                 state_shardings=sharding.shardings_of(state),
                                 frozen_graphdefs=frozen_lib.graphdefs_of(frozen),
                                 frozen_shardings=sharding.shardings_of(frozen_params))
        state, metrics = chunk(state, sharding.put_replicated(arrays_host, mesh), frozen_params)
        qkv_b = state["params"]["blocks"][0]["attn"]["qkv"]["lora_b"]
        out[",".join(map(str, shape))] = {"losses": np.asarray(metrics["loss"]).tolist(),
                                          "lora_b_spec": spec_text(qkv_b.sharding),
                                          "n_trained": sum(x.size for x in jax.tree.leaves(state["params"]))}
    return out


def frozen_on_mesh(teacher_dir: pathlib.Path, devices) -> dict:
    """A distillation chunk whose teacher enters as a frozen argument, on (2,2,2) and on 1 device."""
    from lmlab.train import frozen as frozen_lib

    arrays_host = jax.tree.map(np.asarray, get_task(config_for((1, 1, 1))).synthetic_train_arrays(VOCAB, jax.random.key(9)))
    out = {"specs_match_params": True}
    for shape, devs in (((1, 1, 1), devices[:1]), ((2, 2, 2), devices)):
        config = config_lib.apply_overrides(config_for(shape), [f"distill.teacher={teacher_dir}", "distill.alpha=0.7",
                                                                 "distill.temperature=2.0"])
        mesh = sharding.make_mesh(config.mesh, devices=devs)
        _, graphdef, tx, state = init_state(config, VOCAB, mesh)
        task = get_task(config)
        frozen = frozen_lib.load_frozen(task.frozen_sources(), mesh)
        frozen_params = frozen_lib.params_of(frozen)
        chunk = make_train_chunk(graphdef, tx, config, STEPS, make_schedule(config.train), task, mesh=mesh,
                                 state_shardings=sharding.shardings_of(state),
                                 frozen_graphdefs=frozen_lib.graphdefs_of(frozen),
                                 frozen_shardings=sharding.shardings_of(frozen_params))
        before = jax.device_get(frozen_params)
        state, metrics = chunk(state, sharding.put_replicated(arrays_host, mesh), frozen_params)
        name = ",".join(map(str, shape))
        out[name] = {"losses": np.asarray(metrics["loss"]).tolist(), "kl": np.asarray(metrics["distill/kl"]).tolist(),
                     "fingerprint": frozen["teacher"].source["fingerprint"],
                     "unchanged": all(np.array_equal(a, b) for a, b in zip(
                         jax.tree.leaves(before), jax.tree.leaves(jax.device_get(frozen_params)))),
                     "sharded_leaves": sum(len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
                                           for x in jax.tree.leaves(frozen_params))}
        specs = jax.tree.map(lambda a, b: a.sharding.spec == b.sharding.spec, frozen_params["teacher"], state["params"])
        out["specs_match_params"] &= all(jax.tree.leaves(specs))
    return out


def pallas_on_mesh() -> dict:
    """impl='pallas' (interpret mode here) under an active (2,2,2) mesh, forward + backward, GQA
    with a per-sequence, per-head mask and ALiBi: the kernels run per device on its sequences
    and heads (a manual region in the program, no all-gather), and the results equal naive
    attention on one device."""
    from lmlab.nn.positions import alibi_slopes
    from lmlab.ops.attention import attention, make_padding_mask

    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rng = np.random.default_rng(0)
    q = rng.normal(size=(8, 21, 4, 16)).astype(np.float32)
    k = rng.normal(size=(8, 21, 2, 16)).astype(np.float32)
    v = rng.normal(size=(8, 21, 2, 16)).astype(np.float32)
    mask = np.asarray(make_padding_mask(np.arange(8) * 2 + 6, 21)) & (rng.random((8, 4, 21, 21)) < 0.8)
    slopes = alibi_slopes(4)

    def out_and_grads(q, k, v, mask, impl):
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, mask=mask, causal=True, impl=impl,
                                                     alibi_slopes=slopes), q, k, v)
        return out, *vjp(out)

    def on_mesh(q, k, v, mask):
        with sharding.activate(mesh):
            return out_and_grads(q, k, v, mask, "pallas")

    with jax.default_matmul_precision("highest"):
        expected = jax.jit(out_and_grads, static_argnums=4)(q, k, v, mask, "naive")
        args = batching.put_batch((q, k, v, np.asarray(mask)), mesh)
        lowered = jax.jit(on_mesh).lower(*args)
        got = lowered.compile()(*args)
    return {
        "max_diff": max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(got, expected)),
        "manual_regions": lowered.as_text().count("sdy.manual_computation"),
        "all_gathers": lowered.compile().as_text().count("all-gather"),
        "out_spec": spec_text(got[0].sharding),
    }


# ------------------------------------------------------------------------------ held-out evaluation

EVAL_MESHES = [(8, 1, 1), (2, 2, 2)]


class BatchWatch:
    """Records, while active, the shardings of the held-out batches the evaluators run: each array
    lmlab.eval.batching.put_batch hands to the jitted step, and (jax.debug.inspect_array_sharding, at
    compile time) the sharding each array has inside that step."""

    def __init__(self):
        self.put, self.inside = [], []

    def __enter__(self):
        self._put, self._shard = batching.put_batch, sharding.shard_batch

        def put_batch(batch, mesh):
            out = self._put(batch, mesh)
            for x in jax.tree.leaves(out):
                if isinstance(x, jax.Array):
                    self.put.append({"spec": spec_text(x.sharding), "rows": x.shape[0],
                                     "rows_per_device": sorted({s.data.shape[0] for s in x.addressable_shards}),
                                     "n_devices": len(x.sharding.device_set)})
            return out

        def shard_batch(batch, mesh):
            out = self._shard(batch, mesh)
            for x in jax.tree.leaves(out):
                jax.debug.inspect_array_sharding(x, callback=lambda s: self.inside.append(spec_text(s)))
            return out

        batching.put_batch, sharding.shard_batch = put_batch, shard_batch
        return self

    def __exit__(self, *exc):
        batching.put_batch, sharding.shard_batch = self._put, self._shard


def eval_data(family: str, config, out_dir: pathlib.Path):
    """Held-out data of each task's kind whose row count (14 windows / 13 examples / 13 pairs) no
    mesh here divides, so the last batch is padded."""
    from lmlab.tasks.base import TaskData

    rng = np.random.default_rng(5)
    if family == "gpt":
        from lmlab.tokenizers import train_tokenizer

        tokenizer = train_tokenizer("char", TEXT, vocab_size=0, special_tokens=tuple(config.tokenizer.special_tokens),
                                    out_dir=out_dir / "eval_tokenizer")
        return TaskData(tokenizer, {}, rng.integers(0, VOCAB, 16 * 13 + 6).astype(np.int32))  # 14 windows
    if family == "bert":
        return TaskData(None, {}, rng.integers(7, 64, 14 * 13).astype(np.int32))  # 13 [CLS] x [SEP] examples
    if family == "classify":  # 13 labelled [CLS] x [SEP] passages of 16 tokens
        examples = np.concatenate([np.full((13, 1), 4), rng.integers(7, 64, (13, 14)), np.full((13, 1), 5)], 1)
        return TaskData(None, {}, {"examples": examples.astype(np.int32),
                                   "labels": rng.integers(0, 4, 13).astype(np.int32)})
    lengths = rng.integers(3, 16, (2, 13))  # 13 (source, target) pairs, right-padded with 0
    src, tgt = (np.where(np.arange(16) < n[:, None], rng.integers(4, 64, (13, 16)), 0).astype(np.int32)
                for n in lengths)
    return TaskData(None, {}, {"dev": {"src": src, "tgt": tgt}})


def evaluation(out_dir: pathlib.Path) -> dict:
    """Each family's evaluator with the same parameters on one device and split over meshes."""
    from flax import nnx

    devices = jax.devices()
    families = {"gpt": ("configs/gpt_shakespeare.py", TINY)}
    families.update({name: (path, extra + ["data.batch_size=8", "model.n_layers=1", "model.n_encoder_layers=1",
                                           "model.d_model=32", "model.n_heads=4", "model.n_kv_heads=2",
                                           "model.d_ff=64", "model.max_len=32"])
                     for name, (path, extra) in {**FAMILIES, **EVAL_ONLY}.items()})
    report = {}
    for family, (path, overrides) in families.items():
        vocab = VOCAB if family == "gpt" else 64
        config = config_lib.load(path, overrides)
        task = get_task(config)
        if family in ("bert", "classify"):
            task.synthetic_train_arrays(vocab, jax.random.key(0))  # sets the [CLS]/[SEP]/[MASK] stand-in ids
        model, graphdef, _, state = init_state(config, vocab)
        host_params = jax.device_get(state["params"])
        evaluator = task.make_evaluator(graphdef, eval_data(family, config, out_dir))
        out = {}
        for shape in [(1, 1, 1)] + EVAL_MESHES:
            mesh = sharding.make_mesh(dict(zip(sharding.MESH_AXES, shape)),
                                      devices=devices[:1] if shape == (1, 1, 1) else devices)
            params = sharding.put(host_params, sharding.param_shardings(nnx.state(model), mesh))
            with BatchWatch() as watch:
                # Translation's full evaluation adds BLEU (decoding, not batches): dev loss only.
                metrics = {"full": evaluator(params, full=family != "encdec")}
                if family == "gpt":  # a batch size no mesh here divides: rounded up to one that splits
                    metrics["bs6"] = evaluator(params, full=True, batch_size=6)
            out[",".join(map(str, shape))] = {"metrics": metrics, "put": watch.put, "inside": watch.inside}
        report[family] = out
    return report


FAMILIES = {
    "bert": ("configs/bert_shakespeare.py", ["data.seq_len=16"]),
    "encdec": ("configs/translate_en_fr.py", ["data.src_len=16", "data.tgt_len=16"]),
}
EVAL_ONLY = {"classify": ("configs/bert_classify_shakespeare.py", ["data.seq_len=16"])}


def families() -> dict:
    """Losses of 3 steps of the other model families on mesh (2, 2, 2) and on one device."""
    report = {}
    for family, (path, extra) in FAMILIES.items():
        small = extra + ["data.batch_size=8", "model.n_layers=1", "model.d_model=32", "model.n_heads=4",
                         "model.n_kv_heads=2", "model.d_ff=64", "model.max_len=32", "train.warmup_steps=1"]
        losses = {}
        for shape, devices in (((1, 1, 1), jax.devices()[:1]), ((2, 2, 2), jax.devices())):
            config = config_lib.load(path, small + [f"mesh.data={shape[0]}", f"mesh.fsdp={shape[1]}",
                                                    f"mesh.tensor={shape[2]}"])
            mesh = sharding.make_mesh(config.mesh, devices=devices)
            _, graphdef, tx, state = init_state(config, 64, mesh)
            task = get_task(config)
            arrays = sharding.put_replicated(task.synthetic_train_arrays(64, jax.random.key(3)), mesh)
            chunk = make_train_chunk(graphdef, tx, config, 3, make_schedule(config.train), task, mesh=mesh,
                                     state_shardings=sharding.shardings_of(state))
            state, metrics = chunk(state, arrays, {})
            losses[",".join(map(str, shape))] = np.asarray(metrics["loss"]).tolist()
            sharded = [len(x.sharding.device_set) > 1 and not x.sharding.is_fully_replicated
                       for x in jax.tree.leaves(state["params"])]
            losses["sharded_params_" + ",".join(map(str, shape))] = int(sum(sharded))
        report[family] = losses
    # The jitted in-place initialiser (the default on GPU/TPU meshes) against the eager one.
    config = config_for((2, 2, 2))
    mesh = sharding.make_mesh(config.mesh)
    jitted = init_state(config, VOCAB, mesh, sharded_init=True)[3]
    eager = init_state(config, VOCAB, mesh, sharded_init=False)[3]
    report["sharded_init"] = {
        "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(jax.device_get(jitted)),
                                                                       jax.tree.leaves(jax.device_get(eager)))),
        "same_shardings": all(a.sharding == b.sharding for a, b in zip(jax.tree.leaves(jitted), jax.tree.leaves(eager))),
    }
    return report


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    print(json.dumps(families() if "--families" in sys.argv else main(out)))
