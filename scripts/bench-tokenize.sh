#!/usr/bin/env bash
# Encode throughput of `calpaca tokenize` against libsentencepiece (Debian's `spm_encode`, the
# reference implementation) on the whole Chinese corpus, with a check that both produce exactly
# the same ids. Both encode line by line on one thread, without BOS, and print one line of
# space-separated ids per input line, so their outputs are compared with cmp.
#
# Usage: scripts/bench-tokenize.sh [CORPUS_DIR [TOKENIZER.model ...]]
#   CORPUS_DIR   default ../shared/data/corpus-zh (every */*.txt, concatenated in sorted order)
#   TOKENIZER    default: tests/fixtures/tokenizers/{llama,chinese-llama-v1,chinese-llama-2}/tokenizer.model
# Environment: CALPACA (default build/calpaca), RUNS (default 5), KEEP=1 keeps the scratch folder.
# Prints, per tokenizer, the median over RUNS of wall-clock and CPU (user+sys) seconds of each
# tool and the speed-up; exits 1 if the ids differ.
set -euo pipefail
cd "$(dirname "$0")/.."
CALPACA=${CALPACA:-build/calpaca}
RUNS=${RUNS:-5}
CORPUS_DIR=${1:-../shared/data/corpus-zh}
shift || true
VOCABS=("$@")
if [ ${#VOCABS[@]} -eq 0 ]; then
    VOCABS=(tests/fixtures/tokenizers/llama/tokenizer.model tests/fixtures/tokenizers/chinese-llama-v1/tokenizer.model
            tests/fixtures/tokenizers/chinese-llama-2/tokenizer.model)
fi
command -v spm_encode >/dev/null || { echo "bench-tokenize: spm_encode not found (apt-get install sentencepiece)" >&2; exit 1; }
[ -x "$CALPACA" ] || { echo "bench-tokenize: $CALPACA not found (scripts/build.sh, or set CALPACA)" >&2; exit 1; }

W=$(mktemp -d "${TMPDIR:-/tmp}/bench-tokenize.XXXXXX")
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$W"' EXIT
find "$CORPUS_DIR" -name '*.txt' -type f | LC_ALL=C sort | xargs cat >"$W/corpus.txt"
bytes=$(wc -c <"$W/corpus.txt")
lines=$(wc -l <"$W/corpus.txt")
[ "$bytes" -gt 0 ] || { echo "bench-tokenize: no *.txt under $CORPUS_DIR" >&2; exit 1; }

# run_timed OUT CMD... : runs CMD with stdout to OUT; appends "wall cpu" (cpu = user + sys) to $W/times
run_timed() {
    local out=$1; shift
    local TIMEFORMAT='%R %U %S'
    if ! { time "$@" >"$out" 2>"$W/cmd.err"; } 2>"$W/t"; then
        echo "bench-tokenize: failed: $* ($(head -c 300 "$W/cmd.err"))" >&2
        exit 1
    fi
    awk '{ printf "%.3f %.3f\n", $1, $2 + $3 }' "$W/t" >>"$W/times"
}
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "corpus: $CORPUS_DIR ($lines lines, $bytes bytes); $RUNS runs each; $(nproc) CPUs; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "calpaca: $CALPACA tokenize --vocab V -f corpus.txt     sentencepiece: spm_encode --model=V --output_format=id < corpus.txt"
printf '| tokenizer | tokens | spm_encode wall s | calpaca wall s | wall speed-up | spm_encode CPU s | calpaca CPU s | CPU speed-up | calpaca MB/s (CPU) | ids |\n'
printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
status=0
for v in "${VOCABS[@]}"; do
    name=$(basename "$(dirname "$v")")
    [ "$(basename "$v")" = tokenizer.model ] || name=$(basename "$v")
    : >"$W/times"
    for _ in $(seq "$RUNS"); do run_timed "$W/spm.ids" spm_encode --model="$v" --output_format=id <"$W/corpus.txt"; done
    mv "$W/times" "$W/times.spm"
    for _ in $(seq "$RUNS"); do run_timed "$W/cal.ids" "$CALPACA" tokenize --vocab "$v" -f "$W/corpus.txt"; done
    mv "$W/times" "$W/times.cal"
    if cmp -s "$W/spm.ids" "$W/cal.ids"; then same=identical; else same=DIFFERENT; status=1; fi
    tokens=$(wc -w <"$W/cal.ids")
    sw=$(cut -d' ' -f1 "$W/times.spm" | median); sc=$(cut -d' ' -f2 "$W/times.spm" | median)
    cw=$(cut -d' ' -f1 "$W/times.cal" | median); cc=$(cut -d' ' -f2 "$W/times.cal" | median)
    printf '| %s | %s | %s | %s | %s× | %s | %s | %s× | %s | %s |\n' "$name" "$tokens" "$(calc "$sw")" "$(calc "$cw")" \
        "$(calc "$sw / $cw")" "$(calc "$sc")" "$(calc "$cc")" "$(calc "$sc / $cc")" "$(calc "$bytes / 1000000 / $cc")" "$same"
done
exit $status
