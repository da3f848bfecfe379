#!/usr/bin/env bash
# The soak of issue 6: mixed load with client churn for FLTPORT_SOAK_SECONDS (default 600, at most
# 840: the run stays under 15 minutes), then RSS, fds and threads of the filter process and of
# fltmgrd compared between the start (after the warm-up) and the end, and every message accounted
# for (tests/soak/soak_test.cpp says what runs). Prints "[ measured ]" lines; exit status 0 when it held.
#
#   scripts/soak.sh [seconds]
#
# Environment:
#   FLTPORT_SOAK_SECONDS=N      the duration when no argument is given (default 600)
#   FLTPORT_SOAK_PRESET=NAME    the preset to build and run (default dev; release, asan, tsan work too)
#   FLTPORT_SOAK_BUILD_DIR=D    build in D instead of build/<preset>
#   FLTPORT_SOAK_SEED=N         another random sequence (default 6)
#   FLTPORT_SOAK_SCANNER=0      leave out the fltmgrd + scanner half (it also skips itself where
#                               fanotify permission events are not permitted: it needs root)
# scripts/test.sh runs this after the presets when FLTPORT_SOAK=1; every CI build runs the same test
# for 20 s as the ctest test soak.smoke.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${FLTPORT_SOAK_SECONDS:-600}}
[[ ${seconds} =~ ^[0-9]+$ ]] || { echo "usage: $0 [seconds]" >&2; exit 2; }
preset=${FLTPORT_SOAK_PRESET:-dev}
build=${FLTPORT_SOAK_BUILD_DIR:-build/${preset}}

echo "=== soak: preset ${preset}, ${seconds} s (build: ${build})"
cmake --preset "${preset}" -B "${build}" >/dev/null
cmake --build "${build}" -j "$(nproc)" --target fltport_soak_test

run=("${build}/tests/soak/fltport_soak_test")
if [[ ${preset} == tsan ]] && [[ $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0) -gt 28 ]]; then
  run=(setarch "$(uname -m)" -R "${run[@]}")  # as scripts/test.sh does for TSan
fi
case ${preset} in
  asan) export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
        export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} ;;
  tsan) export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=1:second_deadlock_stack=1} ;;
esac
start=$(date +%s)
FLTPORT_SOAK_SECONDS=${seconds} "${run[@]}"
echo "=== soak passed in $(($(date +%s) - start)) s"
