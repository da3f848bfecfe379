#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz preset: clang-14, ASan + UBSan) and runs each for N seconds
# (default 60) on its checked-in corpus, then prints executions, coverage and crashes per target.
#
#   scripts/fuzz.sh [seconds] [target...]      targets: ring_reader frame_decode control_protocol config (default: all)
#
# New inputs go to build/fuzz/work/<target>/corpus (<build dir>/work/...), never into fuzz/corpus (libFuzzer writes only
# to the first corpus directory it is given; the checked-in one is passed second, read-only, and the
# script fails if fuzz/corpus changed anyway); crashing inputs go to build/fuzz/work/<target>/artifacts.
# To keep a crasher as a regression input, copy it into fuzz/corpus/<target>/ (the
# fltport_fuzz_regression test then runs it in every build).
# Exit status: 0 when every target ran its time without a crash, a leak, a timeout or an out-of-memory.
#
# Environment:
#   FUZZ_JOBS=N               N fuzzing processes per target (libFuzzer -fork=N)
#   FLTPORT_FUZZ_BUILD_DIR=D  build in D instead of build/fuzz (the preset's directory)
# scripts/test.sh runs this after the presets with FLTPORT_FUZZ_SECONDS (default 60, 0 skips).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
shift || true
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(ring_reader frame_decode control_protocol config)
[[ ${seconds} =~ ^[0-9]+$ ]] || { echo "usage: $0 [seconds] [target...]" >&2; exit 2; }
for target in "${targets[@]}"; do
  [[ -d fuzz/corpus/${target} ]] || { echo "unknown target ${target}" >&2; exit 2; }
done

build=${FLTPORT_FUZZ_BUILD_DIR:-build/fuzz}
cmake --preset fuzz -B "${build}" >/dev/null
cmake --build "${build}" -j "$(nproc)" --target "${targets[@]/#/fltport_fuzz_}"

corpus_state() { find fuzz/corpus -type f -print0 | sort -z | xargs -0 sha1sum; }
corpus_before=$(corpus_state)

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

summary=()
failed=0
for target in "${targets[@]}"; do
  binary=${build}/fuzz/fltport_fuzz_${target}
  seeds=fuzz/corpus/${target}
  work=${build}/work/${target}
  [[ -x ${binary} && -d ${seeds} ]] || { echo "unknown target ${target}" >&2; exit 2; }
  mkdir -p "${work}/corpus" "${work}/artifacts"
  rm -f "${work}"/artifacts/*
  log=${work}/fuzz.log
  echo "=== ${target}: ${seconds} s (log: ${log})"
  options=(-max_total_time="${seconds}" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
           -artifact_prefix="${work}/artifacts/")
  [[ -n ${FUZZ_JOBS:-} ]] && options+=(-fork="${FUZZ_JOBS}" -ignore_crashes=1)
  status=0
  "./${binary}" "${options[@]}" "${work}/corpus" "${seeds}" >"${log}" 2>&1 || status=$?

  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "${log}" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "${log}" | tail -1)
  # The last status line: "#123 DONE cov: 456 ft: 789 corp: 12/3456b ..." (or with -fork, "#... cov: ...").
  cov=$(grep -oE 'cov: [0-9]+' "${log}" | tail -1 | awk '{print $2}')
  ft=$(grep -oE 'ft: [0-9]+' "${log}" | tail -1 | awk '{print $2}')
  corpus=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "${log}" | tail -1 | awk '{print $2}')
  crashes=$(find "${work}/artifacts" -type f | wc -l)
  line="${target}: execs ${execs:-?} (${rate:-?}/s), cov ${cov:-?}, ft ${ft:-?}, corpus ${corpus:-?}, crashes ${crashes}, exit ${status}"
  echo "${line}"
  summary+=("${line}")
  if [[ ${crashes} -gt 0 || ${status} -ne 0 ]]; then
    failed=1
    find "${work}/artifacts" -type f | sed 's/^/  artifact: /'
    grep -m1 -A20 -E '^==[0-9]+==ERROR|fuzz invariant failed|runtime error' "${log}" | sed 's/^/  /' || true
  fi
done

if [[ $(corpus_state) != "${corpus_before}" ]]; then
  echo "fuzz/corpus changed during the run: the fuzzers must write only under ${build}/work" >&2
  failed=1
fi

echo "=== summary"
printf '%s\n' "${summary[@]}"
exit "${failed}"
