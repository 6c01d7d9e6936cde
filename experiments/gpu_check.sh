#!/usr/bin/env bash
# The prepared GPU check of issue 17: at most ~10 minutes on one H100 / H200, run from the repository root.
#
#   bash experiments/gpu_check.sh --download   # here, with pip and a registry: wheels the GPU image lacks -> .whl/
#   bash experiments/gpu_check.sh              # there (no network): installs .whl/, then runs the checks
#
# The checks, each under its own time limit so one hang cannot eat the lease:
#   1. the GPU tests: cudnn and our Pallas (Triton) flash kernels against naive in bf16, outputs and gradients
#      (tests/ops/test_attention.py, marker gpu), then the whole tests/ops file on the GPU backend;
#   2. `lmlab bench attention` fwd+bwd, bf16, causal: naive / cudnn / blockwise / pallas at T = 1k, 4k, 16k
#      (time and compiled peak memory; an impl that runs out of memory is reported as such);
#   3. `lmlab bench train --profile` for configs/gpt2_124m.py (T 1024) and configs/gpt_1b.py (T 2048): tokens/s,
#      MFU and the per-op time table (fusions, matmuls, attention custom calls).
# Everything lands in $OUT (the device tool's folder) or ./gpu_check_out; the last lines print a summary.
set -u
cd "$(dirname "$0")/.."
WHEELS=(ml-collections==1.1.0 tensorboardX==2.6.5 gguf==0.19.0)  # lmlab needs them; the CUDA image has the rest

if [ "${1:-}" = "--download" ]; then
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "${WHEELS[@]}"
  exit
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "gpu_check: installing .whl/ failed"; exit 1; }
fi
export PYTHONPATH=/tmp/site:$PWD LMLAB_CACHE=$OUT/cache
python3 -c "import jax, lmlab; print(jax.__version__, jax.devices())" 2>&1 | tee "$OUT/devices.txt" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee "$OUT/gpu.txt"
git rev-parse HEAD > "$OUT/commit.txt" 2>/dev/null

timeout 150 python3 -m pytest -p no:cacheprovider -q -m gpu tests/ops/test_attention.py 2>&1 | tail -5 | tee "$OUT/tests_gpu.txt"
timeout 120 python3 -m pytest -p no:cacheprovider -q -x tests/ops/test_attention.py 2>&1 | tail -3 | tee "$OUT/tests_ops.txt"

timeout 150 python3 -m lmlab.cli bench attention --impls naive,cudnn,blockwise,pallas --lengths 1024,4096,16384 \
  --batch 1 --heads 16 --head-dim 128 --dtype bfloat16 --causal --repeats 10 > "$OUT/attention.json" 2> "$OUT/attention.log"

for cfg in gpt2_124m gpt_1b; do
  timeout 150 python3 -m lmlab.cli bench train "configs/$cfg.py" --steps 5 --profile "$OUT/profile_$cfg" \
    > "$OUT/train_$cfg.json" 2> "$OUT/train_$cfg.log"
done

echo "== summary =="
cat "$OUT/gpu.txt" "$OUT/tests_gpu.txt" "$OUT/tests_ops.txt"
python3 - "$OUT" <<'EOF'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
for name in ("attention.json", "train_gpt2_124m.json", "train_gpt_1b.json"):
    text = (out / name).read_text().strip() if (out / name).exists() else ""
    try:
        data = json.loads(text)
    except ValueError:
        print(f"{name}: no result (see its .log)")
        continue
    if "profile" in data:
        data["profile"] = {k: data["profile"].get(k) for k in ("op_time_s", "by_kind")}
    print(name, json.dumps(data)[:1500])
EOF
