#!/usr/bin/env bash
# README command (a): install dependencies, build, and chat with the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
exec build/calpaca chat -m models/calpaca-demo.gguf "$@"
