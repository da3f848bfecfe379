#!/usr/bin/env bash
# valgrind memcheck over the integration tests (issue 6). Builds the dev preset (valgrind does not
# mix with ASan or TSan builds) and runs fltport_integration_tests under
#   valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite
#            --trace-children=yes
# The tests' service processes are forks of the test (valgrind follows a fork with no option; each
# child is checked, and one with an error exits 99, which fails its test); --trace-children=yes
# also covers programs the tests exec (the port tests exec none). Suppressions: scripts/valgrind.supp
# (each one says why). One log per process in <build>/valgrind/; the end prints tests run, errors
# and leaks. Exit status 0 when every test passed and no process reported an error.
#
#   scripts/valgrind.sh
#
# What runs: the communication-port tests. Left out, each for the reason given:
#   - fltmgrd, the scanner and fanotify (ScannerTest, ClassicScannerTest, FilterManagerTest,
#     Fltmgrd, Fltmc, Management, NeverFreeze*, StalledFsTest): they run fltmgrd and its plugins as
#     programs with 500 ms verdict deadlines, and opens under valgrind's 20-50x slowdown take the
#     deadline path instead of the one the test checks; valgrind on fltmgrd itself is a separate run
#     (valgrind --trace-children=yes on one of those tests) that this script does not make.
#   - FLTPORT_VALGRIND_EXCLUDE (below): tests whose assertions are about time, which valgrind's
#     slowdown and one-thread-at-a-time scheduling make meaningless: SharedMemorySpin (CPU time of
#     a spin), HostilePeer (other clients' latency within 2x of the undisturbed figure, and floods
#     that run for fixed durations: 95 s natively), SharedMemoryTimeouts (a 700 ms send must time
#     out within 1.7 s; under valgrind 3.4-6.8 s), SharedMemoryRingFull.ManyLateReplies... (200
#     messages within 15 s; 197 under valgrind), ConnectionLimitRace (its children must end within
#     10 s). Those run under memcheck here (all but SharedMemorySpin and three of the HostilePeer
#     floods) reported no error; they fail on their clocks, not on memory.
#
# Environment:
#   FLTPORT_VALGRIND_BUILD_DIR=D   build in D instead of build/dev
#   FLTPORT_VALGRIND_FILTER=...    only these tests (gtest patterns, ':'-separated; default all)
#   FLTPORT_VALGRIND_EXCLUDE=...   replaces the list of timing tests left out (gtest patterns, ':'-separated)
#   FLTPORT_SPIN_NS                set to 0 unless given: valgrind runs one thread at a time, so a
#                                  reader that spins before sleeping only burns its time slice
# scripts/test.sh runs this after the presets when FLTPORT_VALGRIND=1.
set -euo pipefail
cd "$(dirname "$0")/.."

build=${FLTPORT_VALGRIND_BUILD_DIR:-build/dev}
command -v valgrind >/dev/null || { echo "valgrind is not installed (scripts/setup.sh installs it)" >&2; exit 1; }
cmake --preset dev -B "${build}" >/dev/null
cmake --build "${build}" -j "$(nproc)" --target fltport_integration_tests

# (A leading '*' also matches parameterised suites, "Signals/NeverFreezeFatal.*".)
not_under_valgrind='*ScannerTest.*:*FilterManagerTest.*:*Fltmgrd.*:*Fltmc.*:*Management.*:*NeverFreeze*:*StalledFsTest.*'
timing=${FLTPORT_VALGRIND_EXCLUDE-*SharedMemorySpin.*:*HostilePeer.*:*SharedMemoryTimeouts.*:SharedMemoryRingFull.ManyLateReplies*:ConnectionLimitRace.*}
filter="${FLTPORT_VALGRIND_FILTER:-*}-${not_under_valgrind}${timing:+:${timing}}"

logs=${build}/valgrind
rm -rf "${logs}"
mkdir -p "${logs}"
export FLTPORT_SPIN_NS=${FLTPORT_SPIN_NS-0}
echo "=== valgrind memcheck: fltport_integration_tests --gtest_filter='${filter}' (logs: ${logs})"
start=$(date +%s)
status=0
timeout 7200 valgrind --tool=memcheck --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
  --trace-children=yes --num-callers=40 --suppressions=scripts/valgrind.supp \
  --log-file="${logs}/memcheck.%p.log" \
  "${build}/tests/fltport_integration_tests" --gtest_filter="${filter}" >"${logs}/gtest.log" 2>&1 || status=$?
elapsed=$(($(date +%s) - start))

# Per process: "ERROR SUMMARY: N errors" and the leak summary. A process killed by its test
# (SIGKILL: a killed service is part of several tests) writes no summary.
processes=$(find "${logs}" -name 'memcheck.*.log' | wc -l)
set +o pipefail  # below, a grep that finds nothing is an answer, not a failure
with_errors=$(grep -l 'ERROR SUMMARY: [1-9]' "${logs}"/memcheck.*.log 2>/dev/null | wc -l)
errors=$(grep -h 'ERROR SUMMARY:' "${logs}"/memcheck.*.log 2>/dev/null | awk '{s += $4} END {print s + 0}')
lost() { grep -h "$1 lost:" "${logs}"/memcheck.*.log 2>/dev/null | awk '{gsub(",", "", $4); s += $4} END {print s + 0}'; }
definite=$(lost definitely)
indirect=$(lost indirectly)
possible=$(lost possibly)
summarised=$(grep -l 'ERROR SUMMARY:' "${logs}"/memcheck.*.log 2>/dev/null | wc -l)
tests_line=$(grep -E '^\[==========\] [0-9]+ tests? from' "${logs}/gtest.log" | tail -1)
passed_line=$(grep -E '^\[  PASSED  \]' "${logs}/gtest.log" | tail -1)

grep -E '^\[  FAILED  \]' "${logs}/gtest.log" | sort -u || true
if [[ ${with_errors} -gt 0 ]]; then
  # Each distinct error or definite leak (by its first lines), once, with the first log that has it.
  echo "=== distinct memcheck errors:"
  awk '
    (/^==[0-9]+== [A-Z]/ || /blocks are definitely lost/) && !inblock && $0 !~ /(HEAP|LEAK|ERROR) SUMMARY|Memcheck,|Copyright|Using Valgrind|Command:|Parent PID|in use at exit|total heap usage|definitely lost:|indirectly lost:|possibly lost:|still reachable:|suppressed:|Reachable blocks|To see them|Use --track-origins|For lists of|For counts of/ {
      inblock = 1; block = ""; lines = 0
    }
    inblock {
      line = $0; sub(/^==[0-9]+== /, "", line)
      if (line == "" || line ~ /^ *$/) { inblock = 0; key = substr(block, 1, 600); if (!(key in seen)) { seen[key] = 1; print block "\n  (first in " FILENAME ")\n" }; next }
      if (lines < 25) block = block "  " line "\n"; lines++
    }' "${logs}"/memcheck.*.log | head -300
fi
echo "=== valgrind summary (${elapsed} s)"
echo "tests: ${tests_line#\[==========\] } ${passed_line}"
echo "processes checked: ${processes} (${summarised} ran to their end; the others were killed by their tests)"
echo "memcheck errors: ${errors} in ${with_errors} processes; leaks: definitely ${definite} B, indirectly ${indirect} B, possibly ${possible} B"
if [[ ${status} -ne 0 || ${with_errors} -gt 0 ]]; then
  echo "valgrind: FAILED (exit ${status}; see ${logs})" >&2
  exit 1
fi
echo "valgrind: passed"
