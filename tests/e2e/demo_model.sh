#!/usr/bin/env bash
# The bundled model (models/calpaca-demo.gguf, what README command (a) chats with) is the trained
# demo its card describes: the card's sha256, the shape and chat template, a one-turn chat in the
# Alpaca-2 format that produces text, and held-out perplexity below the unigram baseline of the
# card (2106) while the random placeholder it replaced is far above it.
# Usage: demo_model.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
MODEL=$SRC/models/calpaca-demo.gguf
CARD=$SRC/models/README.md
# a copy in the scratch dir: train eval caches the tokenized text next to its input
cp "$SRC/tests/fixtures/corpus/heldout-100k.txt" "$W/heldout.txt"
HELD=$W/heldout.txt
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# the card names the file's sha256
sum=$(sha256sum "$MODEL" | cut -d' ' -f1)
if grep -q "$sum" "$CARD"; then ok; else bad "models/README.md does not give the bundled file's sha256 $sum"; fi
size=$(stat -c %s "$MODEL")
if [ "$size" -le $((30 * 1024 * 1024)) ]; then ok; else bad "models/calpaca-demo.gguf is $size bytes (limit 30 MiB)"; fi

# shape and template as the card says
"$CALPACA" info "$MODEL" >"$W/info" 2>&1 || bad "info failed: $(head -c 300 "$W/info")"
grep -q "vocab 55296, embd 128, layers 4, heads 4 (kv 2), ff 352" "$W/info" && ok || bad "unexpected shape: $(grep '^llama:' "$W/info")"
grep -q 'calpaca.chat_template *"alpaca-2"' "$W/info" && ok || bad "chat template is not alpaca-2"

# one chat turn: some text comes back
printf '请介绍一下北京。\n' | timeout 120 "$CALPACA" chat -m "$MODEL" --temp 0 -n 16 -t 2 >"$W/chat" 2>"$W/chat.err"
rc=$?
if [ $rc -eq 0 ] && [ -s "$W/chat" ]; then ok; else bad "chat: exit $rc, $(wc -c <"$W/chat") bytes; $(head -c 300 "$W/chat.err")"; fi

# held-out perplexity: trained model below the unigram baseline, placeholder far above
ppl() { "$CALPACA" train eval -m "$1" --data "$HELD" --kind pt --block-size 256 -t 2 2>/dev/null | sed -n 's/.* perplexity \([0-9.]*\) .*/\1/p' | tail -n 1; }
p=$(ppl "$MODEL")
if [ -n "$p" ] && awk -v p="$p" 'BEGIN { exit !(p < 2106) }'; then ok; else bad "held-out perplexity '$p' is not below the unigram baseline 2106"; fi
q=$(ppl "$SRC/tests/fixtures/models/calpaca-demo.gguf")
if [ -n "$q" ] && awk -v q="$q" 'BEGIN { exit !(q > 1e6) }'; then ok; else bad "placeholder perplexity '$q' (expected > 1e6: the check would not tell a random model)"; fi

echo "e2e demo_model: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
