#!/usr/bin/env bash
# Builds the release preset and runs the benchmark suite (bench/README.md): the port cases and the
# baselines (fltport-bench), then what a filter costs an open() (fltport-bench-fanotify, root only).
# Prints the tables on stdout (build output and progress go to stderr), writes the results as JSON
# with the machine they were measured on, and plots the latency distributions with gnuplot.
#
#   scripts/bench.sh [--quick] [--json PATH] [--plot PATH] [--no-fanotify] [fltport-bench options...]
#
#   --quick        ~30 s instead of ~2–3 min: fewer round trips per case, fewer files
#   --json PATH    results (default build/release/bench-results.json); the plot's data goes beside it,
#                  in PATH without .json + -latency.dat
#   --plot PATH    latency plot, PNG (default build/release/bench-latency.png)
#   --no-fanotify  skip fltport-bench-fanotify
#   anything else is passed to fltport-bench (--iterations N, --time-limit SECONDS, --only TEXT,
#                  --target-rounds N)
set -euo pipefail
cd "$(dirname "$0")/.."

json=build/release/bench-results.json
plot=build/release/bench-latency.png
quick=0
fanotify=1
pass=()
while (($# > 0)); do
  case $1 in
    --quick) quick=1; pass+=(--quick) ;;
    --json) json=${2:?--json needs a path}; shift ;;
    --json=*) json=${1#*=} ;;
    --plot) plot=${2:?--plot needs a path}; shift ;;
    --plot=*) plot=${1#*=} ;;
    --no-fanotify) fanotify=0 ;;
    -h | --help)
      sed -n '2,15s/^# \{0,1\}//p' "$0"
      exit 0
      ;;
    *) pass+=("$1") ;;
  esac
  shift
done
dat="${json%.json}-latency.dat"
bin=build/release/bench

echo "=== bench: configure and build the release preset" >&2
cmake --preset release >&2
cmake --build --preset release --target fltport-bench fltport-bench-baselines fltport-bench-fanotify >&2
mkdir -p "$(dirname "$json")" "$(dirname "$plot")"

scratch=$(mktemp -d /tmp/fltport-bench-script-XXXXXX)
trap 'rm -rf "$scratch"' EXIT
status=0

# fanotify first, its table kept for after the port suite's, its rows merged into the same JSON.
merge=()
if ((fanotify)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "bench: skipping fltport-bench-fanotify: fanotify permission events need root" >&2
  else
    sizes=(--files 20000)  # 5 rounds, 1000 sporadic opens each (the program's defaults)
    ((quick)) && sizes=(--files 2000 --rounds 1 --paced 200)
    echo "=== bench: fltport-bench-fanotify ${sizes[*]}" >&2
    if ! "${bin}/fltport-bench-fanotify" "${sizes[@]}" --json "${scratch}/fanotify.json" \
      >"${scratch}/fanotify.txt"; then
      echo "bench: fltport-bench-fanotify failed; its rows are missing or partial" >&2
      status=1
    fi
    if [[ -s ${scratch}/fanotify.json ]]; then merge=(--merge-json "${scratch}/fanotify.json"); fi
  fi
fi

echo "=== bench: fltport-bench ${pass[*]}" >&2
if ! "${bin}/fltport-bench" "${pass[@]}" --json "${json}" --dat "${dat}" "${merge[@]}"; then
  echo "bench: fltport-bench reported failures (see above)" >&2
  status=1
fi
if [[ -s ${scratch}/fanotify.txt ]]; then cat "${scratch}/fanotify.txt"; fi

echo
if [[ ! -s ${dat} ]]; then
  echo "bench: no latency data (${dat}): no plot"
  status=1
elif ! command -v gnuplot >/dev/null; then
  echo "bench: gnuplot not found (apt-get install gnuplot-nox, or scripts/setup.sh): no plot"
else
  subtitle="Linux $(uname -r), $(nproc) CPUs, $(date -u +%Y-%m-%d)"
  if ((quick)); then subtitle+=", --quick"; fi
  if gnuplot -e "datafile='${dat}'; outfile='${plot}'; subtitle='${subtitle}'" bench/latency.gp; then
    echo "bench: plot    ${plot}"
  else
    echo "bench: gnuplot failed: no plot"
    status=1
  fi
fi
if [[ -s ${json} ]]; then echo "bench: results ${json}"; fi
if [[ -s ${dat} ]]; then echo "bench: latency ${dat}"; fi
exit "${status}"
