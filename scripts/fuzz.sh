#!/usr/bin/env bash
# libFuzzer driver for tests/fuzz/*_fuzz.cc.
#   scripts/fuzz.sh --list                 target names
#   scripts/fuzz.sh TARGET SECONDS         build if needed, fuzz TARGET for SECONDS
#   scripts/fuzz.sh --all SECONDS          every target in turn (FUZZ_PARALLEL=2: two at a time),
#                                          then one result line per target
#   scripts/fuzz.sh --build                build every target only
# FUZZ_NO_BUILD=1 runs the binaries already built (no ninja step).
# Build dir: FUZZ_BUILD_DIR, default build-fuzz (clang-14, -fsanitize=fuzzer,address,undefined,
# no tests). CI uses build-asan, which scripts/sanitize.sh asan configures with the fuzz targets
# too, so the fuzzers link against objects already built there. Work dir (corpus
# grown across runs, logs): <build dir>/fuzz-work/<target>/. Seeds: tests/fuzz/corpus/<target>/
# (committed) plus real files from ../shared copied into the work corpus at run time.
# Crashes, leaks, timeouts and OOMs land in tests/fuzz/findings/ (gitignored).
# Each run ends with one line: "fuzz-result TARGET execs=N corpus=N cov=N ft=N crashes=N".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BUILD="${FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
SHARED="${COMPRESSD_SHARED_DIR:-$ROOT/../shared}"
FINDINGS="$ROOT/tests/fuzz/findings"
JOBS="${FUZZ_BUILD_JOBS:-2}"

