#!/usr/bin/env bash
# Installs the build into a temporary prefix and builds a C11 consumer two ways, as a user would:
# with pkg-config and with find_package(fltport).
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

mkdir -p "$work/cmake-consumer"
cp "$source_dir/consumer.c" "$work/cmake-consumer/"
cp "$source_dir/CMakeLists.txt.in" "$work/cmake-consumer/CMakeLists.txt"
cmake -S "$work/cmake-consumer" -B "$work/cmake-consumer/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/cmake-consumer/build" >/dev/null
"$work/cmake-consumer/build/consumer"
echo "install check passed"
