#!/usr/bin/env bash
# Tests scripts/fetch-model.sh against tests/scripts/fake_hub.py on loopback: a fresh
# download, an interrupted download that resumes, a re-run that skips verified files,
# and a corrupted file that must be rejected.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

mkdir -p "$work/hub"
python3 - "$work/hub" <<'PY'
import os, sys, json
root = sys.argv[1]
json.dump({"model_type": "llama"}, open(os.path.join(root, "config.json"), "w"))
json.dump({"model": {"type": "BPE"}}, open(os.path.join(root, "tokenizer.json"), "w"))
json.dump({"add_bos_token": True}, open(os.path.join(root, "tokenizer_config.json"), "w"))
open(os.path.join(root, "model.safetensors"), "wb").write(os.urandom(300000))
PY

start_hub() {  # start_hub ARGS... -> sets HF_ENDPOINT
  rm -f "$work/port"
  python3 "$src/tests/scripts/fake_hub.py" "$work/hub" "$work/port" "$@" &
  pids+=($!)
  for _ in $(seq 50); do [ -s "$work/port" ] && break; sleep 0.1; done
  export HF_ENDPOINT="http://127.0.0.1:$(cat "$work/port")"
}

fail() { echo "FAIL: $*"; exit 1; }

# 1. Interrupted first download resumes and verifies.
start_hub --drop-after 100000
out="$work/m1"
"$src/scripts/fetch-model.sh" org/tiny "$out" > "$work/log1" 2>&1 || true
if [ ! -f "$out/model.safetensors" ]; then
  # The first attempt was cut off; a rerun resumes from the .part file.
  [ -f "$out/model.safetensors.part" ] || fail "no partial file after an interrupted download"
  "$src/scripts/fetch-model.sh" org/tiny "$out" > "$work/log2" 2>&1 || { cat "$work/log2"; fail "resume failed"; }
fi
cmp "$out/model.safetensors" "$work/hub/model.safetensors" || fail "resumed file differs"
cmp "$out/config.json" "$work/hub/config.json" || fail "config differs"
echo "ok: interrupted download resumed and verified"

# 2. A re-run skips verified files.
"$src/scripts/fetch-model.sh" org/tiny "$out" > "$work/log3" 2>&1 || fail "rerun failed"
grep -q "model.safetensors: already present, checksum ok" "$work/log3" || fail "rerun did not skip"
echo "ok: rerun skips verified files"

# 3. A corrupted download is rejected.
kill "${pids[@]}" 2>/dev/null || true
start_hub --corrupt model.safetensors
if "$src/scripts/fetch-model.sh" org/tiny "$work/m2" > "$work/log4" 2>&1; then
  fail "a corrupted file was accepted"
fi
grep -q "fails its checksum" "$work/log4" || { cat "$work/log4"; fail "no checksum error message"; }
[ ! -f "$work/m2/model.safetensors" ] || fail "corrupted file was kept"
echo "ok: corrupted download rejected"
echo "3 passed, 0 failed"
