#!/usr/bin/env bash
# End-to-end tests of convert / merge-lora / sha256 / --lora on the fixtures of
# tools/reference/make_merge_fixtures.py: every input layout, every output format, the
# in-memory adapters, integrity checks and the bad inputs (one-line errors, no partial output).
# Usage: convert_merge.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
M=$SRC/tests/fixtures/merge
ZH=$SRC/tests/fixtures/tokenizers/chinese-llama-v1/tokenizer.model
ALPACA_TOK=$SRC/tests/fixtures/tokenizers/chinese-alpaca-v1/tokenizer.model
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_error() {  # NAME PATTERN CMD...: exit 1, one stderr line containing PATTERN
    local name=$1 pat=$2; shift 2
    timeout 120 "$@" >"$W/out" 2>"$W/err" </dev/null
    local rc=$?
    if [ $rc -ne 1 ]; then bad "$name: exit code $rc (want 1); stderr: $(head -c 300 "$W/err")"; return; fi
    if [ "$(wc -l <"$W/err")" -ne 1 ]; then bad "$name: want one stderr line: $(head -c 400 "$W/err")"; return; fi
    if ! grep -qF -- "$pat" "$W/err"; then bad "$name: stderr lacks '$pat': $(cat "$W/err")"; return; fi
    ok
}
expect_ok() {
    local name=$1; shift
    if timeout 120 "$@" >"$W/out" 2>"$W/err" </dev/null; then ok; else bad "$name: exit $? $(head -c 400 "$W/err")"; fi
}
no_leftovers() {  # NAME PREFIX: nothing named PREFIX* in $W
    if compgen -G "$W/$2*" >/dev/null; then bad "$1: left behind: $(ls -d "$W/$2"*)"; else ok; fi
}

for sub in convert merge-lora sha256; do
    if "$CALPACA" "$sub" --help | grep -q "Examples:"; then ok; else bad "$sub --help lacks examples"; fi
done

# --- convert every layout; the printed hash is the file's
for b in base-st-f16 base-st-bf16-sharded base-bin-f32 base-bin-f16-sharded base-meta; do
    expect_ok "convert $b" "$CALPACA" convert "$M/$b" --name base --ctx 256 -o "$W/$b.gguf"
    if [ "$(cut -d' ' -f1 "$W/out")" = "$(sha256sum "$W/$b.gguf" | cut -d' ' -f1)" ]; then ok; else bad "convert $b: printed hash differs"; fi
done
for b in base-st-bf16-sharded base-bin-f32 base-bin-f16-sharded base-meta; do
    if cmp -s "$W/base-st-f16.gguf" "$W/$b.gguf"; then ok; else bad "convert $b differs from base-st-f16"; fi
done
expect_ok "convert q8_0" "$CALPACA" convert "$M/base-st-f16" --outtype q8_0 --no-hash -o "$W/q8.gguf"
if "$CALPACA" info "$W/q8.gguf" | grep -q "blk.0.attn_q.weight *Q8_0"; then ok; else bad "q8_0 output lacks Q8_0 tensors"; fi

# --- merge in every output format
expect_ok "merge gguf" "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$M/lora-plus,$M/lora-alpaca" --name pa -o "$W/pa.gguf"
if "$CALPACA" info "$W/pa.gguf" | grep -q "vocab 601"; then ok; else bad "merged vocab is not 601"; fi
expect_ok "merge hf" "$CALPACA" merge-lora --base "$M/base-bin-f16-sharded" --lora "$M/lora-plus" --lora "$M/lora-alpaca" \
    --format hf --shard-size 40KB -o "$W/pa-hf"
for f in config.json model.safetensors.index.json tokenizer.model tokenizer_config.json special_tokens_map.json generation_config.json; do
    if [ -f "$W/pa-hf/$f" ]; then ok; else bad "merge hf: no $f"; fi
done
if python3 -c "import json,sys; c=json.load(open(sys.argv[1])); sys.exit(0 if c['vocab_size']==601 else 1)" "$W/pa-hf/config.json"; then ok; else bad "hf config vocab_size"; fi
expect_ok "convert merged hf" "$CALPACA" convert "$W/pa-hf" --name pa --no-hash -o "$W/pa-from-hf.gguf"
if cmp -s "$W/pa.gguf" "$W/pa-from-hf.gguf"; then ok; else bad "hf round trip changed the tensors"; fi
expect_ok "merge pth" "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$M/lora-plus,$M/lora-alpaca" --format pth --pth-shards 2 -o "$W/pa-pth"
if python3 - "$W/pa-pth" <<'PY'
import sys, zipfile, pickletools, io, json, os
d = sys.argv[1]
for i in (0, 1):
    z = zipfile.ZipFile(os.path.join(d, "consolidated.%02d.pth" % i))
    assert z.testzip() is None                      # every CRC is right
    names = z.namelist()
    assert names[0] == "consolidated.%02d/version" % i, names[0]
    pkl = z.read("consolidated.%02d/data.pkl" % i)
    pickletools.dis(pkl, out=io.StringIO())         # a well-formed pickle
    assert b"tok_embeddings.weight" in pkl and b"layers.1.attention.wq.weight" in pkl
