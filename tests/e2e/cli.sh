#!/usr/bin/env bash
# End-to-end tests of the calpaca CLI: every subcommand on real files, and every kind of bad
# input the foundation promises a one-line error for (exit 1, no crash, no hang).
# Usage: cli.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures
DEMO=$SRC/tests/fixtures/models/calpaca-demo.gguf
V2=$FIX/tokenizers/chinese-llama-2/tokenizer.model
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_error NAME PATTERN CMD... : exit code 1, exactly one stderr line containing PATTERN
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
    if timeout 120 "$@" >"$W/out" 2>"$W/err"; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}

# --- help for every subcommand, with examples
for sub in info tokenize logits generate chat convert make-random-model; do
    if "$CALPACA" "$sub" --help | grep -q "Examples:"; then ok; else bad "$sub --help lacks examples"; fi
done

# --- the bundled model is reproducible by its recipe
CALPACA=$CALPACA bash "$SRC/scripts/make-demo-model.sh" "$W/demo.gguf" >/dev/null 2>&1
if cmp -s "$W/demo.gguf" "$DEMO"; then ok; else bad "scripts/make-demo-model.sh does not reproduce tests/fixtures/models/calpaca-demo.gguf"; fi

# --- info
expect_ok info "$CALPACA" info "$DEMO"
grep -q "vocab 55296" "$W/out" && grep -q "llama.attention.head_count_kv" "$W/out" && ok || bad "info output"

# --- tokenize: ids match sentencepiece (test vector 47+ are Chinese; use the corpus sample's first lines)
head -n 200 "$FIX/corpus/sample.txt" >"$W/lines.txt"
head -n 200 "$FIX/tokenizers/expected/chinese-llama-2.corpus.ids" >"$W/want.ids"
expect_ok tokenize-file "$CALPACA" tokenize --vocab "$V2" -f "$W/lines.txt"
if cmp -s "$W/out" "$W/want.ids"; then ok; else bad "tokenize -f differs from sentencepiece ids"; fi
expect_ok tokenize-gguf "$CALPACA" tokenize -m "$DEMO" -f "$W/lines.txt"
if cmp -s "$W/out" "$W/want.ids"; then ok; else bad "tokenize -m (GGUF vocab) differs from sentencepiece ids"; fi
expect_ok tokenize-pieces "$CALPACA" tokenize --vocab "$V2" --pieces --bos "白日依山尽"
[ "$(cat "$W/out")" = "<s> ▁ 白 日 依 山 尽" ] && ok || bad "pieces: $(cat "$W/out")"
expect_ok tokenize-special "$CALPACA" tokenize --vocab "$V2" --parse-special "a</s>b"
[ "$(cat "$W/out")" = "$("$CALPACA" tokenize --vocab "$V2" a) 2 $("$CALPACA" tokenize --vocab "$V2" b)" ] && ok || bad "parse-special: $(cat "$W/out")"
expect_ok tokenize-plain "$CALPACA" tokenize --vocab "$V2" "a</s>b"
grep -qv "^.* 2 " "$W/out" && ok || bad "literal </s> became a control token without --parse-special"
# one output line per input line, lines kept as they are (empty and space-only lines too)
printf 'a\n\n  b \n' >"$W/three.txt"
expect_ok tokenize-lines "$CALPACA" tokenize --vocab "$V2" -f "$W/three.txt"
[ "$(wc -l <"$W/out")" -eq 3 ] && [ -z "$(sed -n 2p "$W/out")" ] && ok || bad "tokenize -f line mapping"

# --- logits: .npy header and size
expect_ok logits "$CALPACA" logits -m "$DEMO" --ids 1,29871,30868 --out "$W/l.npy"
[ "$(head -c 6 "$W/l.npy" | tail -c 5)" = "NUMPY" ] && grep -aq "'shape': (3, 55296)" "$W/l.npy" && ok || bad "npy header"
[ "$(stat -c %s "$W/l.npy")" -eq $((128 + 3 * 55296 * 4)) ] && ok || bad "npy size $(stat -c %s "$W/l.npy")"

# --- generate: greedy is deterministic; -t does not change greedy tokens; seeded sampling repeats
expect_ok gen-greedy "$CALPACA" generate -m "$DEMO" -p "白日依山尽，" -n 24 --temp 0 -t 1
cp "$W/out" "$W/g1"
expect_ok gen-greedy-t2 "$CALPACA" generate -m "$DEMO" -p "白日依山尽，" -n 24 --temp 0 -t 2
cmp -s "$W/out" "$W/g1" && ok || bad "greedy output depends on thread count"
expect_ok gen-ref "$CALPACA" generate -m "$DEMO" -p "白日依山尽，" -n 24 --temp 0 --reference --kv-type f32
expect_ok gen-seed1 "$CALPACA" generate -m "$DEMO" -p "你好" -n 24 --temp 0.8 --seed 7
cp "$W/out" "$W/s1"
expect_ok gen-seed2 "$CALPACA" generate -m "$DEMO" -p "你好" -n 24 --temp 0.8 --seed 7
cmp -s "$W/out" "$W/s1" && ok || bad "same seed gave different text"
grep -q "24 generated" "$W/err" && ok || bad "generate did not report 24 tokens: $(cat "$W/err")"
# batch mode writes [{"Input","Output"}]
printf '为什么要减少污染，保护环境？\n\n介绍一下北京\n' >"$W/in.txt"
expect_ok gen-batch "$CALPACA" generate -m "$DEMO" --with-prompt --input-file "$W/in.txt" --output-file "$W/pred.json" -n 8 --temp 0
python3 - "$W/pred.json" <<'PY' && ok || bad "batch output format"
import json, sys
d = json.load(open(sys.argv[1], encoding="utf-8"))
assert isinstance(d, list) and len(d) == 2, d
assert all(set(x) == {"Input", "Output"} for x in d)
assert d[0]["Input"].startswith("<s>[INST] <<SYS>>\nYou are a helpful assistant. 你是一个乐于助人的助手。\n<</SYS>>\n\n为什么"), d[0]["Input"]
assert d[0]["Input"].endswith(" [/INST]")
PY

