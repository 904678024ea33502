#!/usr/bin/env bash
# End-to-end tests of `calpaca quantize`: every type on the demo model (32-block types) and on
# a random model whose rows are multiples of 256 (K-quants, mixes); `calpaca info` shows the
# types; generation runs on each result (greedy, and identical for -t 1 / -t 2); threaded
# quantization is deterministic; requantization is refused without --allow-requantize;
# bad input gives one error line and exit 1, leaving no output file.
# Usage: quantize.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
DEMO=$SRC/tests/fixtures/models/calpaca-demo.gguf
LLAMA_TOK=$SRC/tests/fixtures/tokenizers/llama/tokenizer.model
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_error() {
    local name=$1 pat=$2; shift 2
    timeout 60 "$@" >"$W/out" 2>"$W/err" </dev/null
    local rc=$? lines
    lines=$(wc -l <"$W/err")
    if [ $rc -ne 1 ]; then bad "$name: exit code $rc (want 1); stderr: $(head -c 300 "$W/err")"; return; fi
    if [ "$lines" -ne 1 ]; then bad "$name: $lines stderr lines (want 1): $(head -c 300 "$W/err")"; return; fi
    if ! grep -q -- "$pat" "$W/err"; then bad "$name: stderr lacks '$pat': $(cat "$W/err")"; return; fi
    ok
}
expect_ok() {
    local name=$1; shift
    if timeout 120 "$@" >"$W/out" 2>"$W/err" </dev/null; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}
# info_type FILE TENSOR TYPE: the tensor table of `calpaca info` lists TENSOR with TYPE
info_type() {
    "$CALPACA" info --all-tensors "$1" >"$W/info" 2>&1 || { bad "info $1 failed"; return; }
    if grep -Eq "^ +$2 +$3 " "$W/info"; then ok; else bad "info $1: $2 is not $3: $(grep -E " $2 " "$W/info")"; fi
}
gen() {  # gen MODEL: greedy generation runs and reports its tokens
    expect_ok "generate $(basename "$1")" "$CALPACA" generate -m "$1" -p "白日依山尽，" -n 8 --temp 0 -t 2
    grep -q "8 generated" "$W/err" && ok || bad "generate $(basename "$1") did not report 8 tokens: $(cat "$W/err")"
}

if "$CALPACA" quantize --help | grep -q "Examples:"; then ok; else bad "quantize --help lacks examples"; fi

# --- 32-block types on the demo model (dim 64; ffn_down rows of 176 fall back to F16, the tied head to Q8_0)
for t in Q4_0 Q4_1 Q5_0 Q5_1 Q8_0; do
    expect_ok "quantize demo $t" "$CALPACA" quantize "$DEMO" "$W/demo-$t.gguf" "$t" -t 2
    grep -q "bits/weight" "$W/err" && grep -q "fallback: blk.0.ffn_down.weight" "$W/err" && ok || bad "report for $t: $(cat "$W/err")"
    info_type "$W/demo-$t.gguf" blk.0.attn_q.weight "$t"
    info_type "$W/demo-$t.gguf" blk.1.ffn_down.weight F16
    info_type "$W/demo-$t.gguf" token_embd.weight Q8_0
    info_type "$W/demo-$t.gguf" blk.0.attn_norm.weight F32
    gen "$W/demo-$t.gguf"
done
# a lower-case type name and a K type on 64-wide rows: llama.cpp's fallback Q4_K -> Q5_0
expect_ok "quantize demo q4_k" "$CALPACA" quantize "$DEMO" "$W/demo-q4k.gguf" q4_k -t 1
info_type "$W/demo-q4k.gguf" blk.0.attn_q.weight Q5_0

# --- K-quants and mixes on a random model with 256-multiple rows
expect_ok make-random "$CALPACA" make-random-model --vocab "$LLAMA_TOK" --dim 256 --layers 2 --heads 4 --kv-heads 2 \
    --ff 512 --std 0.06 --seed 3 -o "$W/r256.gguf"
for t in Q2_K Q3_K Q4_K Q5_K Q6_K; do
    expect_ok "quantize r256 $t" "$CALPACA" quantize "$W/r256.gguf" "$W/r256-$t.gguf" "$t" -t 2
    info_type "$W/r256-$t.gguf" blk.1.ffn_gate.weight "$t"
    info_type "$W/r256-$t.gguf" output.weight Q6_K
    gen "$W/r256-$t.gguf"
