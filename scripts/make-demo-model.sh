#!/usr/bin/env bash
# Recipe of the test placeholder model tests/fixtures/models/calpaca-demo.gguf: RANDOM, UNTRAINED weights
# in the shape of a (very) small LLaMA, with the real Chinese-LLaMA-2 tokenizer (55296 pieces)
# and the Alpaca-2 chat template, so that `calpaca chat` runs end to end. Deterministic (seed 1):
# running it again reproduces the committed file byte for byte (tests/e2e/cli.sh checks it).
# The tests use it because its output is fixed by construction; the bundled, trained demo model
# (models/calpaca-demo.gguf) is made by scripts/train-demo-model.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
CALPACA=${CALPACA:-build/calpaca}
"$CALPACA" make-random-model \
    --vocab tests/fixtures/tokenizers/chinese-llama-2/tokenizer.model \
    --dim 64 --layers 2 --heads 4 --kv-heads 2 --ff 176 --ctx 2048 --std 0.5 --seed 1 --tie-embeddings \
    --template alpaca-2 --name "calpaca-demo (untrained placeholder)" \
    --description "UNTRAINED placeholder: random weights, Chinese-LLaMA-2 tokenizer; output is gibberish. Made by scripts/make-demo-model.sh." \
    -o "${1:-tests/fixtures/models/calpaca-demo.gguf}"
