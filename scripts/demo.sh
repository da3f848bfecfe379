#!/usr/bin/env bash
# Builds fltport (release preset) and runs the main demo.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset release >/dev/null
cmake --build --preset release --target fltport-portdemo
exec ./build/release/examples/portdemo/fltport-portdemo