done
expect_ok "quantize r256 Q4_K_M" "$CALPACA" quantize "$W/r256.gguf" "$W/r256-km.gguf" Q4_K_M -t 2 --list-tensors
grep -Eq "^blk.1.attn_v.weight +Q6_K" "$W/out" && grep -Eq "^blk.0.attn_v.weight +Q4_K" "$W/out" && ok || bad "--list-tensors: $(cat "$W/out")"
info_type "$W/r256-km.gguf" blk.1.ffn_down.weight Q6_K
info_type "$W/r256-km.gguf" blk.0.ffn_down.weight Q4_K
grep -q "general.file_type *15" "$W/info" && ok || bad "Q4_K_M file_type: $(grep file_type "$W/info")"
gen "$W/r256-km.gguf"
expect_ok "quantize r256 Q5_K_M" "$CALPACA" quantize "$W/r256.gguf" "$W/r256-k5m.gguf" q5_k_m -t 2
info_type "$W/r256-k5m.gguf" blk.0.attn_q.weight Q5_K
info_type "$W/r256-k5m.gguf" blk.1.attn_v.weight Q6_K
gen "$W/r256-k5m.gguf"
expect_ok "quantize r256 pure" "$CALPACA" quantize "$W/r256.gguf" "$W/r256-pure.gguf" Q4_0 --pure -t 2
info_type "$W/r256-pure.gguf" output.weight Q4_0

# --- greedy generation on a quantized model does not depend on the thread count
"$CALPACA" generate -m "$W/r256-Q4_K.gguf" -p "hello" -n 16 --temp 0 -t 1 >"$W/g1" 2>/dev/null
"$CALPACA" generate -m "$W/r256-Q4_K.gguf" -p "hello" -n 16 --temp 0 -t 2 >"$W/g2" 2>/dev/null
if [ -s "$W/g1" ] && cmp -s "$W/g1" "$W/g2"; then ok; else bad "Q4_K greedy output differs between -t 1 and -t 2"; fi

# --- threaded quantization writes the same bytes as single-threaded
expect_ok "quantize t1" "$CALPACA" quantize "$W/r256.gguf" "$W/t1.gguf" Q4_K_M -t 1
if cmp -s "$W/t1.gguf" "$W/r256-km.gguf"; then ok; else bad "quantize -t 1 and -t 2 differ"; fi

# --- requantization is refused without --allow-requantize, and leaves nothing behind
expect_error requantize "already quantized" "$CALPACA" quantize "$W/demo-Q8_0.gguf" "$W/re.gguf" Q4_0
grep -q -- "--allow-requantize" "$W/err" && ok || bad "refusal does not name --allow-requantize"
[ ! -e "$W/re.gguf" ] && [ -z "$(ls "$W" | grep -E '^re\.gguf')" ] && ok || bad "refused requantize left a file"
expect_ok requantize-allowed "$CALPACA" quantize "$W/demo-Q8_0.gguf" "$W/re.gguf" Q4_0 --allow-requantize -t 2
info_type "$W/re.gguf" blk.0.attn_q.weight Q4_0
gen "$W/re.gguf"

# --- bad input: one line, exit 1
expect_error unknown-type "unknown quantization type 'Q7_0'" "$CALPACA" quantize "$DEMO" "$W/x.gguf" Q7_0
expect_error missing-input "nope.gguf" "$CALPACA" quantize "$W/nope.gguf" "$W/x.gguf" Q4_0
printf 'GGUF\003\000\000\000' >"$W/trunc.gguf"
expect_error truncated-input "trunc.gguf" "$CALPACA" quantize "$W/trunc.gguf" "$W/x.gguf" Q4_0
expect_error bad-threads "threads" "$CALPACA" quantize "$DEMO" "$W/x.gguf" Q4_0 -t -3
[ ! -e "$W/x.gguf" ] && ok || bad "a failed quantize left $W/x.gguf"
[ -z "$(ls "$W" | grep '\.tmp')" ] && ok || bad "temporary files left: $(ls "$W")"

echo "e2e quantize: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
