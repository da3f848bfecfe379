#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a C11 consumer two ways, as a user would:
# with pkg-config and with find_package(fltport). Then a Windows-shaped program (tests/c/
# win32_compat_smoke.c: <Windows.h>, <FltUser.h>, <StrSafe.h> ...) the same two ways, through the
# Win32 compatibility include directory only: -I$(pkg-config --variable=win32includedir fltport),
# and the fltport::win32 target.
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

mkdir -p "$work/cmake-consumer"
cp "$source_dir/consumer.c" "$win32_consumer" "$work/cmake-consumer/"
cp "$source_dir/CMakeLists.txt.in" "$work/cmake-consumer/CMakeLists.txt"
cmake -S "$work/cmake-consumer" -B "$work/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-consumer/build" >/dev/null
"$work/cmake-consumer/build/consumer"
"$work/cmake-consumer/build/win32_consumer"
echo "install check passed"
