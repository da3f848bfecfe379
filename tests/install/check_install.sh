#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a C11 consumer two ways, as a user would:
# with pkg-config and with find_package(fltport). Then a Windows-shaped program (tests/c/
# win32_compat_smoke.c: <Windows.h>, <FltUser.h>, <StrSafe.h> ...) the same two ways, through the
# Win32 compatibility include directory only: -I$(pkg-config --variable=win32includedir fltport),
# and the fltport::win32 target. And the installed programs: they run without LD_LIBRARY_PATH, and
# fltmgrd (where fanotify is permitted) loads the installed scanner plugin with the sample configuration.
set -euo pipefail
build_dir=$1
source_dir=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/fltport-install-XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build_dir" --prefix "$work/prefix" >/dev/null
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -1 | xargs dirname)
test -f "$libdir/libfltport.a" && test -f "$libdir/libfltport.so" || { echo "missing libraries in $libdir"; exit 1; }
export FLTPORT_RUNTIME_DIR="$work/run"

export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc -std=c11 -Wall -Wextra -Werror -o "$work/consumer-pc" "$source_dir/consumer.c" $(pkg-config --cflags --libs fltport)
LD_LIBRARY_PATH="$libdir" "$work/consumer-pc"

win32_consumer=$source_dir/../c/win32_compat_smoke.c
win32includedir=$(pkg-config --variable=win32includedir fltport)
test -n "$win32includedir" || { echo "pkg-config reports no win32includedir"; exit 1; }
for header in windows.h Windows.h fltuser.h FltUser.h fltUser.h fltUserStructures.h winioctl.h WinIoCtl.h \
              crtdbg.h dontuse.h strsafe.h StrSafe.h; do
  test -f "$win32includedir/$header" || { echo "missing $win32includedir/$header"; exit 1; }
done
# The compatibility directory alone (no --cflags): it must find fltport's own headers by itself.
cc -std=c11 -Wall -Wextra -Werror -o "$work/win32-consumer-pc" "$win32_consumer" \
  -I"$win32includedir" $(pkg-config --libs fltport)
LD_LIBRARY_PATH="$libdir" "$work/win32-consumer-pc"
# The classic-shape scanner service builds the same way, from its source as it is.
cc -std=c11 -Wall -Wextra -Werror -o "$work/scanuser-classic" "$source_dir/../../examples/scanner/service/scanuser_classic.c" \
  -I"$win32includedir" $(pkg-config --libs fltport)

# The installed programs find the installed library by their run path alone (no ldconfig, no
# LD_LIBRARY_PATH), and fltmgrd finds the installed scanner plugin from where it is itself.
env -u LD_LIBRARY_PATH "$work/prefix/bin/fltmgrd" --help >/dev/null
env -u LD_LIBRARY_PATH "$work/prefix/bin/fltmc" --help >/dev/null
status=0
env -u LD_LIBRARY_PATH "$work/prefix/bin/fltport-scanner-service" -t 0 2>/dev/null || status=$?
[ "$status" -eq 2 ] || { echo "the installed scanner service does not start ($status, 2 = usage)"; exit 1; }
sample=$work/prefix/share/doc/fltport/fltmgrd.conf.example
test -f "$sample" || { echo "missing $sample"; exit 1; }
grep -q "ExecStart=$(sed -n 's/^CMAKE_INSTALL_PREFIX:PATH=//p' "$build_dir/CMakeCache.txt")/bin/fltmgrd " \
  "$work/prefix/lib/systemd/system/fltmgrd.service" || { echo "the systemd unit names another fltmgrd"; exit 1; }
mkdir -p "$work/watched" "$work/run"
log=$work/fltmgrd.log
env -u LD_LIBRARY_PATH -u FLTPORT_PLUGIN_PATH FLTPORT_RUNTIME_DIR="$work/run" \
  timeout 20 "$work/prefix/bin/fltmgrd" --foreground --config "$sample" --load scanner \
  --attach scanner="$work/watched" >/dev/null 2>"$log" &
daemon=$!
for _ in $(seq 100); do
  grep -q "fltmgrd: ready" "$log" && break
  kill -0 "$daemon" 2>/dev/null || break
  sleep 0.1
done
if grep -q "fltmgrd: ready" "$log"; then
  FLTPORT_RUNTIME_DIR="$work/run" env -u LD_LIBRARY_PATH "$work/prefix/bin/fltmc" filters | grep -q "^scanner " ||
    { kill "$daemon"; echo "installed fltmgrd has no scanner filter"; cat "$log"; exit 1; }
  grep -q "loaded scanner from $work/prefix/bin/../${libdir#"$work/prefix/"}/fltport/filters/" "$log" ||
    { kill "$daemon"; echo "installed fltmgrd loaded another scanner plugin"; cat "$log"; exit 1; }
  kill "$daemon"
  wait "$daemon" || { echo "installed fltmgrd did not stop cleanly"; cat "$log"; exit 1; }
elif grep -q "cannot start the filter manager" "$log"; then
  wait "$daemon" || true
  echo "installed fltmgrd not run: fanotify is not permitted here ($(tail -1 "$log"))"
else
  kill "$daemon" 2>/dev/null || true
  echo "installed fltmgrd did not start"; cat "$log"; exit 1
fi

mkdir -p "$work/cmake-consumer"
cp "$source_dir/consumer.c" "$win32_consumer" "$work/cmake-consumer/"
cp "$source_dir/CMakeLists.txt.in" "$work/cmake-consumer/CMakeLists.txt"
cmake -S "$work/cmake-consumer" -B "$work/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-consumer/build" >/dev/null
"$work/cmake-consumer/build/consumer"
"$work/cmake-consumer/build/win32_consumer"
echo "install check passed"
