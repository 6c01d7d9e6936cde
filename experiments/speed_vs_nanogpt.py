"""Side by side on one CPU: nanoGPT (PyTorch, eager) and lmlab at nanoGPT's CPU recipe shape.

    pip install -e '.[compare]'                     # PyTorch, for this benchmark only
    git clone <karpathy/nanoGPT> /path/to/nanoGPT   # its model.py and train.py run as they are
    PYTHONPATH=. python experiments/speed_vs_nanogpt.py --nanogpt /path/to/nanoGPT [--rounds 3] [--end-to-end]

The shape is nanoGPT's README recipe for a CPU (configs/nanogpt_shakespeare_char.py): character
tokens, 4 layers, 4 heads, d 128, block 64, batch 12, dropout 0, no biases. Both train on the same
text: the training split of lmlab's Shakespeare corpus, character ids from lmlab's tokenizer.

  * throughput (always): alternating rounds in this one process: nanoGPT's GPT and its AdamW
    (`configure_optimizers`) train on random windows (loss, backward, clip, step: its train.py
    iteration), timed in chunks of 50 iterations; lmlab runs `bench_train` (what `lmlab bench train`
    runs). Each side's figure is the median over rounds of its per-round median; the ratio is
    lmlab / nanoGPT.
  * --end-to-end: nanoGPT's own train.py with the README's CPU flags (2,000 iterations, an
    evaluation of 20 batches per split every 250) on token files written from the same ids, then
    `lmlab train configs/nanogpt_shakespeare_char.py`; wall clock of each whole command, and each
    one's last held-out loss (nats per character, comparable: same characters, same split).

It refuses to measure while other processes use the CPU (PyTorch's threads lose far more than XLA's
to other load): --max-busy sets the allowance in cores.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import pathlib
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from lmlab import config as config_lib
from lmlab.bench import bench_train
from lmlab.data.prepare import prepare

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "nanogpt_shakespeare_char.py"
CHUNK = 50  # iterations per timed chunk, as lmlab's train.steps_per_call in the config


class BusyMachine(RuntimeError):
    pass


def busy_cores(seconds: float = 2.0) -> float:
    """Cores in use over `seconds` by everything on the machine (this process sleeps meanwhile)."""
    def snapshot():
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:9]]
        return sum(ticks), ticks[3] + ticks[4]  # total, idle + iowait
    total0, idle0 = snapshot()
    time.sleep(seconds)
    total1, idle1 = snapshot()
    return (1.0 - (idle1 - idle0) / max(total1 - total0, 1)) * os.cpu_count()


def require_idle(max_busy: float) -> None:
    if not os.path.exists("/proc/stat"):
        print("speed_vs_nanogpt: no /proc/stat here, cannot check that the machine is idle", file=sys.stderr)
        return
    used = busy_cores()
    if used > max_busy:
        raise BusyMachine(f"machine busy: {used:.2f} of {os.cpu_count()} cores in use by other processes "
                          f"(allowed {max_busy}); rerun when it is idle")


def load_nanogpt(path: pathlib.Path):
    """nanoGPT's model.py as a module (it imports only torch and the standard library)."""
    model_py = path / "model.py"
    if not model_py.exists():
        raise FileNotFoundError(f"{model_py} not found: --nanogpt must be a nanoGPT checkout")
    spec = importlib.util.spec_from_file_location("nanogpt_model", model_py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def nanogpt_round(nano, ids: np.ndarray, c, *, iters: int, warmup: int = 10, seed: int = 0) -> float:
    """nanoGPT's train.py iteration at the recipe shape; returns tokens/s (median over chunks)."""
    torch.manual_seed(1337 + seed)
    d, m, t = c.data, c.model, c.train
    vocab = int(ids.max()) + 1
    model = nano.GPT(nano.GPTConfig(block_size=d.seq_len, vocab_size=vocab, n_layer=m.n_layers,
                                    n_head=m.n_heads, n_embd=m.d_model, dropout=0.0, bias=False))
    with contextlib.redirect_stdout(sys.stderr):  # it prints its parameter counts
        opt = model.configure_optimizers(t.weight_decay, t.learning_rate, (t.b1, t.b2), "cpu")
    data = torch.from_numpy(ids.astype(np.int64))

    def step():
        ix = torch.randint(len(data) - d.seq_len - 1, (d.batch_size,))
        x = torch.stack([data[i:i + d.seq_len] for i in ix])
        y = torch.stack([data[i + 1:i + 1 + d.seq_len] for i in ix])
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()  # train.py reads it at every logged iteration (log_interval=1 in the recipe)

    for _ in range(warmup):
        step()
    chunk_s = []
    for _ in range(max(iters // CHUNK, 1)):
        t0 = time.perf_counter()
        for _ in range(CHUNK):
            step()
        chunk_s.append((time.perf_counter() - t0) / CHUNK)
    return d.batch_size * d.seq_len / statistics.median(chunk_s)


def lmlab_round(c, *, calls: int) -> float:
    return bench_train(c, steps=calls, name="nanogpt_shakespeare_char")["tokens_per_sec"]


def throughput(nano, ids, c, *, rounds: int, iters: int, max_busy: float) -> dict:
    nano_tps, lmlab_tps = [], []
    for r in range(rounds):
        require_idle(max_busy)
        nano_tps.append(nanogpt_round(nano, ids, c, iters=iters, seed=r))
        require_idle(max_busy)
        lmlab_tps.append(lmlab_round(c, calls=max(iters // c.train.steps_per_call, 3)))
        print(f"round {r + 1}/{rounds}: nanoGPT {nano_tps[-1]:,.0f} tokens/s, lmlab {lmlab_tps[-1]:,.0f} tokens/s",
              file=sys.stderr)
    nano_med, lmlab_med = statistics.median(nano_tps), statistics.median(lmlab_tps)
    return {"nanogpt_tokens_per_sec": nano_med, "lmlab_tokens_per_sec": lmlab_med, "ratio": lmlab_med / nano_med,
            "nanogpt_ms_per_iter": 1e3 * c.data.batch_size * c.data.seq_len / nano_med,
            "rounds": {"nanogpt": nano_tps, "lmlab": lmlab_tps}}


def write_nanogpt_data(prepared, out: pathlib.Path) -> None:
    """train.bin / val.bin / meta.pkl in the layout nanoGPT's train.py reads (uint16 ids)."""
    out.mkdir(parents=True, exist_ok=True)
    np.asarray(prepared.train_tokens, dtype=np.uint16).tofile(out / "train.bin")
    np.asarray(prepared.val_tokens, dtype=np.uint16).tofile(out / "val.bin")
    with open(out / "meta.pkl", "wb") as f:
        pickle.dump({"vocab_size": prepared.tokenizer.vocab_size}, f)


def _timed(cmd: list[str], cwd: pathlib.Path, log: pathlib.Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as f:
        done = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed (exit {done.returncode}); see {log}")
    return seconds


def end_to_end(nanogpt: pathlib.Path, prepared, c, work: pathlib.Path, max_busy: float) -> dict:
    write_nanogpt_data(prepared, work / "nanogpt_data")
    d, m, t = c.data, c.model, c.train
    nano_cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
                "--eval_iters=20", "--log_interval=1", f"--block_size={d.seq_len}", f"--batch_size={d.batch_size}",
                f"--n_layer={m.n_layers}", f"--n_head={m.n_heads}", f"--n_embd={m.d_model}",
                f"--max_iters={t.steps}", f"--lr_decay_iters={t.steps}", "--dropout=0.0", "--dtype=float32",
                f"--dataset={work / 'nanogpt_data'}", f"--out_dir={work / 'nanogpt_out'}"]
    lmlab_cmd = [sys.executable, "-m", "lmlab.cli", "train", str(CONFIG), "--workdir", str(work / "lmlab_run")]
    require_idle(max_busy)
    nano_s = _timed(nano_cmd, nanogpt, work / "nanogpt.log")
    require_idle(max_busy)
    lmlab_s = _timed(lmlab_cmd, REPO, work / "lmlab.log")
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", (work / "nanogpt.log").read_text())
    lines = [json.loads(x) for x in (work / "lmlab_run" / "metrics.jsonl").read_text().splitlines()]
    lmlab_val = [x for x in lines if "val_loss" in x and x.get("step") == t.steps]
    return {"nanogpt_seconds": nano_s, "lmlab_seconds": lmlab_s, "ratio": nano_s / lmlab_s,
            "nanogpt_val_loss": float(evals[-1][2]) if evals else None,
            "lmlab_val_loss": lmlab_val[0]["val_loss"] if lmlab_val else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nanogpt", required=True, type=pathlib.Path, help="a nanoGPT checkout (model.py, train.py)")
    p.add_argument("--rounds", type=int, default=3, help="alternating throughput rounds per side")
    p.add_argument("--iters", type=int, default=200, help="timed iterations per round and side")
    p.add_argument("--end-to-end", action="store_true", help="also time both whole training commands")
    p.add_argument("--max-busy", type=float, default=0.3, help="cores other processes may use (default 0.3)")
    p.add_argument("--workdir", type=pathlib.Path, default=None, help="where data and runs go (default: a temp dir)")
    args = p.parse_args(argv)
    try:
        nano = load_nanogpt(args.nanogpt.resolve())
        c = config_lib.load(CONFIG)
        with tempfile.TemporaryDirectory() as tmp:
            work = (args.workdir or pathlib.Path(tmp)).resolve()
            prepared = prepare(c, work / "lmlab_data")
            ids = np.asarray(prepared.train_tokens)
            c.tokenizer.vocab_size = prepared.tokenizer.vocab_size  # bench_train reads it (char: from the corpus)
            result = {"machine": f"{os.cpu_count()} cores", "torch": torch.__version__,
                      "torch_threads": torch.get_num_threads(), "vocab_size": prepared.tokenizer.vocab_size,
                      **throughput(nano, ids, c, rounds=args.rounds, iters=args.iters, max_busy=args.max_busy)}
            if args.end_to_end:
                result["end_to_end"] = end_to_end(args.nanogpt.resolve(), prepared, c, work, args.max_busy)
    except (BusyMachine, FileNotFoundError, RuntimeError) as e:
        print(f"speed_vs_nanogpt: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
