"""MFU tuning sweep for the H100 bars of issue 4 (45% for configs/gpt2_124m.py, 55% for gpt_1b.py).

Each variant is one `lmlab bench train` in its own process: XLA reads XLA_FLAGS once per process,
and a variant that runs out of memory must not take the others down. Each result is appended to a
JSONL file as soon as it finishes and variants already there are skipped, so a sweep cut short by a
device time limit resumes where it stopped.

    python experiments/mfu_sweep.py [--only NAME ...] [--out FILE] [--timeout S] [--table]

`--table` prints the results file as a Markdown table (best MFU first per config) and runs nothing.
The variants are the usual levers for a single-GPU step: batch size (bigger GEMMs), activation
remat (memory for a bigger batch), attention kernel (cuDNN vs lmlab's Pallas), XLA's GEMM backend
(Triton vs cuBLAS) and steps per jitted call (host gaps between calls).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "experiments" / "mfu_sweep_results.jsonl"
NO_TRITON_GEMM = "--xla_gpu_enable_triton_gemm=false"

# name -> (config, --config overrides, extra XLA flags)
VARIANTS: dict[str, tuple[str, list[str], str]] = {
    "124m": ("configs/gpt2_124m.py", [], ""),
    "124m_b16": ("configs/gpt2_124m.py", ["data.batch_size=16"], ""),
    "124m_b64": ("configs/gpt2_124m.py", ["data.batch_size=64"], ""),
    "124m_b64_dots": ("configs/gpt2_124m.py", ["data.batch_size=64", "model.remat=dots_saveable"], ""),
    "124m_spc4": ("configs/gpt2_124m.py", ["train.steps_per_call=4"], ""),
    "124m_cublas": ("configs/gpt2_124m.py", [], NO_TRITON_GEMM),
    "124m_pallas": ("configs/gpt2_124m.py", ["model.attention_impl=pallas"], ""),
    "1b": ("configs/gpt_1b.py", [], ""),
    "1b_b12": ("configs/gpt_1b.py", ["data.batch_size=12"], ""),
    "1b_b16_dots": ("configs/gpt_1b.py", ["data.batch_size=16", "model.remat=dots_saveable"], ""),
    "1b_cublas": ("configs/gpt_1b.py", [], NO_TRITON_GEMM),
    "1b_pallas": ("configs/gpt_1b.py", ["model.attention_impl=pallas"], ""),
}


def command(config: str, overrides: list[str], steps: int) -> list[str]:
    return [sys.executable, "-m", "lmlab.cli", "bench", "train", config, "--steps", str(steps),
            *(f"--config.{o}" for o in overrides)]


def run_variant(name: str, config: str, overrides: list[str], xla_flags: str, *, steps: int,
                timeout_s: float) -> dict:
    """One bench in a fresh process; failures (out of memory, timeout) become an `error` row."""
    env = dict(os.environ)
    if xla_flags:
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {xla_flags}".strip()
    argv = command(config, overrides, steps)
    row = {"variant": name, "config": config, "overrides": overrides, "xla_flags": xla_flags,
           "date": time.strftime("%Y-%m-%d")}
    try:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {**row, "error": f"timed out after {timeout_s:.0f} s"}
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        return {**row, "error": lines[-1][:300] if lines else f"exit code {proc.returncode}"}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**row, **result}


def done_variants(path: Path) -> set[str]:
    if not path.exists():
        return set()
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["variant"] for r in rows if "error" not in r}


def markdown_table(rows: list[dict]) -> str:
    """Successful rows, best MFU first within each config; failed ones last with their error."""
    def gb(x):
        return f"{x / 1e9:.1f} GB" if x else "-"

    def mfu(r):
        return f"{r['mfu']:.1%}" if r.get("mfu") is not None else "-"

    ok = sorted((r for r in rows if "error" not in r), key=lambda r: (r["config"], -(r.get("mfu") or 0)))
    lines = ["| variant | config | overrides | XLA flags | tokens/s | MFU | step | peak memory |",
             "|---|---|---|---|---|---|---|---|"]
    for r in ok:
        lines.append(f"| {r['variant']} | `{r['config']}` | {' '.join(r['overrides']) or '-'} | "
                     f"{r['xla_flags'] or '-'} | {r['tokens_per_sec']:,.0f} | {mfu(r)} | "
                     f"{r['step_time_s'] * 1e3:.1f} ms | {gb(r.get('memory_peak_bytes'))} |")
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['variant']} | `{r['config']}` | {' '.join(r['overrides']) or '-'} | "
                         f"{r['xla_flags'] or '-'} | failed: {r['error']} | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", choices=sorted(VARIANTS), help="run just these variants")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL results file (appended to)")
    p.add_argument("--steps", type=int, default=5, help="timed calls per bench (median)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per variant")
    p.add_argument("--rerun", action="store_true", help="also run variants already in --out")
    p.add_argument("--table", action="store_true", help="print --out as a Markdown table and exit")
    args = p.parse_args(argv)

    if args.table:
        if not args.out.exists():
            print(f"mfu_sweep: error: no results file {args.out}", file=sys.stderr)
            return 1
        rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
        print(markdown_table(rows))
        return 0

    skip = set() if args.rerun else done_variants(args.out)
    for name in args.only or list(VARIANTS):
        if name in skip:
            print(f"{name}: already in {args.out}, skipped", file=sys.stderr)
            continue
        config, overrides, flags = VARIANTS[name]
        row = run_variant(name, config, overrides, flags, steps=args.steps, timeout_s=args.timeout)
        with open(args.out, "a") as f:
            f.write(json.dumps(row) + "\n")
        status = row.get("error") or f"{row['tokens_per_sec']:,.0f} tokens/s, mfu {row.get('mfu')}"
        print(f"{name}: {status}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
