#!/usr/bin/env bash
# Recipe of the bundled demo model (issue 7, item 8), made only with calpaca's own commands from
# ../shared/data: a small llama with the Chinese-LLaMA-2 tokenizer (55296 pieces)
#   1. pre-trained from random weights on corpus-zh, in rounds of LoRA (r 64, all seven projections)
#      + full token_embd/output training, each round merged into the base before the next, so the
#      low-rank updates accumulate (`calpaca train pt` → `calpaca merge-lora`);
#   2. instruction-tuned with LoRA on instructions-zh with the Alpaca-2 template (`calpaca train sft`);
#   3. merged (F16, chat template alpaca-2) and quantized to Q8_0 (`calpaca quantize`).
# Loss plots and the held-out perplexities land in $WORK. Every step is seeded: the same machine,
# thread count and inputs reproduce the same file. Re-running resumes the step that was interrupted
# (each training step checkpoints every 50 optimizer steps).
#
# Budget: the defaults below (PT_ROUNDS x PT_STEPS x 8 x 256 tokens, then SFT_STEPS x 8 sequences) took
# 72.6 minutes with 2 threads on the 2-core development VM (models/README.md); about 2.5 hours allows
# e.g. PT_ROUNDS=5 or PT_STEPS=600. `scripts/demo-model-card.sh` then prints the model card's figures.
# Usage: scripts/train-demo-model.sh [OUT.gguf]   (default models/calpaca-demo.gguf)
#   env: CALPACA (build/calpaca) DATA (../shared/data) WORK (build/demo-train) THREADS (2)
#        DIM LAYERS HEADS KV FF PT_ROUNDS PT_STEPS SFT_STEPS PT_LINES
set -euo pipefail
cd "$(dirname "$0")/.."
CALPACA=${CALPACA:-build/calpaca}
DATA=${DATA:-../shared/data}
W=${WORK:-build/demo-train}
T=${THREADS:-2}
OUT=${1:-models/calpaca-demo.gguf}
DIM=${DIM:-128} LAYERS=${LAYERS:-4} HEADS=${HEADS:-4} KV=${KV:-2} FF=${FF:-352}
PT_ROUNDS=${PT_ROUNDS:-3} PT_STEPS=${PT_STEPS:-300} SFT_STEPS=${SFT_STEPS:-300} PT_LINES=${PT_LINES:-120000}
TOK=tests/fixtures/tokenizers/chinese-llama-2/tokenizer.model
mkdir -p "$W"

# --- data (deterministic selections; held-out text never enters training)
if [ ! -f "$W/pt.txt" ]; then
    (   # head closes the pipe early: SIGPIPE upstream is expected here
        set +o pipefail
        cat "$DATA"/corpus-zh/modern/*.txt "$DATA"/corpus-zh/tech/*.txt "$DATA"/corpus-zh/classical/*.txt |
            awk 'length($0) >= 8' | awk 'NR % 3 == 0' | head -n "$PT_LINES" >"$W/pt.tmp"
    )
    mv "$W/pt.tmp" "$W/pt.txt"
    head -n 2000 "$DATA/corpus-zh/heldout/heldout-mixed.txt" >"$W/heldout.txt"
    head -n 200 "$W/heldout.txt" >"$W/heldout-eval.txt"   # the in-training eval: small, so it stays cheap
    python3 - "$DATA/instructions-zh/alpaca_chinese_52k_open-chinese.json" "$W" <<'PY'
import json, sys
recs = [r for r in json.load(open(sys.argv[1], encoding="utf-8")) if r.get("output")]
json.dump(recs[:-300], open(sys.argv[2] + "/sft-train.json", "w", encoding="utf-8"), ensure_ascii=False)
json.dump(recs[-300:], open(sys.argv[2] + "/sft-dev.json", "w", encoding="utf-8"), ensure_ascii=False)
PY
fi

# --- random base (F32)
[ -f "$W/base0.gguf" ] || "$CALPACA" make-random-model --vocab "$TOK" --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" \
    --kv-heads "$KV" --ff "$FF" --ctx 512 --std 0.02 --seed 1 --type f32 -o "$W/base0.gguf"

resume_flag() { [ -d "$1/checkpoints" ] && echo --resume || true; }

# --- pre-training rounds
for r in $(seq 1 "$PT_ROUNDS"); do
    prev=$W/base$((r - 1)).gguf
    [ -f "$W/base$r.gguf" ] && continue
    "$CALPACA" train pt -m "$prev" --data "$W/pt.txt" --eval-data "$W/heldout-eval.txt" -o "$W/pt$r" \
        --block-size 256 --lora-r 64 --lora-alpha 128 --lora-dropout 0.05 --lr 2e-3 --warmup-ratio 0.05 \
        --weight-decay 0.01 --batch-size 1 --grad-accum 8 --steps "$PT_STEPS" --save-every 50 --eval-every 100 \
        --no-recompute \
        --seed "$r" -t "$T" $(resume_flag "$W/pt$r")
    "$CALPACA" train plot "$W/pt$r/train_log.csv" -o "$W/pt$r-loss.png"
    "$CALPACA" merge-lora --base "$prev" --lora "$W/pt$r" --outtype f32 --template none --no-hash -o "$W/base$r.gguf"
done
base=$W/base$PT_ROUNDS.gguf

# --- instruction tuning (Alpaca-2 template, prompt tokens ignored in the loss)
if [ ! -f "$W/sft/adapter_model.safetensors" ]; then
    "$CALPACA" train sft -m "$base" --data "$W/sft-train.json" --eval-data "$W/sft-dev.json" -o "$W/sft" \
        --template alpaca-2 --max-seq-length 256 --lora-r 16 --lora-alpha 32 --lora-dropout 0.05 --lr 5e-4 \
        --warmup-ratio 0.03 --weight-decay 0 --batch-size 1 --grad-accum 8 --steps "$SFT_STEPS" --save-every 50 --no-recompute \
        --eval-every 100 --seed 11 -t "$T" $(resume_flag "$W/sft")
fi
"$CALPACA" train plot "$W/sft/train_log.csv" -o "$W/sft-loss.png"

# --- merge, quantize
"$CALPACA" merge-lora --base "$base" --lora "$W/sft" --outtype f16 --template alpaca-2 --no-hash \
    --name "calpaca-demo (tiny, trained by scripts/train-demo-model.sh)" -o "$W/merged-f16.gguf"
"$CALPACA" quantize "$W/merged-f16.gguf" "$OUT" Q8_0 -t "$T"
"$CALPACA" perplexity -m "$OUT" -f "$W/heldout.txt" --chunks 100 -t "$T" | tail -n 3 || true
echo "demo model: $OUT; loss plots: $W/pt*-loss.png $W/sft-loss.png"
