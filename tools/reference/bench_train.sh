#!/usr/bin/env bash
# Training speed: calpaca train pt vs transformers + peft (tools/reference/bench_train_torch.py) on CPU,
# same model shape, LoRA config, block size, batch, grad-accum and thread count. Prints tokens/s and
# peak RSS of both (GNU time), the ratio, and the load average before each side (the machine may be
# shared: compare only runs made at a similar, low load).
# Usage: tools/reference/bench_train.sh [CALPACA] [THREADS]
#   env: DIM LAYERS HEADS KV FF BLOCK STEPS GA (defaults: a small 4-layer model, 32000 vocab)
set -euo pipefail
SRC=$(cd "$(dirname "$0")/../.." && pwd)
CALPACA=${1:-$SRC/build/calpaca}
T=${2:-2}
DIM=${DIM:-256} LAYERS=${LAYERS:-4} HEADS=${HEADS:-8} KV=${KV:-8} FF=${FF:-688}
BLOCK=${BLOCK:-128} STEPS=${STEPS:-4} GA=${GA:-2}
PY=${PY:-/opt/calpaca-ref/bin/python}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT

"$CALPACA" make-random-model --vocab "$SRC/tests/fixtures/tokenizers/llama/tokenizer.model" -o "$W/base.gguf" \
    --dim "$DIM" --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV" --ff "$FF" --ctx 2048 --type f32 >/dev/null
cp "$SRC/tests/fixtures/corpus/sample.txt" "$W/corpus.txt"
# warm the tokenized-data cache so that only training is timed
"$CALPACA" train pt -m "$W/base.gguf" --data "$W/corpus.txt" -o "$W/warm" --block-size "$BLOCK" --steps 1 \
    --grad-accum 1 --save-every 0 -t "$T" -q >/dev/null
load_c=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/time -f "%M" -o "$W/rss_c" "$CALPACA" train pt -m "$W/base.gguf" --data "$W/corpus.txt" -o "$W/out" \
    --block-size "$BLOCK" --steps $((STEPS + 1)) --grad-accum "$GA" --save-every 0 -t "$T" -q >"$W/c.txt"
# tokens/s of calpaca's steps 2.. (the first step is the warm-up, as on the PyTorch side)
c_tps=$(awk -F, 'NR==2 {t0=$8} NR>2 {tok+=$6; t1=$8} END {printf "%.1f", tok/(t1-t0)}' "$W/out/train_log.csv")
load_t=$(cut -d' ' -f1-3 /proc/loadavg)
/usr/bin/time -f "%M" -o "$W/rss_t" "$PY" "$SRC/tools/reference/bench_train_torch.py" --dim "$DIM" --layers "$LAYERS" \
    --heads "$HEADS" --kv-heads "$KV" --ff "$FF" --block-size "$BLOCK" --steps "$STEPS" --grad-accum "$GA" \
    --threads "$T" >"$W/t.json"
t_tps=$(python3 -c "import json;print('%.1f' % json.load(open('$W/t.json'))['tokens_per_s'])")
echo "shape: vocab 32000 dim $DIM layers $LAYERS heads $HEADS/$KV ff $FF; block $BLOCK, batch 1, grad-accum $GA, $STEPS steps, $T threads"
echo "calpaca:           $c_tps tokens/s, peak RSS $(( $(cat "$W/rss_c") / 1024 )) MiB (load before: $load_c)"
echo "transformers+peft: $t_tps tokens/s, peak RSS $(( $(cat "$W/rss_t") / 1024 )) MiB (load before: $load_t)"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 -c "print('speed ratio calpaca / transformers+peft: %.2fx' % ($c_tps / $t_tps))"
