#!/usr/bin/env bash
# README command (b): install dependencies, build (warnings are errors), run every test:
# unit + golden + end-to-end CLI tests through ctest, then the GGUF fuzzer for 60 s.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CI=${CI:-true}
bash scripts/build.sh
(cd build && ctest --output-on-failure -j1)
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash tests/fuzz/run-fuzz.sh
