#!/usr/bin/env bash
# GPU validation from the bundle made by scripts/gpu-bundle.sh, on a machine with an
# NVIDIA GPU, its driver and cuBLASLt 13. Stages (default: all, in this order):
#   info   nvidia-smi, library paths
#   tests  kernels_backend_ops_test (every CUDA op vs its CPU reference) and
#          engine_exec_cuda_runner_test (CUDA runner vs CPU runner, per weight format)
#   gemv   kernels_cuda_gemv_bench (W4A16 vs cuBLASLt fp16, % of HBM bandwidth)
#   e2e    compressd bench --device cuda:0: decode tokens/s at 1/16/64 streams on
#          random:llama-3.2-1b (f16, int8, int4) and random:llama-3.1-8b (f16, int4)
# Logs go to $OUT (default /tmp/compressd-gpu); a summary is printed last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/compressd-gpu}"
mkdir -p "$OUT"
W=/tmp/compressd-gpu-bundle
rm -rf "$W" && mkdir -p "$W/shared"
tar -xJf .gpu/bundle.tar.xz -C "$W"
[ -f .gpu/kdocs.tar.xz ] && tar -xJf .gpu/kdocs.tar.xz -C "$W/shared"
lt=$(find /usr/local/cuda/lib64/ /usr/local/cuda/ /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
export LD_LIBRARY_PATH="$W/lib:${lt:+$(dirname "$lt"):}${LD_LIBRARY_PATH:-}"
export COMPRESSD_SHARED_DIR="$W/shared"
stages="${*:-info tests gemv e2e}"
summary="$OUT/summary.txt"
: >"$summary"
has() { [[ " $stages " == *" $1 "* ]]; }
note() { echo "$*" | tee -a "$summary"; }

if has info; then
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv |
    tee "$OUT/gpu.txt"
  note "cuBLASLt: ${lt:-not found}"
  ldd "$W/bin/compressd" | grep -E "not found" && note "MISSING LIBRARIES"
fi

if has tests; then
  for t in kernels_backend_ops_test engine_exec_cuda_runner_test; do
    "$W/bin/$t" --gtest_color=no >"$OUT/$t.log" 2>&1
    rc=$?
    note "$t: rc=$rc $(grep -E '^\[  (PASSED|FAILED|SKIPPED)' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E "FAILED|Failure|worst relative" "$OUT/$t.log" | head -20 | tee -a "$summary"
  done
fi

if has gemv; then
  "$W/bin/kernels_cuda_gemv_bench" --benchmark_counters_tabular=true \
    >"$OUT/gemv.log" 2>&1
  note "gemv bench rc=$?"
  grep -E "BM_" "$OUT/gemv.log" | tee -a "$summary"
fi

if has e2e; then
  bench() {  # model weights kv levels extra...
    local model=$1 weights=$2 kv=$3 levels=$4
    shift 4
    "$W/bin/compressd" bench --device cuda:0 --model "$model" --weights "$weights" --kv-cache "$kv" \
      --prompt-len 128 --gen-len 128 --concurrency "$levels" --context-length 1024 --json "$@" \
      2>>"$OUT/e2e.err" >"$OUT/e2e.last"
    cat "$OUT/e2e.last" >>"$OUT/e2e.jsonl"
    python3 "$OUT/fmt.py" <"$OUT/e2e.last" |
      tee -a "$summary"
  }
  cat >"$OUT/fmt.py" <<'PY'
import json, sys
for line in sys.stdin:
    j = json.loads(line)
    print(f"{j['model']:22s} {j['weights']:6s} kv={j['kv_cache']:5s} c={j['concurrency']:3d} "
          f"decode {j['decode_tokens_per_s']:9.1f} tok/s prefill {j['prefill_tokens_per_s']:9.1f} "
          f"tok/s load {j['load_seconds']:.1f} s weights {j['weight_bytes'] / 1e9:.2f} GB")
PY
  for w in f16 int8 int4; do bench random:llama-3.2-1b "$w" fp16 1,16,64; done
  if [ "${E2E_8B:-1}" = 1 ]; then
    for w in int4 f16; do bench random:llama-3.1-8b "$w" fp16 1,16,64 --kv-cache-memory 8GB; done
  fi
fi
echo "== summary"
cat "$summary"