# --- chat, scripted through stdin: two turns, /reset, /exit
printf '你好\n/reset\n介绍一下北京\n/exit\nnever read\n' | timeout 60 "$CALPACA" chat -m "$DEMO" -n 8 --temp 0 >"$W/chat.out" 2>"$W/chat.err"
[ $? -eq 0 ] && [ "$(wc -l <"$W/chat.out")" -eq 2 ] && ok || bad "chat script: $(cat "$W/chat.err")"
printf '一\n二\n三\n四\n五\n' | timeout 60 "$CALPACA" chat -m "$DEMO" -n 64 -c 96 --temp 0 >"$W/chat.out" 2>"$W/chat.err"
[ $? -eq 0 ] && [ "$(wc -l <"$W/chat.out")" -eq 5 ] && ok || bad "chat with history truncation: $(cat "$W/chat.err")"

# --- bad input: one line, exit 1
head -c 1000 "$DEMO" >"$W/trunc.gguf"
expect_error truncated-gguf "does not fit" "$CALPACA" info "$W/trunc.gguf"
expect_error truncated-model "trunc.gguf" "$CALPACA" generate -m "$W/trunc.gguf" -p hi
head -c 4000000 "$DEMO" >"$W/trunc2.gguf"
expect_error truncated-data "truncated file: tensor" "$CALPACA" generate -m "$W/trunc2.gguf" -p hi
printf 'not a gguf at all' >"$W/garbage.gguf"
expect_error corrupt-gguf "bad magic" "$CALPACA" chat -m "$W/garbage.gguf"
expect_error missing-file "cannot open" "$CALPACA" info "$W/nope.gguf"
expect_error vocab-only "vocabulary-only" "$CALPACA" generate -m "$FIX/llama-cpp-vocab/ggml-vocab-llama-spm.gguf" -p hi
expect_error vocab-mismatch "49954 pieces but model" "$CALPACA" generate -m "$DEMO" --vocab "$FIX/tokenizers/chinese-alpaca-v1/tokenizer.model" -p hi
expect_error unknown-template "unknown chat template" "$CALPACA" chat -m "$DEMO" --template vicuna
expect_error prompt-too-long "context" "$CALPACA" generate -m "$DEMO" -c 16 -p "$(printf '白日依山尽，黄河入海流。欲穷千里目，更上一层楼。%.0s' 1 2 3)"
expect_error invalid-utf8 "invalid UTF-8" "$CALPACA" generate -m "$DEMO" -p "$(printf 'ab\xff')"
expect_error invalid-utf8-tok "invalid UTF-8" "$CALPACA" tokenize --vocab "$V2" "$(printf '\xe4\xbd')"
expect_error bad-temp "temperature" "$CALPACA" generate -m "$DEMO" -p hi --temp -1
expect_error bad-ids "not a token id" "$CALPACA" logits -m "$DEMO" --ids 1,x --out "$W/x.npy"
expect_error big-id "outside the vocabulary" "$CALPACA" logits -m "$DEMO" --ids 1,99999999 --out "$W/x.npy"
expect_error bad-model-file "not a SentencePiece model" "$CALPACA" tokenize --vocab "$W/garbage.gguf" hi
# a non-llama architecture
python3 - "$W/gpt2.gguf" <<'PY'
import struct, sys
def s(x): b = x.encode(); return struct.pack('<Q', len(b)) + b
kv = s('general.architecture') + struct.pack('<I', 8) + s('gpt2')
open(sys.argv[1], 'wb').write(b'GGUF' + struct.pack('<IQQ', 3, 0, 1) + kv)
PY
expect_error non-llama "architecture 'gpt2' is not supported" "$CALPACA" generate -m "$W/gpt2.gguf" -p hi
# invalid UTF-8 in a chat line: the line is refused, the chat goes on
printf 'ab\xff\n你好\n' | timeout 60 "$CALPACA" chat -m "$DEMO" -n 4 --temp 0 >"$W/out" 2>"$W/err"
[ $? -eq 0 ] && grep -q "not valid UTF-8" "$W/err" && [ "$(wc -l <"$W/out")" -eq 1 ] && ok || bad "chat invalid UTF-8 line"

echo "e2e cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
