#!/usr/bin/env bash
# Installs what the build needs, builds everything, and runs the whole test suite.
# Usage: bash scripts/test.sh            (build dir: build/)
# Env:   BUILD_DIR, JOBS (default: cores), CI=true turns warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${BUILD_DIR:-build}"
JOBS="${JOBS:-$(nproc)}"
stage() { echo "== $1 ($(date -u +%H:%M:%S))"; }
t0=$(date +%s)

stage "install packages"
bash scripts/setup.sh

stage "configure"
werror=OFF
[ "${CI:-}" = "true" ] && werror=ON
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESSD_WERROR=$werror

stage "build"
cmake --build "$BUILD_DIR" -j "$JOBS"

stage "test"
# CI runs the soak test for 2 minutes (SOAK_SECONDS); locally it skips unless set.
if [ "${CI:-}" = "true" ]; then export SOAK_SECONDS="${SOAK_SECONDS:-120}"; fi
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" --timeout 900

echo "== done in $(( $(date +%s) - t0 )) s"
