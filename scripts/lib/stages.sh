# shellcheck shell=bash
# Stage timing for the CI scripts (sourced by .ci/run, scripts/test.sh, scripts/sanitize.sh).
#   stage "NAME"   ends the previous stage (if any) and starts NAME: prints "== NAME (HH:MM:SS)"
#   stage_done     ends the current stage: prints "== NAME took W s wall, C s CPU"
# CPU is user + sys of the child processes waited for during the stage (the `times` builtin,
# run in this shell: in a pipeline or $(...) it would count a subshell's children). On a
# shared machine wall time depends on the load; CPU time does not, and CPU / cores bounds what
# the stage takes on an idle machine with that many cores.
# STAGE_PREFIX (optional) goes in front of every line.
_stage_name=""
_stage_t0=0
_stage_cpu0=0
_stage_cpu_file="$(mktemp)"
trap 'rm -f "$_stage_cpu_file"' EXIT

# Sets STAGE_CHILD_CPU to the CPU seconds of all children so far. Call it directly, never in
# $(...), which would run `times` in a subshell that has no children yet.
stage_child_cpu() {
  times >"$_stage_cpu_file"
  # Line 2 of `times`: children's user and sys time, "1m2.345s 0m0.678s".
  STAGE_CHILD_CPU=$(awk 'NR == 2 { split($1, u, /[ms]/); split($2, s, /[ms]/)
                                   printf "%d", u[1] * 60 + u[2] + s[1] * 60 + s[2] }' \
                        "$_stage_cpu_file")
}

stage_done() {
  [ -n "$_stage_name" ] || return 0
  STAGE_WALL=$(( $(date +%s) - _stage_t0 ))
  stage_child_cpu
  STAGE_CPU=$(( STAGE_CHILD_CPU - _stage_cpu0 ))
  echo "${STAGE_PREFIX:-}== $_stage_name took ${STAGE_WALL} s wall, ${STAGE_CPU} s CPU"
  _stage_name=""
}

stage() {
  stage_done
  _stage_name="$1"
  _stage_t0=$(date +%s)
  stage_child_cpu
  _stage_cpu0=$STAGE_CHILD_CPU
  echo "${STAGE_PREFIX:-}== $1 ($(date -u +%H:%M:%S))"
}
