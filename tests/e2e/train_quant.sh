#!/usr/bin/env bash
# End-to-end test of training on a frozen quantized base (QLoRA-style): the tiny model of train.sh,
# quantized with `calpaca quantize` to Q8_0 and Q4_0 (llama.cpp's mix: the output head Q6_K, here Q8_0
# as 256-element blocks do not divide dim 32), trained
# 3 steps with the same seed as the f32 base; the losses are finite and close to the f32 base's,
# the adapter is written, the result does not depend on the thread count, frozen quantized
# token_embd/output work, and `train eval` runs on the quantized base with the adapter.
# Usage: train_quant.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
expect_ok() {
    local name=$1; shift
    if timeout 120 "$@" >"$W/out" 2>"$W/err"; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}

"$CALPACA" make-random-model --vocab "$FIX/tokenizers/llama/tokenizer.model" -o "$W/f32.gguf" --dim 32 --layers 2 \
    --heads 4 --kv-heads 2 --ff 64 --ctx 128 --type f32 --std 0.05 >/dev/null 2>&1 || bad "make-random-model"
for q in q8_0 q4_0; do
    expect_ok "quantize $q" "$CALPACA" quantize "$W/f32.gguf" "$W/$q.gguf" "$q" -t 2
done
head -n 60 "$FIX/corpus/sample.txt" >"$W/corpus.txt"
PT=(train pt --data "$W/corpus.txt" --block-size 32 --grad-accum 2 --lr 1e-3 --seed 7 --steps 3 --save-every 0 -q)

for b in f32 q8_0 q4_0; do
    expect_ok "train on $b" "$CALPACA" "${PT[@]}" -m "$W/$b.gguf" -o "$W/$b" -t 2
    [ -s "$W/$b/adapter_model.safetensors" ] && [ -s "$W/$b/adapter_config.json" ] && ok || bad "$b: no adapter written"
done
# the loss of every step is finite and within 0.2% (Q8_0) / 1% (Q4_0) of the f32 base's
for b in q8_0 q4_0; do
    tol=$([ $b = q8_0 ] && echo 0.002 || echo 0.01)
    python3 - "$W/f32/train_log.csv" "$W/$b/train_log.csv" "$tol" <<'PY' && ok || bad "$b: losses vs f32"
import csv, math, sys
ref = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[1]))]
got = [float(r["loss"]) for r in csv.DictReader(open(sys.argv[2]))]
tol = float(sys.argv[3])
assert len(ref) == len(got) == 3, (ref, got)
for a, b in zip(got, ref):
    assert math.isfinite(a) and abs(a - b) <= tol * abs(b), (got, ref)
assert got != ref, "identical to the f32 base: the quantized weights were not used"
print("losses", got, "f32", ref)
PY
done
# thread-count independence on a quantized base
expect_ok "q4_0 1 thread" "$CALPACA" "${PT[@]}" -m "$W/q4_0.gguf" -o "$W/q4_0-t1" -t 1
cmp -s "$W/q4_0/adapter_model.safetensors" "$W/q4_0-t1/adapter_model.safetensors" && ok ||
    bad "q4_0: the adapter differs between 1 and 2 threads"
# frozen quantized token_embd (Q4_0) and output (Q8_0): LoRA only
expect_ok "q4_0 LoRA only" "$CALPACA" "${PT[@]}" -m "$W/q4_0.gguf" -o "$W/q4_0-lora" -t 2 --no-modules-to-save
python3 - "$W/q4_0-lora/train_log.csv" <<'PY' && ok || bad "q4_0 LoRA only: loss not finite"
import csv, math, sys
assert all(math.isfinite(float(r["loss"])) for r in csv.DictReader(open(sys.argv[1])))
PY
# eval on the fly on the quantized base
expect_ok "eval q4_0 + adapter" "$CALPACA" train eval -m "$W/q4_0.gguf" --lora "$W/q4_0" --data "$W/corpus.txt" \
    --block-size 32 -t 2
grep -Eq "loss [0-9]" "$W/out" && ok || bad "eval: no loss printed: $(cat "$W/out")"

echo "e2e train_quant: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
