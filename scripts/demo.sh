#!/usr/bin/env bash
# The README's main job: the on-access scanner, end to end, as root.
#   1. builds the release preset (fltmgrd, the scanner filter plugin, the scanner service);
#   2. starts fltmgrd with the scanner filter attached to a fresh temporary directory, and the
#      scanner service, with ports in a fresh runtime directory;
#   3. writes clean.txt and foul.txt (which contains the word "foul") there, then opens each as an
#      ordinary process would: the clean one opens, the foul one is denied;
#   4. stops both programs and removes both directories, also on an error or Ctrl-C.
# Exits 0 only when both opens went as expected and everything was torn down.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
preset=${FLTPORT_DEMO_PRESET:-release}   # another preset's build, e.g. dev, for development
build=$root/build/$preset
work=""
fltmgrd_pid=""
service_pid=""

step() { printf '\n==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }

if [[ $(id -u) -ne 0 ]]; then
  echo "demo: fanotify permission events need root (CAP_SYS_ADMIN); run: sudo $0" >&2
  exit 1
fi

step "Building the $preset preset: fltmgrd, the scanner filter plugin and the scanner service"
cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" --target fltmgrd fltport-filter-scanner fltport-scanner-service
fltmgrd=$build/tools/fltmgrd/fltmgrd
plugin_dir=$build/examples/scanner/filter
service=$build/examples/scanner/service/fltport-scanner-service
for file in "$fltmgrd" "$plugin_dir/fltport-filter-scanner.so" "$service"; do
  [[ -x $file || -f $file ]] || { echo "demo: $file was not built" >&2; exit 1; }
done

# ---- everything the demo creates lives under $work, and the trap removes it ----
work=$(mktemp -d /tmp/fltport-scanner-demo-XXXXXX)
watched=$work/files   # the directory the scanner filter is attached to
runtime=$work/run     # $FLTPORT_RUNTIME_DIR: the ports' sockets
mkdir "$watched" "$runtime"
export FLTPORT_RUNTIME_DIR=$runtime
fltmgrd_log=$work/fltmgrd.log
service_log=$work/service.log
fltmgrd_shown=0
service_shown=0

# Stops one background program: SIGTERM, up to 5 s to exit, then SIGKILL; reaps it either way.
stop_process() {
  local name=$1 pid=$2 code=0
  [[ -n $pid ]] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      note "$name (pid $pid) still running after 5 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  wait "$pid" 2>/dev/null || code=$?
  note "$name (pid $pid) exited with status $code"
  return 0
}

cleanup() {
  local status=$?
  trap - EXIT INT TERM
  set +e
  if [[ -n $service_pid || -n $fltmgrd_pid ]]; then
    step "Cleaning up after an error or an interruption"
    stop_process "scanner service" "$service_pid"
    stop_process fltmgrd "$fltmgrd_pid"
  fi
  [[ -z $work ]] || rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

# Prints what the two programs logged since the last call.
show_logs() {
  local lines
  if [[ -f $fltmgrd_log ]]; then
    lines=$(tail -n +"$((fltmgrd_shown + 1))" "$fltmgrd_log")
    if [[ -n $lines ]]; then
      printf '%s\n' "$lines" | sed 's/^/      fltmgrd | /'
      fltmgrd_shown=$((fltmgrd_shown + $(printf '%s\n' "$lines" | wc -l)))
    fi
  fi
  if [[ -f $service_log ]]; then
    lines=$(tail -n +"$((service_shown + 1))" "$service_log")
    if [[ -n $lines ]]; then
      printf '%s\n' "$lines" | sed 's/^/      service | /'
      service_shown=$((service_shown + $(printf '%s\n' "$lines" | wc -l)))
    fi
  fi
}

# Waits up to $2 tenths of a second for the pattern $3 in file $1 while process $4 lives.
wait_for_line() {
  local file=$1 tenths=$2 pattern=$3 pid=$4
  for _ in $(seq "$tenths"); do
    grep -q -- "$pattern" "$file" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

step "Starting fltmgrd with the scanner filter attached to $watched"
note "$fltmgrd --foreground --plugin-dir $plugin_dir --load scanner --attach scanner=$watched"
"$fltmgrd" --foreground --plugin-dir "$plugin_dir" --load scanner --attach "scanner=$watched" \
  >"$fltmgrd_log" 2>&1 &
fltmgrd_pid=$!
if ! wait_for_line "$fltmgrd_log" 100 '^fltmgrd: ready' "$fltmgrd_pid"; then
  show_logs
  echo "demo: fltmgrd did not become ready within 10 s" >&2
  exit 1
fi
note "fltmgrd is ready (pid $fltmgrd_pid)"
show_logs

step "Starting the scanner service (2 worker threads)"
"$service" -t 2 >"$service_log" 2>&1 &
service_pid=$!
if ! wait_for_line "$service_log" 100 'connected to' "$service_pid"; then
  show_logs
  echo "demo: the scanner service did not connect within 10 s" >&2
  exit 1
fi
note "the service is connected (pid $service_pid)"
show_logs

step "Writing clean.txt and foul.txt (each write is scanned again when the file is closed)"
printf 'Hello from fltport: nothing to see here.\n' >"$watched/clean.txt"
printf 'This file contains the word foul, which the scanner service rejects.\n' >"$watched/foul.txt"
# The close-after-write scans run after the writes return: give their log lines a moment.
wait_for_line "$fltmgrd_log" 30 'foul.txt written' "$fltmgrd_pid" || true
show_logs

failures=0
step "Opening clean.txt as an ordinary process: cat $watched/clean.txt"
if output=$(cat "$watched/clean.txt" 2>&1); then
  note "opened: $output"
  note "as expected: the service found it clean"
else
  note "cat failed: $output"
  note "UNEXPECTED: the clean file should open"
  failures=$((failures + 1))
fi
sleep 0.1  # the service prints its verdict just after sending it
show_logs

step "Opening foul.txt as an ordinary process: cat $watched/foul.txt"
if output=$(cat "$watched/foul.txt" 2>&1); then
  note "opened: $output"
  note "UNEXPECTED: the foul file should have been denied"
  failures=$((failures + 1))
elif [[ $output == *"Operation not permitted"* || $output == *"Permission denied"* ]]; then
  note "denied: $output"
  note "as expected: the scanner filter refused the open on the service's verdict"
else
  note "cat failed, but not with a denial: $output"
  failures=$((failures + 1))
fi
sleep 0.1
show_logs

step "Tearing down"
stopped_pids="$service_pid $fltmgrd_pid"
stop_process "scanner service" "$service_pid"
service_pid=""
stop_process fltmgrd "$fltmgrd_pid"
fltmgrd_pid=""
show_logs
rm -rf "$work"
note "removed $work (the watched directory, the runtime directory and the logs)"
for pid in $stopped_pids; do
  if kill -0 "$pid" 2>/dev/null; then
    echo "demo: process $pid is still running" >&2
    failures=$((failures + 1))
  fi
done
[[ ! -e $work ]] || { echo "demo: $work is still there" >&2; failures=$((failures + 1)); }

if ((failures == 0)); then
  printf '\ndemo passed: clean.txt opened, foul.txt was denied; no processes or files left behind\n'
  exit 0
fi
printf '\ndemo FAILED: %d unexpected outcome(s)\n' "$failures"
exit 1
