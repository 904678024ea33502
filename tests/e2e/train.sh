#!/usr/bin/env bash
# End-to-end tests of `calpaca train`: PT and SFT on a tiny random GGUF, the PEFT adapter layout,
# determinism, checkpoints (atomic, keep-last-K), kill -9 + --resume reproducing the
# uninterrupted run bit for bit, eval loss, the data cache, bad input, and `train plot`.
# Usage: train.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures
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
    if timeout 120 "$@" >"$W/out" 2>"$W/err"; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}

for sub in "train" "train pt" "train sft" "train eval" "train plot"; do
    if $CALPACA $sub --help | grep -q "Examples:"; then ok; else bad "$sub --help lacks examples"; fi
done

# a tiny GQA base with the LLaMA vocabulary (32000 → the v1 "alpaca" template for SFT)
"$CALPACA" make-random-model --vocab "$FIX/tokenizers/llama/tokenizer.model" -o "$W/base.gguf" --dim 32 --layers 2 \
    --heads 4 --kv-heads 2 --ff 64 --ctx 128 --type f16 --std 0.05 >/dev/null 2>&1 || bad "make-random-model"
head -n 120 "$FIX/corpus/sample.txt" >"$W/corpus.txt"
PT=(train pt -m "$W/base.gguf" --data "$W/corpus.txt" --block-size 32 --grad-accum 2 --lr 1e-3 --seed 7 -q)

# --- PT: adapter layout, checkpoints (keep 2), determinism, cache
expect_ok "pt run" "$CALPACA" "${PT[@]}" -o "$W/pt1" --steps 8 --save-every 2 --keep 2 -t 2
[ -f "$W/pt1/adapter_config.json" ] && [ -f "$W/pt1/adapter_model.safetensors" ] && ok || bad "pt: no adapter files"
[ "$(ls "$W/pt1/checkpoints" | tr '\n' ' ')" = "checkpoint-4 checkpoint-6 " ] && ok ||
    bad "pt: checkpoints kept: $(ls "$W/pt1/checkpoints" | tr '\n' ' ') (want checkpoint-4 checkpoint-6)"
