#!/usr/bin/env bash
# Builds the CUDA binaries (sm_90a by default) and packs them, with the shared libraries
# they need beyond glibc/libstdc++, into .gpu/bundle.tar.xz, plus kdocs-7m from ../shared
# into .gpu/kdocs.tar.xz: what a lent GPU machine (which has the driver, the CUDA runtime
# and cuBLASLt but none of the Debian packages) needs to run scripts/gpu-validate.sh.
# Usage: bash scripts/gpu-bundle.sh [BUILD_DIR]     (env: CUDA_ARCHS, default 90a-real)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build-gpu}"
ARCHS="${CUDA_ARCHS:-90a-real}"
TARGETS="compressd kernels_backend_ops_test engine_exec_cuda_runner_test kernels_cuda_gemv_bench"
stage() { echo "== $1 ($(date -u +%H:%M:%S))"; }

stage "configure $BUILD_DIR (CUDA architectures $ARCHS)"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCOMPRESSD_CUDA=ON \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCHS" -DCOMPRESSD_BUILD_BENCHMARKS=ON >/dev/null
stage "build $TARGETS"
# shellcheck disable=SC2086
cmake --build "$BUILD_DIR" -j "$(nproc)" --target $TARGETS

stage "pack"
stage_dir=$(mktemp -d)
trap 'rm -rf "$stage_dir"' EXIT
mkdir -p "$stage_dir/bin" "$stage_dir/lib" .gpu
bins=("$BUILD_DIR/server/compressd" "$BUILD_DIR/tests/kernels_backend_ops_test"
      "$BUILD_DIR/tests/engine_exec_cuda_runner_test" "$BUILD_DIR/tests/kernels_cuda_gemv_bench")
cp "${bins[@]}" "$stage_dir/bin/"
for b in "${bins[@]}"; do ldd "$b" | awk '/=>/ {print $3}'; done | sort -u |
  grep -v -E '/(libc|libm|libstdc\+\+|libgcc_s|ld-linux.*|libpthread|libdl|librt)\.so' |
  while read -r lib; do cp -L "$lib" "$stage_dir/lib/"; done
strip "$stage_dir"/bin/* "$stage_dir"/lib/* 2>/dev/null || true
tar -C "$stage_dir" -cJf .gpu/bundle.tar.xz bin lib
if [ -d ../shared/models/kdocs-7m ]; then
  tar -C ../shared -cJf .gpu/kdocs.tar.xz models/kdocs-7m/config.json \
    models/kdocs-7m/model.safetensors models/kdocs-7m/tokenizer.json \
    models/kdocs-7m/tokenizer_config.json
fi
ls -la .gpu
echo "carry .gpu and run: bash scripts/gpu-validate.sh [info] [tests] [gemv] [e2e]"
