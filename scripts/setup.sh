#!/usr/bin/env bash
# Installs what fltport needs to build, test and benchmark, from Debian 12 packages only.
# Idempotent: installs only what is missing. Run as root.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config git
  libfuse3-dev fuse3     # tests/support/stall_fs.c: a FUSE file system that stalls reads
  libgtest-dev libgmock-dev libbenchmark-dev libcli11-dev
  libzmq3-dev            # ZeroMQ: a baseline the benchmarks compare against
  gnuplot-nox            # scripts/bench.sh: the latency plot
  clang clang-format clang-tidy
  clang-14 libclang-rt-14-dev  # the fuzz preset: libFuzzer and clang's ASan/UBSan runtimes (only
                               # recommended by clang-14, and recommends are not installed here)
  valgrind               # scripts/valgrind.sh (pulls in libc6-dbg, which memcheck needs on Debian)
)

missing=()
for package in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "setup: missing ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