p = json.load(open(os.path.join(d, "params.json")))
assert p["dim"] == 32 and p["n_layers"] == 2 and p["vocab_size"] == -1, p
PY
then ok; else bad "pth output is not a valid torch zip"; fi
expect_ok "convert merged pth" "$CALPACA" convert "$W/pa-pth" --name pa --ctx 256 --no-hash -o "$W/pa-from-pth.gguf"
if cmp -s "$W/pa.gguf" "$W/pa-from-pth.gguf"; then ok; else bad "pth round trip changed the tensors"; fi

# --- a 49953-vocabulary model from a 32000 base that `chat` runs with the 49953 tokenizer
expect_ok "merge real vocab" "$CALPACA" merge-lora --base "$M/real-vocab/base" --lora "$M/real-vocab/lora" --vocab "$ZH" -o "$W/zh.gguf"
if "$CALPACA" info "$W/zh.gguf" | grep -q "vocab 49953"; then ok; else bad "real-vocab merge: vocab is not 49953"; fi
if printf '你好\n' | timeout 60 "$CALPACA" chat -m "$W/zh.gguf" --template alpaca -n 4 --temp 0 >"$W/chat.out" 2>"$W/chat.err"; then ok; else bad "chat on the 49953 model: $(tail -3 "$W/chat.err")"; fi
expect_error "alpaca tokenizer on a llama merge" "not interchangeable" \
    "$CALPACA" merge-lora --base "$M/real-vocab/base" --lora "$M/real-vocab/lora" --vocab "$ALPACA_TOK" -o "$W/zh-bad.gguf"

# --- --lora on generate: the same text as the merged file
expect_ok "convert base f16" "$CALPACA" convert "$M/base-st-f16" --no-hash -o "$W/base.gguf"
"$CALPACA" generate -m "$W/pa.gguf" -p "Hello world" -n 12 --temp 0 >"$W/gen-merged.txt" 2>/dev/null
"$CALPACA" generate -m "$W/base.gguf" --lora "$M/lora-plus,$M/lora-alpaca" -p "Hello world" -n 12 --temp 0 >"$W/gen-lora.txt" 2>"$W/gen-lora.err"
if [ -s "$W/gen-merged.txt" ] && cmp -s "$W/gen-merged.txt" "$W/gen-lora.txt"; then ok; else bad "--lora output differs from the merged model: $(cat "$W/gen-lora.err" | tail -2)"; fi

# --- --lora on serve: the same completion as a server on the merged file
source "$SRC/tests/serve/server.sh"
trap stop_all_servers EXIT
complete() {  # complete PORT -> text of a greedy 12-token completion of "Hello world"
    python3 - "$1" <<'PY'
import json, sys, urllib.request
body = json.dumps({"prompt": "Hello world", "max_tokens": 12, "temperature": 0}).encode()
req = urllib.request.Request("http://127.0.0.1:%s/v1/completions" % sys.argv[1], body, {"Content-Type": "application/json"})
print(json.load(urllib.request.urlopen(req, timeout=60))["choices"][0]["text"])
PY
}
if start_server merged -m "$W/pa.gguf" -t 1 -P 1 -q && start_server withlora -m "$W/base.gguf" --lora "$M/lora-plus,$M/lora-alpaca" -t 1 -P 1 -q; then
    complete "$merged_PORT" >"$W/serve-merged.txt" 2>&1
    complete "$withlora_PORT" >"$W/serve-lora.txt" 2>&1
    if [ -s "$W/serve-merged.txt" ] && cmp -s "$W/serve-merged.txt" "$W/serve-lora.txt"; then ok; else bad "serve --lora differs from the merged model: $(cat "$W/serve-merged.txt" "$W/serve-lora.txt" | tail -4)"; fi
else
    bad "serve --lora: a server did not start"
fi
stop_server merged
stop_server withlora

# --- integrity
(cd "$M" && sha256sum lora-plus/adapter_model.bin lora-plus/tokenizer.model) >"$W/SUMS"
expect_ok "sha256 --check" "$CALPACA" sha256 --check "$W/SUMS" "$M/lora-plus/adapter_model.bin" "$M/lora-plus/tokenizer.model"
if grep -q "adapter_model.bin: OK" "$W/out"; then ok; else bad "sha256 --check output: $(cat "$W/out")"; fi
H=$(sha256sum "$M/lora-plus/tokenizer.model" | cut -d' ' -f1)
printf '| Model | File | SHA256 |\n|---|---|---|\n| Chinese-LLaMA-Plus | tokenizer.model | %s |\n| Chinese-LLaMA-Plus | adapter_model.bin | %s |\n' \
    "$H" "0000000000000000000000000000000000000000000000000000000000000000" >"$W/SHA256.md"