targets() {
  for f in "$ROOT"/tests/fuzz/*_fuzz.cc; do basename "$f" .cc; done
}

configure() {
  if [[ ! -f "$BUILD/build.ninja" ]]; then
    CC=clang-14 CXX=clang++-14 cmake -S "$ROOT" -B "$BUILD" -G Ninja \
      -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCOMPRESSD_FUZZ=ON \
      -DCOMPRESSD_SANITIZE=address,undefined -DCOMPRESSD_BUILD_TESTS=OFF \
      -DCOMPRESSD_BUILD_BENCHMARKS=OFF -DCOMPRESSD_CUDA=OFF >/dev/null
  fi
}

build() {
  configure
  ninja -C "$BUILD" -j"$JOBS" "$@"
}

# Per-target libFuzzer options and real seed files from ../shared.
max_len() {
  case "$1" in
    safetensors_fuzz) echo 65536 ;;
    gguf_fuzz) echo 131072 ;;
    tokenizer_json_fuzz) echo 65536 ;;
    config_fuzz) echo 8192 ;;
    tokenizer_encode_fuzz) echo 4096 ;;
    chat_template_fuzz) echo 8192 ;;
    validation_fuzz) echo 4096 ;;
    recipe_fuzz) echo 4096 ;;
    kv_codec_fuzz) echo 512 ;;
    *) echo 16384 ;;
  esac
}

shared_seeds() {
  local t="$1" dst="$2"
  [[ -d "$SHARED" ]] || return 0
  case "$t" in
    safetensors_fuzz)
      # The real checkpoints are ~1 MB: keep the header and the first data bytes.
      for m in "$SHARED"/models/*/model.safetensors; do
        [[ -f "$m" ]] && head -c "$(max_len "$t")" "$m" >"$dst/shared_$(basename "$(dirname "$m")")"
      done ;;
    gguf_fuzz)
      for g in "$SHARED"/testdata/tokenizers/*.gguf; do
        [[ -f "$g" ]] && head -c "$(max_len "$t")" "$g" >"$dst/shared_$(basename "$g")"
      done ;;
    config_fuzz)
      for c in "$SHARED"/models/*/config.json; do
        [[ -f "$c" ]] && cp "$c" "$dst/shared_$(basename "$(dirname "$c")")_config.json"
      done ;;
    tokenizer_json_fuzz)
      for d in "$SHARED"/models/*/; do
        n="$(basename "$d")"
        [[ -f "$d/tokenizer.json" ]] || continue
        cp "$d/tokenizer.json" "$dst/shared_$n.json"
        if [[ -f "$d/tokenizer_config.json" ]]; then
          { cat "$d/tokenizer.json"; printf '\n#CONFIG#\n'; cat "$d/tokenizer_config.json"; } \
            >"$dst/shared_${n}_with_config"
        fi
      done ;;
    tokenizer_encode_fuzz)
      local i=0
      for f in "$SHARED"/testdata/tokenizers/*.inp; do
        [[ -f "$f" ]] || continue
        # Each .inp holds test strings separated by lines of dashes.
        python3 - "$f" "$dst" "$i" <<'PY'
import sys
src, dst, i = sys.argv[1], sys.argv[2], int(sys.argv[3])
parts = open(src, "rb").read().split(b"\n__ggml_vocab_test__\n")
for j, p in enumerate(parts[:40]):
    for mode in (0, 1):
        open(f"{dst}/shared_inp{i}_{j}_m{mode}", "wb").write(bytes([mode]) + p[:4000])
PY
        i=$((i + 1))
      done ;;
    chat_template_fuzz)
      # The real templates from the golden test (Llama 2/3, Qwen2/3, Mistral, SmolLM2).
      python3 - "$ROOT/tests/engine/model/chat_template_test.cc" "$dst" <<'PY'
import re, sys
src = open(sys.argv[1], encoding="utf-8").read()
for k, (name, body) in enumerate(re.findall(r'\{"(\w+)", R"tmpl\((.*?)\)tmpl"\}', src, re.S)):
    open(f"{sys.argv[2]}/shared_{name}.jinja", "w", encoding="utf-8").write(body)
PY
      ;;
  esac
}

dict_for() {
  local d="$ROOT/tests/fuzz/dict/${1%_fuzz}.dict"
  [[ -f "$d" ]] && echo "-dict=$d"
  return 0
}

run_one() {
  local t="$1" secs="$2"
  local work="$BUILD/fuzz-work/$t"
  mkdir -p "$work/corpus" "$FINDINGS"
  [[ -d "$ROOT/tests/fuzz/corpus/${t%_fuzz}" ]] && cp -n "$ROOT/tests/fuzz/corpus/${t%_fuzz}"/* "$work/corpus/" 2>/dev/null || true
  shared_seeds "$t" "$work/corpus"
  local log="$work/last.log"
  echo "== $t: ${secs}s, max_len $(max_len "$t"), log $log"
  set +e
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}" \
  UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}" \
  COMPRESSD_SHARED_DIR="$SHARED" COMPRESSD_FUZZ_CORPUS_DIR="$ROOT/tests/fuzz/corpus" \
    "$BUILD/tests/fuzz/$t" "$work/corpus" -max_total_time="$secs" -max_len="$(max_len "$t")" \
    -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 -artifact_prefix="$FINDINGS/$t-" \
    $(dict_for "$t") ${FUZZ_EXTRA_ARGS:-} >"$log" 2>&1
  local rc=$?
  set -e
  local execs cov ft corp crashes
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | awk '{print $2}' || true)
  corp=$(find "$work/corpus" -type f | wc -l)
  crashes=$(find "$FINDINGS" -maxdepth 1 -name "$t-*" -type f | wc -l)
  echo "fuzz-result $t secs=$secs rc=$rc execs=${execs:-?} corpus=$corp cov=${cov:-?} ft=${ft:-?} findings=$crashes" |
    tee "$work/result"
  if [[ $rc -ne 0 ]]; then
    grep -E "ERROR|SUMMARY|==[0-9]+==|Test unit written|error in line" "$log" | head -20 || true
  fi
  return $rc
}

case "${1:-}" in
  --list) targets ;;
  --build) build fuzzers ;;
  --all)
    secs="${2:?usage: fuzz.sh --all SECONDS}"
    [[ -n "${FUZZ_NO_BUILD:-}" ]] || build fuzzers
    par="${FUZZ_PARALLEL:-1}"
    status=0
    if [[ "$par" -le 1 ]]; then
      for t in $(targets); do run_one "$t" "$secs" || status=1; done
    else
      for t in $(targets); do
        while [[ $(jobs -rp | wc -l) -ge $par ]]; do wait -n || status=1; done
        run_one "$t" "$secs" &
      done
      while [[ $(jobs -rp | wc -l) -gt 0 ]]; do wait -n || status=1; done
    fi
    echo "== fuzz summary (${secs}s per target, FUZZ_PARALLEL=$par)"
    for t in $(targets); do cat "$BUILD/fuzz-work/$t/result" 2>/dev/null || echo "fuzz-result $t missing"; done
    exit $status ;;
  ""|-h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
  *)
    t="$1"; secs="${2:?usage: fuzz.sh TARGET SECONDS}"
    [[ "$t" == *_fuzz ]] || t="${t}_fuzz"
    [[ -f "$ROOT/tests/fuzz/$t.cc" ]] || { echo "unknown target $t (see --list)" >&2; exit 2; }
    if [[ -z "${FUZZ_NO_BUILD:-}" || ! -x "$BUILD/tests/fuzz/$t" ]]; then build "$t"; fi
    run_one "$t" "$secs" ;;
esac
