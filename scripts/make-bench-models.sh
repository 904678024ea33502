#!/usr/bin/env bash
# Writes random-weight llama GGUF models of real shapes for benchmarking (`calpaca bench`,
# `calpaca perplexity`, docs/benchmarks.md). Nothing here is committed: the files are large.
#
#   scripts/make-bench-models.sh OUTDIR [1.3b|7b|all] [f16|f32|bf16]
#
#   1.3b  Chinese-LLaMA-2-1.3B shape: 4 layers, dim 4096, 32 heads, ffn 11008, vocab 55296
#         (Chinese-LLaMA-2 tokenizer), ctx 4096. F16: 2.5 GB.
#   7b    LLaMA-7B shape: 32 layers, dim 4096, 32 heads, ffn 11008, vocab 49953
#         (Chinese-LLaMA tokenizer), ctx 2048. F16: 13.5 GB (needs as much RAM to mmap when run).
#
# Files are named OUTDIR/rand-<shape>-<type>.gguf; existing files are kept (delete them to
# rebuild). Weights are N(0, 0.02), seed 1, so reruns write identical files. Quantized
# variants: run `calpaca quantize` on the F16 file. Set CALPACA to the binary to use
# (default build/calpaca).
set -euo pipefail
cd "$(dirname "$0")/.."
CALPACA=${CALPACA:-build/calpaca}
OUT=${1:?usage: make-bench-models.sh OUTDIR [1.3b|7b|all] [f16|f32|bf16]}
WHICH=${2:-all}
TYPE=${3:-f16}
case "$WHICH" in 1.3b | 7b | all) ;; *) echo "make-bench-models.sh: shape must be 1.3b, 7b or all, got '$WHICH'" >&2; exit 1 ;; esac
case "$TYPE" in f16 | bf16) BPW=2 ;; f32) BPW=4 ;; *) echo "make-bench-models.sh: type must be f16, f32 or bf16, got '$TYPE'" >&2; exit 1 ;; esac
[ -x "$CALPACA" ] || { echo "make-bench-models.sh: $CALPACA is not executable (build first or set CALPACA)" >&2; exit 1; }
mkdir -p "$OUT"

# make NAME VOCAB LAYERS PARAMS_IN_MILLIONS ARGS...: checks the free space first
make() {
    local name=$1 vocab=$2 layers=$3 mparams=$4; shift 4
    local file="$OUT/rand-$name-$TYPE.gguf"
    if [ -s "$file" ]; then echo "$file exists, kept"; return; fi
    local need_mb=$((mparams * BPW * 105 / 100))
    local free_mb
    free_mb=$(df -Pm "$OUT" | awk 'NR==2 {print $4}')
    if [ "$free_mb" -lt "$need_mb" ]; then
        echo "make-bench-models.sh: $file needs about $need_mb MB but $OUT has $free_mb MB free" >&2
        exit 1
    fi
    echo "writing $file (about $need_mb MB)"
    "$CALPACA" make-random-model --vocab "$vocab" --dim 4096 --layers "$layers" --heads 32 --kv-heads 32 \
        --ff 11008 --type "$TYPE" --seed 1 --name "calpaca-bench-$name (random weights)" \
        --description "RANDOM weights in the $name shape, for benchmarks only. Made by scripts/make-bench-models.sh." \
        "$@" -o "$file"
}

TOK=tests/fixtures/tokenizers
# parameters: layers * (4*4096^2 + 3*4096*11008) + 2 * vocab * 4096 (embedding and output)
if [ "$WHICH" = 1.3b ] || [ "$WHICH" = all ]; then
    make 1.3b "$TOK/chinese-llama-2/tokenizer.model" 4 1262 --ctx 4096
fi
if [ "$WHICH" = 7b ] || [ "$WHICH" = all ]; then
    make 7b "$TOK/chinese-llama-v1/tokenizer.model" 32 6886 --ctx 2048
fi
