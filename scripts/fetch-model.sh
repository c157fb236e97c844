#!/usr/bin/env bash
# Downloads a small real model (default: HuggingFaceTB/SmolLM2-135M-Instruct, safetensors)
# from the Hugging Face hub into models/<name>/. Resumable (curl -C -) and checksummed:
# large (LFS) files are verified against the sha256 the hub publishes in X-Linked-Etag,
# small files against their git blob sha1 (ETag). Re-running skips verified files.
#
# Usage: scripts/fetch-model.sh [REPO_ID] [DEST_DIR]
# Env:   HF_ENDPOINT (default https://huggingface.co), HF_REVISION (default main),
#        HF_TOKEN (optional bearer token).
set -euo pipefail

REPO="${1:-HuggingFaceTB/SmolLM2-135M-Instruct}"
DEST="${2:-models/$(basename "$REPO")}"
ENDPOINT="${HF_ENDPOINT:-https://huggingface.co}"
REV="${HF_REVISION:-main}"
FILES=(config.json tokenizer.json tokenizer_config.json generation_config.json model.safetensors)

auth=()
[ -n "${HF_TOKEN:-}" ] && auth=(-H "Authorization: Bearer ${HF_TOKEN}")

mkdir -p "$DEST"
echo "fetch-model: $REPO ($REV) from $ENDPOINT -> $DEST"

header() {  # header FILE_HEADERS NAME -> value (case-insensitive, last occurrence)
  grep -i "^$2:" "$1" | tail -n 1 | cut -d: -f2- | tr -d ' \r"' || true
}

for f in "${FILES[@]}"; do
  url="$ENDPOINT/$REPO/resolve/$REV/$f"
  out="$DEST/$f"
  hdr=$(mktemp)
  if ! curl -sS -L -I --fail "${auth[@]}" "$url" -o "$hdr"; then
    rm -f "$hdr"
    if [ "$f" = generation_config.json ]; then continue; fi  # optional
    echo "fetch-model: cannot reach $url" >&2
    exit 1
  fi
  sha256=$(header "$hdr" x-linked-etag)
  etag=$(header "$hdr" etag)
  rm -f "$hdr"
  verify() {
    if [ -n "$sha256" ] && [ ${#sha256} -eq 64 ]; then
      [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$sha256" ]
    elif [ -n "$etag" ] && [ ${#etag} -eq 40 ]; then
      [ "$(git hash-object "$1")" = "$etag" ]
    elif [ -n "$etag" ] && [ ${#etag} -eq 64 ]; then
      [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$etag" ]
    else
      echo "fetch-model: no checksum published for $f; refusing to trust it" >&2
      return 1
    fi
  }
  if [ -f "$out" ] && verify "$out"; then
    echo "  $f: already present, checksum ok"
    continue
  fi
  echo "  $f: downloading"
  # Resume into .part; restart once from scratch if the resumed file fails the checksum.
  for attempt in 1 2; do
    curl -sS -L --fail --retry 5 --retry-delay 2 -C - "${auth[@]}" "$url" -o "$out.part" || {
      echo "fetch-model: download of $f failed (rerun to resume)" >&2
      exit 1
    }
    if verify "$out.part"; then
      mv "$out.part" "$out"
      echo "  $f: checksum ok"
      break
    fi
    if [ $attempt -eq 2 ]; then
      echo "fetch-model: $f fails its checksum after a fresh download" >&2
      rm -f "$out.part"
      exit 1
    fi
    echo "  $f: checksum mismatch; downloading again from scratch"
    rm -f "$out.part"
  done
done
echo "fetch-model: done: $DEST"
