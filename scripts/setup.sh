#!/usr/bin/env bash
# Installs every Debian package that building and testing compressd needs.
# Idempotent: packages already present are skipped; safe to run repeatedly.
set -euo pipefail

PKGS=(
  build-essential cmake ninja-build pkg-config git ca-certificates curl
  clang-14 libclang-rt-14-dev lld-14 clang-format clang-tidy
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev prometheus-cpp-dev libgtest-dev libgmock-dev googletest
  libbenchmark-dev nlohmann-json3-dev libyaml-cpp-dev libspdlog-dev libfmt-dev
  libxxhash-dev libssl-dev zlib1g-dev
  python3 python3-numpy python3-grpcio python3-grpc-tools python3-jsonschema python3-yaml
  yamllint prometheus chromium openssl
)

# npm ships with Node.js on these machines (NodeSource build); Debian's npm would conflict.
if ! command -v npm >/dev/null 2>&1; then PKGS+=(npm); fi

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PKGS[@]} packages already installed"
  exit 0
fi

echo "setup: installing ${#missing[@]} packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "setup: done"
