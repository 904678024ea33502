#!/usr/bin/env bash
# Builds every libFuzzer target tests/fuzz/fuzz_NAME.cpp with clang (libFuzzer + ASan + UBSan)
# together with the library sources listed in tests/fuzz/fuzz_NAME.sources (one path per line,
# relative to the repo root), and runs each for FUZZ_SECONDS (default 60) starting from the
# committed seeds in tests/fuzz/seeds-NAME/. Any finding fails the script.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=build/fuzz
mkdir -p "$OUT"
PROTO_GEN=""
for target in tests/fuzz/fuzz_*.cpp; do
    name=$(basename "$target" .cpp)
    short=${name#fuzz_}
    mapfile -t srcs < <(grep -v '^\s*#' "tests/fuzz/$name.sources" | grep -v '^\s*$')
    extra=()
    # targets that need the SentencePiece protobuf schema get it generated once
    if grep -q "sentencepiece_model.proto" "tests/fuzz/$name.sources"; then
        if [ -z "$PROTO_GEN" ]; then
            mkdir -p "$OUT/proto"
            protoc --proto_path=src/calpaca/tokenizer --cpp_out="$OUT/proto" src/calpaca/tokenizer/sentencepiece_model.proto
            PROTO_GEN=1
        fi
        srcs=("${srcs[@]/src\/calpaca\/tokenizer\/sentencepiece_model.proto/}")
        extra=("$OUT/proto/sentencepiece_model.pb.cc" -I"$OUT/proto" -lprotobuf)
    fi
    clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
        -Isrc "$target" ${srcs[@]} "${extra[@]}" -lfmt -o "$OUT/$name"
    mkdir -p "$OUT/corpus-$short"
    cp tests/fuzz/seeds-"$short"/* "$OUT/corpus-$short/" 2>/dev/null || true
    if ! "$OUT/$name" -max_total_time="${FUZZ_SECONDS:-60}" -max_len=8192 -rss_limit_mb=2048 -timeout=10 \
        -print_final_stats=1 "$OUT/corpus-$short" 2>"$OUT/$name.log"; then
        tail -60 "$OUT/$name.log"
        echo "$name: FAILED"
        exit 1
    fi
    echo "$name: no finding in ${FUZZ_SECONDS:-60} s ($(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$OUT/$name.log" | grep -oE '[0-9]+$') runs)"
done
