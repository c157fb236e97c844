#!/usr/bin/env bash
# Installs, builds, and runs the main job: a generation from the default model.
# Default model: models/SmolLM2-135M-Instruct (downloaded by scripts/fetch-model.sh when
# the hub is reachable), else ../shared/models/kdocs-7m or stories260K, else
# random:smollm2-135m (random weights: its text is meaningless).
# Usage: bash scripts/run.sh [extra compressd generate options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$(nproc)" --target compressd
if [ ! -d models/SmolLM2-135M-Instruct ]; then
  bash scripts/fetch-model.sh || echo "run: no internet; using a local model instead" >&2
fi
prompt="Once upon a time"
args=()
if [ -d models/SmolLM2-135M-Instruct ]; then
  args=(--chat --prompt "Write a short poem about compression.")
elif [ -d ../shared/models/kdocs-7m ]; then
  prompt="The kernel"
fi
[ ${#args[@]} -eq 0 ] && args=(--prompt "$prompt")
exec ./build/server/compressd generate "${args[@]}" --max-tokens 128 "$@"
