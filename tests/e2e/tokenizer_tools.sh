#!/usr/bin/env bash
# End-to-end tests of the vocabulary extension tools: `calpaca tokenizer train|merge|stats` and
# `calpaca resize-vocab`, checked against Debian's sentencepiece command-line tools (spm_train,
# spm_encode, spm_export_vocab: package `sentencepiece`) and the published tokenizer hashes.
# Usage: tokenizer_tools.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures
TOK=$FIX/tokenizers
LLAMA=$TOK/llama/tokenizer.model
ZH_SP=$TOK/chinese_sp.model
V1=$TOK/chinese-llama-v1/tokenizer.model
ALPACA=$TOK/chinese-alpaca-v1/tokenizer.model
V2=$TOK/chinese-llama-2/tokenizer.model
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_error NAME PATTERN CMD... : exit code 1, exactly one stderr line containing PATTERN
expect_error() {
    local name=$1 pat=$2; shift 2
    timeout 120 "$@" >"$W/out" 2>"$W/err" </dev/null
    local rc=$? lines
    lines=$(wc -l <"$W/err")
    if [ $rc -ne 1 ]; then bad "$name: exit code $rc (want 1); stderr: $(head -c 300 "$W/err")"; return; fi
    if [ "$lines" -ne 1 ]; then bad "$name: $lines stderr lines (want 1): $(head -c 300 "$W/err")"; return; fi
    if ! grep -q -- "$pat" "$W/err"; then bad "$name: stderr lacks '$pat': $(cat "$W/err")"; return; fi
    ok
}
expect_ok() {
    local name=$1; shift
    if timeout 300 "$@" >"$W/out" 2>"$W/err" </dev/null; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}