ls "$W"/corpus.txt.calpaca-pt-*.cache >/dev/null 2>&1 && ok || bad "pt: no tokenized-data cache next to the input"
python3 - "$W/pt1" <<'PY' && ok || bad "pt: adapter layout"
import json, struct, sys
d = sys.argv[1]
c = json.load(open(d + "/adapter_config.json"))
assert c["r"] == 8 and c["lora_alpha"] == 32 and c["peft_type"] == "LORA" and c["fan_in_fan_out"] is False, c
assert sorted(c["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
assert c["modules_to_save"] == ["embed_tokens", "lm_head"], c
b = open(d + "/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", b[:8])[0]
h = json.loads(b[8:8 + n])
assert h["base_model.model.model.layers.1.self_attn.q_proj.lora_A.weight"]["shape"] == [8, 32]
assert h["base_model.model.model.layers.1.self_attn.k_proj.lora_B.weight"]["shape"] == [16, 8]
assert h["base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"]["shape"] == [8, 64]
assert h["base_model.model.model.embed_tokens.weight"]["shape"] == [32000, 32]
assert h["base_model.model.lm_head.weight"]["shape"] == [32000, 32]
assert len([k for k in h if k != "__metadata__"]) == 2 * 7 * 2 + 2
PY
# --- train → merge-lora (GGUF base) → the merged model's loss equals base + adapter applied on the fly
if "$CALPACA" merge-lora --help >/dev/null 2>&1; then
    expect_ok "merge-lora" "$CALPACA" merge-lora --base "$W/base.gguf" --lora "$W/pt1" --outtype f32 --no-hash -o "$W/merged.gguf"
    expect_ok "eval on the fly" "$CALPACA" train eval -m "$W/base.gguf" --lora "$W/pt1" --data "$W/corpus.txt" --block-size 32 -t 2
    fly=$(awk '{print $2}' "$W/out")
    expect_ok "eval merged" "$CALPACA" train eval -m "$W/merged.gguf" --data "$W/corpus.txt" --block-size 32 -t 2
    merged=$(awk '{print $2}' "$W/out")
    expect_ok "eval base" "$CALPACA" train eval -m "$W/base.gguf" --data "$W/corpus.txt" --block-size 32 -t 2
    plain=$(awk '{print $2}' "$W/out")
    python3 -c "import sys; f,m,b=map(float,sys.argv[1:]); sys.exit(0 if abs(f-m) <= 1e-4*abs(f) and abs(f-b) > 1e-3 else 1)" \
        "$fly" "$merged" "$plain" && ok || bad "merged model loss $merged != on-the-fly $fly (base alone $plain)"
fi
grep -q "^step,epoch,loss,lr,grad_norm" "$W/pt1/train_log.csv" && [ "$(wc -l <"$W/pt1/train_log.csv")" -eq 9 ] && ok ||
    bad "pt: train_log.csv"
expect_ok "pt rerun (cached data, 1 thread)" "$CALPACA" "${PT[@]}" -o "$W/pt2" --steps 8 --save-every 0 -t 1
cmp -s "$W/pt1/adapter_model.safetensors" "$W/pt2/adapter_model.safetensors" && ok ||
    bad "pt: same seed and data gave a different adapter (thread count 2 vs 1)"

# --- kill -9 in the middle of a run, --resume: bit-identical to the uninterrupted run
expect_ok "pt full" "$CALPACA" "${PT[@]}" -o "$W/full" --steps 24 --save-every 3 --lora-dropout 0.1 -t 2
"$CALPACA" "${PT[@]}" -o "$W/killed" --steps 24 --save-every 3 --lora-dropout 0.1 -t 2 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    [ -d "$W/killed/checkpoints/checkpoint-6" ] && break
    sleep 0.05
done
kill -9 $pid 2>/dev/null && killed=1 || killed=0
wait $pid 2>/dev/null
[ "$killed" = 1 ] || echo "note: the run finished before kill -9; resume still checked"
expect_ok "resume" "$CALPACA" "${PT[@]}" -o "$W/killed" --steps 24 --save-every 3 --lora-dropout 0.1 -t 2 --resume
cmp -s "$W/full/adapter_model.safetensors" "$W/killed/adapter_model.safetensors" && ok ||
    bad "resume after kill -9 differs from the uninterrupted run"
[ "$(cut -d, -f1-5 "$W/full/train_log.csv" | md5sum)" = "$(cut -d, -f1-5 "$W/killed/train_log.csv" | md5sum)" ] && ok ||
    bad "resumed train_log.csv losses differ from the uninterrupted run"
ls "$W/killed/checkpoints" | grep -q tmp && bad "a temporary checkpoint directory was left behind" || ok
expect_error "resume with other hyper-parameters" "other data, base model or hyper-parameters" \
    "$CALPACA" "${PT[@]}" -o "$W/killed" --steps 24 --save-every 3 --warmup-steps 1 --resume
expect_error "resume without checkpoint" "no checkpoint" "$CALPACA" "${PT[@]}" -o "$W/empty" --steps 2 --resume

# --- SFT: Alpaca JSON, eval loss, bad records
cat >"$W/sft.json" <<'JSON'
[
 {"instruction": "把下面的句子翻译成英文。", "input": "我爱北京。", "output": "I love Beijing."},
 {"instruction": "What is 2+3?", "input": "", "output": "5"},
 {"instruction": "写一首关于春天的诗。", "output": "春风吹绿了江南岸。"},
 {"instruction": "List three colors.", "input": "", "output": "Red, green and blue."}
]
JSON
expect_ok "sft run" "$CALPACA" train sft -m "$W/base.gguf" --data "$W/sft.json" --eval-data "$W/sft.json" -o "$W/sft" \
    --steps 4 --grad-accum 2 --batch-size 2 --max-seq-length 48 --eval-every 2 --lr 1e-3 -t 2 -q
grep -q "eval loss" "$W/out" && ok || bad "sft: no eval loss in the summary: $(cat "$W/out")"
[ "$(awk -F, 'NR>1 && $9!="" {n++} END {print n}' "$W/sft/train_log.csv")" = 2 ] && ok || bad "sft: eval rows in the log"
printf '{"instruction": "a", "input": "", "output": "b"}\n{"instruction": "c", "input": ""}\n' >"$W/missing.jsonl"
expect_error "sft missing field" "missing.jsonl: record 2: missing field 'output'" \
    "$CALPACA" train sft -m "$W/base.gguf" --data "$W/missing.jsonl" -o "$W/x" --steps 1 -q
printf '[{"instruction": "a", "output": 3}]' >"$W/badtype.json"
expect_error "sft wrong type" "badtype.json: record 1: field 'output' must be a string" \
    "$CALPACA" train sft -m "$W/base.gguf" --data "$W/badtype.json" -o "$W/x" --steps 1 -q
printf '[{"instruction": "a", "output": "b"},' >"$W/broken.json"
expect_error "sft malformed JSON" "broken.json: malformed JSON" \
    "$CALPACA" train sft -m "$W/base.gguf" --data "$W/broken.json" -o "$W/x" --steps 1 -q
expect_error "unknown template" "unknown" \
    "$CALPACA" train sft -m "$W/base.gguf" --data "$W/sft.json" -o "$W/x" --steps 1 --template vicuna -q
expect_error "bad lora target" "unknown LoRA target 'x_proj'" \
    "$CALPACA" "${PT[@]}" -o "$W/x" --steps 1 --lora-targets q_proj,x_proj
expect_error "missing data file" "nope.txt" "$CALPACA" train pt -m "$W/base.gguf" --data "$W/nope.txt" -o "$W/x" --block-size 32 -q
expect_error "block size beyond context" "exceeds the model's context length" \
    "$CALPACA" train pt -m "$W/base.gguf" --data "$W/corpus.txt" -o "$W/x" --block-size 4096 -q

# --- plot
expect_ok "plot" "$CALPACA" train plot "$W/sft/train_log.csv" -o "$W/loss.png"
[ "$(head -c 8 "$W/loss.png" | od -An -tx1 | tr -d ' \n')" = "89504e470d0a1a0a" ] && ok || bad "plot: not a PNG"
printf 'nope\n1,2\n' >"$W/bad.csv"
expect_error "plot bad log" "not a calpaca training log" "$CALPACA" train plot "$W/bad.csv" -o "$W/bad.png"
[ -e "$W/bad.png" ] && bad "plot: output left behind after an error" || ok

echo "e2e train: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
