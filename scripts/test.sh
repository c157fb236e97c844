#!/usr/bin/env bash
# Installs what the build needs, builds everything, and runs the whole test suite.
# Usage: bash scripts/test.sh            (build dir: build/)
# Env:   BUILD_DIR, JOBS (default: cores), CI=true turns warnings into errors,
#        SOAK_SECONDS (unset: the soak case skips; CI sets 120; scripts/soak.sh runs 1800).
# Stages print their start time and their duration ("== ... took N s").
# The sanitizer builds, fuzzing and the CI soak are added by .ci/run (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"
t0=$(date +%s)
# shellcheck source=scripts/lib/stages.sh
source scripts/lib/stages.sh

stage "install packages"
bash scripts/setup.sh

stage "configure"
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
# The tests run on the CPU build (CI has no GPU: the CUDA cases would skip). The CUDA build
# (cuBLASLt dlopen'ed at run time) is compiled and linked as its own stage below; its GPU
# tests run on a lent GPU with scripts/gpu-bundle.sh + scripts/gpu-validate.sh.
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESSD_WERROR=$werror \
  -DCOMPRESSD_CUDA=OFF

stage "build"
cmake --build "$BUILD_DIR" -j "$JOBS"

# COMPRESSD_SKIP_CUDA_BUILD=1 skips this stage (it recompiles the engine and the kernels).
if [ "${COMPRESSD_SKIP_CUDA_BUILD:-0}" != 1 ] && { [ -x /usr/local/cuda/bin/nvcc ] || command -v nvcc >/dev/null 2>&1; }; then
  stage "build with CUDA (sm_80, sm_90a): compile and link only"
  cmake -S . -B "${BUILD_DIR}-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESSD_WERROR=$werror \
    -DCOMPRESSD_CUDA=ON -DCOMPRESSD_BUILD_BENCHMARKS=OFF
  cmake --build "${BUILD_DIR}-cuda" -j "$JOBS" --target compressd kernels_backend_ops_test \
    engine_exec_cuda_runner_test
fi

stage "test (unit and integration, ctest -LE soak)"
rc=0
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 900 -LE soak || rc=$?

# The process-level fault/security tests and the soak (tests/soak, label `soak`) run after the
# suite and one at a time: the soak offers load above the capacity of an otherwise idle machine
# and measures the server's RSS, so it must not share the cores with the rest of the suite.
stage "soak and fault tests (ctest -L soak, one at a time, SOAK_SECONDS=${SOAK_SECONDS:-unset})"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j 1 --timeout 900 -L soak -V |
  grep -vE "^[0-9]+: (Test command|Working Directory|Environment variable|Test timeout)" || rc=$?

stage_done
echo "== done in $(( $(date +%s) - t0 )) s (exit $rc)"
exit $rc
