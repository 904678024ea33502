#!/usr/bin/env bash
# Configures and builds calpaca into build/ (Release, -march=native unless CALPACA_PORTABLE=1).
set -euo pipefail
cd "$(dirname "$0")/.."
# ccache keys on paths relative to the checkout, so a fresh clone elsewhere reuses earlier objects
export CCACHE_BASEDIR="$PWD"
args=(-DCMAKE_BUILD_TYPE=Release)
[ "${CALPACA_PORTABLE:-0}" = 1 ] && args+=(-DCALPACA_NATIVE=OFF)
[ "${CI:-}" = true ] && args+=(-DCALPACA_WERROR=ON)
cmake -S . -B build "${args[@]}" >/dev/null
cmake --build build -j"$(nproc)"