same() {  # same NAME FILE1 FILE2
    if cmp -s "$2" "$3"; then ok; else bad "$1: $2 and $3 differ"; fi
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

for tool in spm_train spm_encode spm_export_vocab sha256sum; do
    command -v "$tool" >/dev/null || bad "$tool not found (scripts/install-deps.sh installs the sentencepiece package)"
done

# --- help with examples
for sub in "tokenizer" "tokenizer train" "tokenizer merge" "tokenizer stats" "resize-vocab"; do
    # shellcheck disable=SC2086
    if "$CALPACA" $sub --help | grep -q "Examples:"; then ok; else bad "$sub --help lacks examples"; fi
done

# --- merge: the published Chinese-LLaMA and Chinese-Alpaca tokenizers, byte for byte
expect_ok merge "$CALPACA" tokenizer merge --base "$LLAMA" --add "$ZH_SP" -o "$W/llama-zh/tokenizer.model"
grep -q "32000 base pieces + 17953 new of 20000 = 49953 pieces" "$W/err" && ok || bad "merge summary: $(cat "$W/err")"
[ "$(sha "$W/llama-zh/tokenizer.model")" = e2676d4ca29ca1750f6ff203328d73b189321dc5776ceede037cbd36541d70c0 ] && ok ||
    bad "merged Chinese-LLaMA tokenizer sha256 $(sha "$W/llama-zh/tokenizer.model")"
same merge-hf-config "$W/llama-zh/tokenizer_config.json" "$TOK/expected/hf-merge/chinese-llama-v1/tokenizer_config.json"
same merge-hf-special "$W/llama-zh/special_tokens_map.json" "$TOK/expected/hf-merge/chinese-llama-v1/special_tokens_map.json"
expect_ok merge-pad "$CALPACA" tokenizer merge --base "$LLAMA" --add "$ZH_SP" --add-pad "[PAD]" -o "$W/alpaca.model" \
    --hf-dir "$W/alpaca-hf"
grep -q "= 49954 pieces, pad '\[PAD\]' = id 49953" "$W/err" && ok || bad "merge --add-pad summary: $(cat "$W/err")"
[ "$(sha "$W/alpaca.model")" = 2d967e855b1213a439df6c8ce2791f869c84b4f3b6cfacf22b86440b8192a2f8 ] && ok ||
    bad "merged Chinese-Alpaca tokenizer sha256 $(sha "$W/alpaca.model")"
same merge-hf-dir-model "$W/alpaca-hf/tokenizer.model" "$W/alpaca.model"
same merge-hf-dir-config "$W/alpaca-hf/tokenizer_config.json" "$TOK/expected/hf-merge/chinese-alpaca-v1/tokenizer_config.json"
same merge-hf-dir-special "$W/alpaca-hf/special_tokens_map.json" "$TOK/expected/hf-merge/chinese-alpaca-v1/special_tokens_map.json"

# --- train: libsentencepiece's trainer gives exactly spm_train's pieces and scores
head -n 1000 "$FIX/corpus/sample.txt" >"$W/corpus.txt"
head -n 400 "$FIX/corpus/sample.txt" | tail -n 200 >"$W/lines.txt"
printf 'The primary use of LLaMA is research on large language models, 2024年。\n白日依山尽，黄河入海流。\n' >>"$W/lines.txt"
# (a) the defaults (chinese_sp.model's settings: unigram, nmt_nfkc) on a small corpus
expect_ok train-unigram "$CALPACA" tokenizer train -f "$W/corpus.txt" --vocab-size 3000 --character-coverage 0.98 \
    -t 2 -o "$W/zh_uni.model"
grep -q "wrote $W/zh_uni.model: 3000 pieces (unigram), 1000 sentences, alphabet [0-9]* characters, character coverage 98\.[0-9]*%" "$W/err" &&
    ok || bad "train summary: $(cat "$W/err")"
spm_train --input="$W/corpus.txt" --model_prefix="$W/ref_uni" --vocab_size=3000 --character_coverage=0.98 \
    --num_threads=2 --train_extremely_large_corpus=true --minloglevel=2 >/dev/null 2>&1 || bad "spm_train (unigram) failed"
spm_export_vocab --model="$W/zh_uni.model" >"$W/uni.vocab" 2>/dev/null || bad "libsentencepiece cannot load the trained unigram model"
spm_export_vocab --model="$W/ref_uni.model" >"$W/ref_uni.vocab" 2>/dev/null
same train-unigram-vs-spm_train "$W/uni.vocab" "$W/ref_uni.vocab"
[ "$(wc -l <"$W/uni.vocab")" -eq 3000 ] && ok || bad "unigram vocab has $(wc -l <"$W/uni.vocab") pieces"
# ... merged into LLaMA's tokenizer (the Chinese-LLaMA recipe): calpaca tokenize == spm_encode
expect_ok merge-trained "$CALPACA" tokenizer merge --base "$LLAMA" --add "$W/zh_uni.model" -o "$W/llama_uni.model" --no-hf-files
[ ! -e "$W/tokenizer_config.json" ] && ok || bad "--no-hf-files still wrote tokenizer_config.json"
spm_encode --model="$W/llama_uni.model" --output_format=id <"$W/lines.txt" >"$W/want.ids" || bad "spm_encode cannot load the merged model"
expect_ok tokenize-merged "$CALPACA" tokenize --vocab "$W/llama_uni.model" -f "$W/lines.txt"
same tokenize-merged-vs-spm_encode "$W/out" "$W/want.ids"
# (b) a LLaMA-style BPE model with byte fallback, which calpaca tokenizes directly
expect_ok train-bpe "$CALPACA" tokenizer train -f "$W/corpus.txt" --vocab-size 4000 --character-coverage 0.98 -t 2 \
    --model-type bpe --byte-fallback --split-digits --normalization identity --keep-extra-whitespaces -o "$W/zh_bpe.model"
spm_train --input="$W/corpus.txt" --model_prefix="$W/ref_bpe" --vocab_size=4000 --character_coverage=0.98 \
    --num_threads=2 --train_extremely_large_corpus=true --model_type=bpe --byte_fallback=true --split_digits=true \
    --normalization_rule_name=identity --remove_extra_whitespaces=false --minloglevel=2 >/dev/null 2>&1 ||
    bad "spm_train (bpe) failed"
spm_export_vocab --model="$W/zh_bpe.model" >"$W/bpe.vocab" 2>/dev/null || bad "libsentencepiece cannot load the trained BPE model"
spm_export_vocab --model="$W/ref_bpe.model" >"$W/ref_bpe.vocab" 2>/dev/null
same train-bpe-vs-spm_train "$W/bpe.vocab" "$W/ref_bpe.vocab"
spm_encode --model="$W/zh_bpe.model" --output_format=id <"$FIX/corpus/sample.txt" >"$W/want_bpe.ids"
expect_ok tokenize-bpe "$CALPACA" tokenize --vocab "$W/zh_bpe.model" -f "$FIX/corpus/sample.txt"
same tokenize-trained-bpe-vs-spm_encode "$W/out" "$W/want_bpe.ids"

# --- stats: token counts are those of sentencepiece's ids of the corpus sample
expect_ok stats "$CALPACA" tokenizer stats --vocab "$LLAMA" --vocab "$V1" --vocab "$V2" -f "$FIX/corpus/sample.txt" -t 2
n_llama=$(wc -w <"$TOK/expected/llama.corpus.ids")
n_v1=$(wc -w <"$TOK/expected/chinese-llama-v1.corpus.ids")
n_v2=$(wc -w <"$TOK/expected/chinese-llama-2.corpus.ids")
grep -q "^| | llama | chinese-llama-v1 | chinese-llama-2 |$" "$W/out" && ok || bad "stats header: $(head -4 "$W/out")"
grep -q "^| tokens | $n_llama | $n_v1 | $n_v2 |$" "$W/out" && ok || bad "stats tokens (want $n_llama $n_v1 $n_v2): $(grep '^| tokens |' "$W/out")"
grep -q "^| vocabulary size | 32000 | 49953 | 55296 |$" "$W/out" && ok || bad "stats vocabulary sizes"
expect_ok stats-json "$CALPACA" tokenizer stats --vocab "$V1" -f "$FIX/corpus/sample.txt" --json
grep -q "\"tokens\": $n_v1," "$W/out" && ok || bad "stats --json: $(head -c 300 "$W/out")"

# --- resize-vocab: LLaMA-vocabulary model → Chinese-LLaMA vocabulary
expect_ok make-model "$CALPACA" make-random-model --vocab "$LLAMA" --dim 32 --layers 2 --heads 4 --ff 64 --std 0.3 \
    --type f32 -o "$W/m32000.gguf"
expect_ok stats-gguf "$CALPACA" tokenizer stats --vocab "$W/m32000.gguf" -f "$FIX/corpus/sample.txt"
grep -q "^| tokens | $n_llama |$" "$W/out" && ok || bad "stats of a GGUF vocabulary: $(grep '^| tokens |' "$W/out")"
expect_ok resize "$CALPACA" resize-vocab -m "$W/m32000.gguf" --vocab "$V1" -o "$W/m49953.gguf"
grep -q "vocabulary 32000 -> 49953 (17953 new rows, init mean, 2 matrices resized)" "$W/err" && ok || bad "resize summary: $(cat "$W/err")"
expect_ok info-resized "$CALPACA" info "$W/m49953.gguf"
grep -q "vocab 49953" "$W/out" && ok || bad "info of the resized model: $(head -5 "$W/out")"
# an old-vocabulary prompt: same ids under both tokenizers, same greedy continuation (the mean
# rows of the head can never win the argmax: their logit is the mean of the old logits)
P="The primary use of LLaMA is research on large language models"
[ "$("$CALPACA" tokenize --vocab "$LLAMA" "$P")" = "$("$CALPACA" tokenize --vocab "$V1" "$P")" ] && ok || bad "prompt tokenizes differently"
expect_ok gen-old "$CALPACA" generate -m "$W/m32000.gguf" -p "$P" -n 16 --temp 0 --repeat-penalty 1 -t 2
cp "$W/out" "$W/gen_old.txt"
expect_ok gen-new "$CALPACA" generate -m "$W/m49953.gguf" -p "$P" -n 16 --temp 0 --repeat-penalty 1 -t 2
same resized-greedy-continuation "$W/out" "$W/gen_old.txt"

# --- bad inputs: one line, exit 1
printf 'not a sentencepiece model' >"$W/junk.model"
expect_error merge-unigram-base "must be a BPE model" "$CALPACA" tokenizer merge --base "$ZH_SP" --add "$ZH_SP" -o "$W/x.model"
expect_error merge-junk "not a SentencePiece model" "$CALPACA" tokenizer merge --base "$W/junk.model" --add "$ZH_SP" -o "$W/x.model"
expect_error merge-missing "not found" "$CALPACA" tokenizer merge --base "$LLAMA" --add "$W/none.model" -o "$W/x.model"
expect_error merge-dup-pad "already in the tokenizer" "$CALPACA" tokenizer merge --base "$LLAMA" --add "$ZH_SP" --add-pad "</s>" -o "$W/x.model"
[ ! -e "$W/x.model" ] && ok || bad "a failed merge left $W/x.model"
expect_error stats-junk "not a SentencePiece model" "$CALPACA" tokenizer stats --vocab "$W/junk.model" -f "$W/lines.txt"
printf 'ok\nbad \xc3\n' >"$W/badutf8.txt"
expect_error stats-utf8 "line 2: invalid UTF-8" "$CALPACA" tokenizer stats --vocab "$LLAMA" -f "$W/badutf8.txt"
expect_error train-missing "input file not found" "$CALPACA" tokenizer train -f "$W/none.txt" -o "$W/x.model"
expect_error train-small-vocab "Vocabulary size is smaller than required_chars" "$CALPACA" tokenizer train -f "$W/corpus.txt" \
    --vocab-size 500 -t 2 -o "$W/x.model"
expect_error train-bad-option "libsentencepiece" "$CALPACA" tokenizer train -f "$W/corpus.txt" --spm-option no_such_flag=1 -o "$W/x.model"
[ ! -e "$W/x.model" ] && ok || bad "a failed train left $W/x.model"
expect_error resize-smaller "fewer than the 49953" "$CALPACA" resize-vocab -m "$W/m49953.gguf" --vocab "$LLAMA" -o "$W/x.gguf"
expect_error resize-not-extending "does not extend the vocabulary" "$CALPACA" resize-vocab -m "$W/m49953.gguf" --vocab "$V2" -o "$W/x.gguf"
expect_error resize-same "nothing to resize" "$CALPACA" resize-vocab -m "$W/m49953.gguf" --vocab "$V1" -o "$W/x.gguf"
expect_error resize-junk-vocab "not a SentencePiece model" "$CALPACA" resize-vocab -m "$W/m32000.gguf" --vocab "$W/junk.model" -o "$W/x.gguf"
expect_error resize-junk-model "junk.model" "$CALPACA" resize-vocab -m "$W/junk.model" --vocab "$V1" -o "$W/x.gguf"
[ ! -e "$W/x.gguf" ] && ok || bad "a failed resize left $W/x.gguf"

echo "e2e tokenizer_tools: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