timeout 60 "$CALPACA" sha256 --check "$W/SHA256.md" "$M/lora-plus/tokenizer.model" "$M/lora-plus/adapter_model.bin" >"$W/out" 2>"$W/err"
if [ $? -eq 1 ] && grep -q "tokenizer.model: OK" "$W/out" && grep -q "adapter_model.bin: FAILED" "$W/out"; then ok; else bad "SHA256.md check: $(cat "$W/out" "$W/err")"; fi
timeout 60 "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$M/lora-plus" --verify-sha256 "$W/SHA256.md" -o "$W/verify.gguf" >"$W/out" 2>"$W/err"
if [ $? -eq 1 ] && tail -1 "$W/err" | grep -q "calpaca: error: --verify-sha256: .*tokenizer.model: .* with a different hash: the file is corrupt"; then ok; else bad "--verify-sha256 mismatch: $(cat "$W/err")"; fi
no_leftovers "--verify-sha256 mismatch" verify

# --- bad inputs: one line, exit 1, no output left behind
mkdir -p "$W/evil" && cp "$M/base-bin-f32/config.json" "$M/base-bin-f32/tokenizer.model" "$W/evil/" && cp "$M/bad/evil.bin" "$W/evil/pytorch_model.bin"
rm -f /tmp/calpaca-evil-pickle-ran
expect_error "evil pickle" "refusing pickle global 'posix.system'" "$CALPACA" convert "$W/evil" -o "$W/evil.gguf"
if [ -e /tmp/calpaca-evil-pickle-ran ]; then bad "the evil pickle ran"; else ok; fi
mkdir -p "$W/zipped" && cp "$M/base-bin-f32/config.json" "$W/zipped/" && cp "$M/bad/compressed.bin" "$W/zipped/pytorch_model.bin"
expect_error "compressed zip" "is compressed (zip method 8)" "$CALPACA" convert "$W/zipped" -o "$W/zipped.gguf"
cp -r "$M/base-st-bf16-sharded" "$W/noshard" && rm "$W/noshard/model-00002-of-00003.safetensors"
expect_error "missing shard" "missing shard model-00002-of-00003.safetensors" "$CALPACA" convert "$W/noshard" -o "$W/noshard.gguf"
expect_error "adapter for another size" "shape mismatch for tensor 'model.layers.0.self_attn.q_proj.weight'" \
    "$CALPACA" merge-lora --base "$M/real-vocab/base" --lora "$M/lora-qv" --vocab "$ZH" -o "$W/size.gguf"
cp -r "$M/lora-qv" "$W/nor" && python3 -c "import json,sys; p=sys.argv[1]; c=json.load(open(p)); del c['r']; json.dump(c, open(p,'w'))" "$W/nor/adapter_config.json"
expect_error "adapter without r" "LoRA rank 'r' is missing" "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$W/nor" -o "$W/nor.gguf"
head -c 100 "$M/base-st-f16/model.safetensors" >"$W/trunc.safetensors"
mkdir -p "$W/trunc" && cp "$M/base-st-f16/config.json" "$W/trunc/" && mv "$W/trunc.safetensors" "$W/trunc/model.safetensors"
expect_error "truncated safetensors header" "runs past the end of the file" "$CALPACA" convert "$W/trunc" -o "$W/trunc.gguf"
no_leftovers "bad inputs" "evil.gguf"
no_leftovers "bad inputs" "size.gguf"
no_leftovers "bad inputs" "nor.gguf"

# --- disk full while writing (a file-size limit makes write() fail with EFBIG): no partial output
(ulimit -f 64; trap '' XFSZ; exec "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$M/lora-plus" -o "$W/full.gguf") >"$W/out" 2>"$W/err"
if [ $? -eq 1 ] && grep -q "write failed" "$W/err"; then ok; else bad "disk full: $(cat "$W/err")"; fi
no_leftovers "disk full gguf" full.gguf
(ulimit -f 64; trap '' XFSZ; exec "$CALPACA" merge-lora --base "$M/base-st-f16" --lora "$M/lora-plus" --format hf -o "$W/fullhf") >"$W/out" 2>"$W/err"
if [ $? -eq 1 ]; then ok; else bad "disk full hf: exit 0"; fi
no_leftovers "disk full hf" fullhf

echo "e2e convert_merge: $pass passed, $fail failed"
[ $fail -eq 0 ]
