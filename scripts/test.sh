#!/usr/bin/env bash
# Builds and runs the whole test suite in each preset: dev, then ASan+UBSan, then TSan (each
# includes soak.smoke, a 20-second run of the soak); then builds the fuzz preset and runs each
# libFuzzer target for a bounded time. .ci/run calls this.
#
# Environment:
#   FLTPORT_TEST_PRESETS="dev"   run a subset of the presets (default: dev asan tsan)
#   FLTPORT_FUZZ_SECONDS=N       seconds per fuzz target (scripts/fuzz.sh; 4 targets; default 60, 0 skips)
#   FLTPORT_SOAK=1               then the full soak (scripts/soak.sh: FLTPORT_SOAK_SECONDS, default 600,
#                                dev preset; about 10.5 minutes)
#   FLTPORT_VALGRIND=1           then valgrind memcheck over the port integration tests (scripts/valgrind.sh)
set -euo pipefail
cd "$(dirname "$0")/.."

presets=(${FLTPORT_TEST_PRESETS:-dev asan tsan})
jobs=$(nproc)
fuzz_seconds=${FLTPORT_FUZZ_SECONDS:-60}
[[ ${fuzz_seconds} =~ ^[0-9]+$ ]] || { echo "FLTPORT_FUZZ_SECONDS must be a number of seconds" >&2; exit 2; }
ran=("${presets[@]}")

for preset in "${presets[@]}"; do
  echo "=== preset ${preset}: configure and build"
  cmake --preset "${preset}" >/dev/null
  cmake --build --preset "${preset}" -j "${jobs}"
  echo "=== preset ${preset}: test"
  run=(ctest --preset "${preset}" -j "${jobs}")
  if [[ ${preset} == tsan ]] && [[ $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0) -gt 28 ]]; then
    # GCC 12's TSan runtime does not know the address layouts of kernels with more mmap
    # randomisation; running without ASLR is its documented workaround.
    run=(setarch "$(uname -m)" -R "${run[@]}")
  fi
  "${run[@]}"
done

if [[ ${fuzz_seconds} -gt 0 ]]; then
  echo "=== fuzz: each target for ${fuzz_seconds} s"
  ./scripts/fuzz.sh "${fuzz_seconds}"
  ran+=("fuzz ${fuzz_seconds} s per target")
fi
if [[ ${FLTPORT_SOAK:-0} == 1 ]]; then
  ./scripts/soak.sh
  ran+=("soak")
fi
if [[ ${FLTPORT_VALGRIND:-0} == 1 ]]; then
  ./scripts/valgrind.sh
  ran+=("valgrind")
fi
echo "=== all passed: ${ran[*]}"
