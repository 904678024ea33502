#!/usr/bin/env bash
# Builds the GGUF reader fuzz target with clang (libFuzzer + ASan + UBSan) and runs it for
# FUZZ_SECONDS (default 60) from the committed seeds. Any crash fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=build/fuzz
mkdir -p "$OUT" "$OUT/corpus"
SRC=(tests/fuzz/fuzz_gguf.cpp src/calpaca/formats/gguf.cpp src/calpaca/base/mmap.cpp
     src/calpaca/base/fileio.cpp src/calpaca/tensor/dtype.cpp)
clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -Isrc "${SRC[@]}" -lfmt -o "$OUT/fuzz_gguf"
cp tests/fuzz/seeds-gguf/* "$OUT/corpus/" 2>/dev/null || true
"$OUT/fuzz_gguf" -max_total_time="${FUZZ_SECONDS:-60}" -max_len=4096 -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$OUT/corpus" 2>"$OUT/fuzz.log" || { tail -50 "$OUT/fuzz.log"; echo "fuzz_gguf: FAILED"; exit 1; }
grep -E "stat::number_of_executed_units|Done" "$OUT/fuzz.log" | tail -2
echo "fuzz_gguf: no finding in ${FUZZ_SECONDS:-60} s"
