#!/usr/bin/env bash
# Figures for the bundled model's card (models/README.md), after scripts/train-demo-model.sh:
#   * held-out perplexity of the placeholder (tests/fixtures/models/calpaca-demo.gguf, random
#     weights), the pre-trained base, and the shipped model, with `calpaca train eval` (text lines
#     concatenated into 256-token blocks, as in pre-training) and `calpaca perplexity -c 256`
#     (llama.cpp's method) on tests/fixtures/corpus/heldout-100k.txt, which training never saw;
#   * the unigram baseline on the same tokens (scripts/unigram-baseline.py: add-one-smoothed token
#     frequencies of the pre-training text);
#   * five sample answers (greedy, so they are reproducible) with the model's Alpaca-2 template;
#   * the loss plots: all pre-training rounds as one curve (steps and tokens continued across
#     rounds) and the instruction tuning, written to $PLOTS (default models/).
# Everything else is printed to stdout (Markdown-ready).
# Usage: scripts/demo-model-card.sh [MODEL.gguf]   (default models/calpaca-demo.gguf)
#   env: CALPACA (build/calpaca) WORK (build/demo-train, as train-demo-model.sh) THREADS (2) PLOTS (models)
set -euo pipefail
cd "$(dirname "$0")/.."
CALPACA=${CALPACA:-build/calpaca}
W=${WORK:-build/demo-train}
T=${THREADS:-2}
MODEL=${1:-models/calpaca-demo.gguf}
PLOTS=${PLOTS:-models}
HELD=$W/heldout-100k.txt   # a copy of tests/fixtures/corpus/heldout-100k.txt: train eval caches next to its input
PLACEHOLDER=tests/fixtures/models/calpaca-demo.gguf
bases=$(ls "$W"/base[1-9]*.gguf 2>/dev/null | sort -V | tail -n 1 || true)
[ -f "$MODEL" ] || { echo "demo-model-card: no model at $MODEL" >&2; exit 1; }
[ -f "$W/pt.txt" ] || { echo "demo-model-card: no pre-training text at $W/pt.txt (run scripts/train-demo-model.sh first)" >&2; exit 1; }
cp tests/fixtures/corpus/heldout-100k.txt "$HELD"

# --- loss plots: the rounds' logs joined (step and elapsed time continued)
awk -F, -v OFS=, 'FNR == 1 { if (NR == 1) print; off = last; toff = tlast; next }
    { $1 += off; $8 += toff; last = $1; tlast = $8; print }' $(ls "$W"/pt[0-9]*/train_log.csv | sort -V) >"$W/pt-all.csv"
"$CALPACA" train plot "$W/pt-all.csv" -o "$PLOTS/loss-pretraining.png"
"$CALPACA" train plot "$W/sft/train_log.csv" -o "$PLOTS/loss-sft.png"

echo "## Held-out perplexity (tests/fixtures/corpus/heldout-100k.txt)"
echo
echo "| model | train eval (256-token blocks) | perplexity -c 256 |"
echo "|---|---:|---:|"
for m in "$PLACEHOLDER" ${bases:+"$bases"} "$MODEL"; do
    ev=$("$CALPACA" train eval -m "$m" --data "$HELD" --kind pt --block-size 256 -t "$T" 2>/dev/null | tail -n 1)
    pp=$("$CALPACA" perplexity -m "$m" -f "$HELD" -c 256 -t "$T" 2>/dev/null | grep -o 'PPL = [0-9.e+]*' | cut -d' ' -f3)
    echo "| $m | $ev | $pp |"
done
echo
"$CALPACA" tokenize -m "$MODEL" -f "$W/pt.txt" >"$W/pt.ids"
"$CALPACA" tokenize -m "$MODEL" -f "$HELD" >"$W/heldout-100k.ids"
echo "$(python3 scripts/unigram-baseline.py "$W/pt.ids" "$W/heldout-100k.ids" "$("$CALPACA" info "$MODEL" |
    sed -n 's/.*vocab[^0-9]*\([0-9][0-9]*\).*/\1/p' | head -n 1)")"
echo
echo "## Sample answers (greedy, -n 96)"
while IFS= read -r q; do
    echo
    echo "**Q:** $q"
    echo
    printf '%s\n' "$q" | "$CALPACA" chat -m "$MODEL" --temp 0 -n 96 -t "$T" 2>/dev/null | sed 's/^/> /'
done <<'QS'
请介绍一下北京。
什么是人工智能？
如何保持身体健康？
把下面这句话翻译成英文：我喜欢读书。
写一首关于春天的短诗。
QS
