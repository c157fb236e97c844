#!/usr/bin/env bash
# Sanitizer builds and test runs.
#   scripts/sanitize.sh asan   build-asan, -DCOMPRESSD_SANITIZE=address,undefined: every unit and
#                              integration test (ctest, all labels; the soak case skips). The
#                              libFuzzer targets are configured in the same build dir
#                              (-DCOMPRESSD_FUZZ=ON) so that `FUZZ_BUILD_DIR=build-asan
#                              scripts/fuzz.sh` reuses its objects instead of a second build.
#   scripts/sanitize.sh tsan   build-tsan, -DCOMPRESSD_SANITIZE=thread: the scheduler, engine and
#                              server tests (ctest -R "$TSAN_REGEX"), only those targets built
# Environment: JOBS (default 2), CTEST_ARGS (extra ctest arguments), SANITIZE_CC/SANITIZE_CXX
# (default clang-14/clang++-14), TSAN_REGEX, SANITIZE_OPT (default "-O1 -gline-tables-only":
# the instrumented code at -O1 with line tables for stack traces; kernels keep their own -O3).
# Prints the wall and CPU time of each stage. SOAK_SECONDS is ignored (unset): the soak measures
# the release server, scripts/soak.sh runs it.
# Debian's gRPC/protobuf/abseil are not TSan-instrumented: tests/soak/tsan.supp suppresses
# reports whose frames are inside those libraries only (see docs/RELIABILITY.md).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-}"
JOBS="${JOBS:-2}"
OPT="${SANITIZE_OPT:--O1 -gline-tables-only}"
unset SOAK_SECONDS
CC_="${SANITIZE_CC:-clang-14}"
CXX_="${SANITIZE_CXX:-clang++-14}"
TSAN_REGEX="${TSAN_REGEX:-^(Engine|Scheduler|Sampler|BlockPool|PrefixCacheChunkedRegressionTest|ServerTest|ExternalClientsTest|TlsTest|Metrics|ServeOptions|FaultTest|SecurityTest)\.}"
# Test executables built for tsan (the ones TSAN_REGEX selects from).
TSAN_TARGETS="${TSAN_TARGETS:-^(engine_engine_test|engine_sched_.*|engine_kv_block_pool_test|engine_prefix_.*|server_.*|soak_.*)$}"

STAGE_PREFIX="[$MODE] "
# shellcheck source=scripts/lib/stages.sh
source "$ROOT/scripts/lib/stages.sh"

case "$MODE" in
  asan) BUILD="$ROOT/build-asan"; SAN="address,undefined"
        EXTRA=(-DCOMPRESSD_FUZZ=ON -DCOMPRESSD_BUILD_TESTS=ON) ;;
  tsan) BUILD="$ROOT/build-tsan"; SAN="thread"; EXTRA=() ;;
  *) echo "usage: $0 asan|tsan" >&2; exit 2 ;;
esac

stage configure
CC="$CC_" CXX="$CXX_" cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$OPT -DNDEBUG" -DCMAKE_C_FLAGS_RELWITHDEBINFO="$OPT -DNDEBUG" \
  -DCOMPRESSD_SANITIZE="$SAN" -DCOMPRESSD_CUDA=OFF -DCOMPRESSD_BUILD_BENCHMARKS=OFF \
  "${EXTRA[@]}" >/dev/null

stage build
if [[ "$MODE" == asan ]]; then
  ninja -C "$BUILD" -j"$JOBS"
else
  # The binaries the process-level tests start, plus the test executables in scope.
  mapfile -t targets < <(ninja -C "$BUILD" -t targets all | sed -n 's/^\([a-z0-9_]*_test\): .*/\1/p' |
    grep -E "$TSAN_TARGETS" | sort -u)
  ninja -C "$BUILD" -j"$JOBS" compressd compressd-loadtest "${targets[@]}"
fi

stage test
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export TSAN_OPTIONS="${TSAN_OPTIONS:-suppressions=$ROOT/tests/soak/tsan.supp:halt_on_error=1:second_deadlock_stack=1}"
# Leaks inside Debian's (uninstrumented) gRPC/protobuf globals are not ours.
export LSAN_OPTIONS="${LSAN_OPTIONS:-suppressions=$ROOT/tests/soak/lsan.supp}"
rc=0
if [[ "$MODE" == asan ]]; then
  (cd "$BUILD" && ctest --output-on-failure -j"$JOBS" --timeout 900 ${CTEST_ARGS:-}) || rc=$?
else
  (cd "$BUILD" && ctest --output-on-failure -j"$JOBS" --timeout 900 -R "$TSAN_REGEX" \
     ${CTEST_ARGS:-}) || rc=$?
fi
stage_done
echo "== [$MODE] ctest exit $rc"
exit $rc
