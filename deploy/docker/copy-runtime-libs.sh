#!/usr/bin/env bash
# Copies the shared libraries that BINARIES load into ROOT, at their original paths, so a
# slim runtime stage gets exactly what the build stage linked without naming distribution
# packages (Ubuntu 24.04 renamed many of them for 64-bit time_t).
# Skipped: the C runtime and the CUDA libraries, which the runtime base image and the NVIDIA
# container runtime (libcuda) provide.
# Usage: copy-runtime-libs.sh ROOT BINARY...
set -euo pipefail
root=$1
shift
ldd "$@" | awk '/=> \// { print $3 }' | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libstdc++.so*|libgcc_s.so*) ;;
    libcuda.so*|libcudart.so*|libcublas*|libnvidia*|libnccl*) ;;
    *)
      # Resolve the directory (/lib -> /usr/lib on merged-/usr systems) but keep the soname.
      dir=$(readlink -f "$(dirname "$lib")")
      mkdir -p "$root$dir"
      cp -L "$lib" "$root$dir/"
      ;;
  esac
done
