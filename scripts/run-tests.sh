#!/usr/bin/env bash
# README command (b): install dependencies, build (warnings are errors), run every test:
# unit + golden + end-to-end CLI tests through ctest, then every fuzz target for 60 s each.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
# real API clients (openai, langchain-openai, playwright + Debian chromium) for e2e_serve_clients
bash tests/serve/setup-clients.sh
export CI=${CI:-true}
bash scripts/build.sh
(cd build && ctest --output-on-failure -j1)
FUZZ_SECONDS=${FUZZ_SECONDS:-60} bash tests/fuzz/run-fuzz.sh
