#!/usr/bin/env bash
# End-to-end tests of `calpaca bench` and `calpaca perplexity` on the bundled demo model:
# the JSON they print has the promised fields and sane values, perplexity does not depend
# on the thread count, and bad input gets one-line errors.
# Usage: bench_perplexity.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
DEMO=$SRC/tests/fixtures/models/calpaca-demo.gguf
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
# json_check NAME FILE PYTHON-EXPRESSION-ON-j
json_check() {
    if python3 -c 'import json, math, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if ('"$3"') else 1)' "$2" 2>"$W/pyerr"
    then ok; else bad "$1: $(cat "$W/pyerr") $(head -c 600 "$2")"; fi
}

for sub in bench perplexity; do
    if "$CALPACA" "$sub" --help | grep -q "Examples:"; then ok; else bad "$sub --help lacks examples"; fi
done

# --- bench: JSON with every field; the table names the tests
expect_ok bench-json "$CALPACA" bench -m "$DEMO" -p 16 -n 8 -r 2 -t 2 --json
cp "$W/out" "$W/bench.json"
json_check bench-fields "$W/bench.json" '
all(k in j for k in ("model", "model_size_bytes", "n_params", "weight_types", "threads", "repetitions", "n_prompt",
    "n_gen", "pp_tokens_per_s", "tg_tokens_per_s", "weight_bytes_per_token", "mem_read_bandwidth_gbps",
    "decode_bandwidth_efficiency", "peak_rss_bytes", "cpu", "kv_cache_bytes"))
and j["n_prompt"] == 16 and j["n_gen"] == 8 and j["repetitions"] == 2 and j["threads"] == 2
and len(j["pp_tokens_per_s"]["samples"]) == 2 and len(j["tg_tokens_per_s"]["samples"]) == 2
and j["pp_tokens_per_s"]["min"] <= j["pp_tokens_per_s"]["median"] <= j["pp_tokens_per_s"]["max"]
and j["tg_tokens_per_s"]["median"] > 0 and j["pp_tokens_per_s"]["median"] > 0
and math.isfinite(j["mem_read_bandwidth_gbps"]["median"]) and j["mem_read_bandwidth_gbps"]["median"] > 0
and math.isfinite(j["decode_bandwidth_efficiency"]) and j["decode_bandwidth_efficiency"] > 0
and j["model_size_bytes"] == '"$(stat -c %s "$DEMO")"' and j["weight_types"] == "F16"
and j["weight_bytes_per_token"] > 0'
expect_ok bench-table "$CALPACA" bench -m "$DEMO" -p 8 -n 4 -r 1 --no-bandwidth
grep -q "^pp8 " "$W/out" && grep -q "^tg4 " "$W/out" && ! grep -q "bandwidth" "$W/out" && ok || bad "bench table: $(cat "$W/out")"
expect_ok bench-pp-only "$CALPACA" bench -m "$DEMO" -p 8 -n 0 -r 1 --no-bandwidth --json
cp "$W/out" "$W/pp.json"
json_check bench-pp-only-json "$W/pp.json" 'j["tg_tokens_per_s"] is None and j["decode_bandwidth_efficiency"] is None'
# --- bench -b: sequences decoding together (a comma list), rows, ratio line and JSON
expect_ok bench-batch "$CALPACA" bench -m "$DEMO" -p 0 -n 4 -r 2 -b 1,3 --no-bandwidth
grep -q "^tg4x1 " "$W/out" && grep -q "^tg4x3 " "$W/out" && grep -q "^batched decode .*x1 .*x3 " "$W/out" && ok \
    || bad "bench -b table: $(cat "$W/out")"
expect_ok bench-batch-json "$CALPACA" bench -m "$DEMO" -p 0 -n 4 -r 2 -b 3 --no-bandwidth --json
cp "$W/out" "$W/batch.json"
json_check bench-batch-fields "$W/batch.json" '
[b["streams"] for b in j["batched_decode"]] == [3] and len(j["batched_decode"][0]["aggregate_tokens_per_s"]["samples"]) == 2
and j["batched_decode"][0]["vs_tg"] > 0 and j["batched_kv_cache_bytes"] > 0'
expect_error bench-batch-zero "each entry must be 1..256" "$CALPACA" bench -m "$DEMO" -n 4 -b 0
expect_error bench-batch-no-tg "needs a tg test" "$CALPACA" bench -m "$DEMO" -p 8 -n 0 -b 2
expect_error bench-nothing "nothing to measure" "$CALPACA" bench -m "$DEMO" -p 0 -n 0
expect_error bench-reps "repetitions must be >= 1" "$CALPACA" bench -m "$DEMO" -r 0
expect_error bench-missing "cannot open" "$CALPACA" bench -m "$W/nope.gguf"

# --- perplexity on a few lines of the corpus sample
head -n 12 "$SRC/tests/fixtures/corpus/sample.txt" >"$W/text.txt"
expect_ok ppl-json "$CALPACA" perplexity -m "$DEMO" -f "$W/text.txt" -c 64 -t 1 --json
cp "$W/out" "$W/ppl1.json"
json_check ppl-fields "$W/ppl1.json" '
j["n_ctx"] == 64 and j["n_chunks"] >= 2 and j["n_scored"] == j["n_chunks"] * 31
and j["n_tokens"] >= 64 * j["n_chunks"] and math.isfinite(j["ppl"]) and j["ppl"] > 1
and j["ppl_stderr"] > 0 and len(j["chunk_ppl"]) == j["n_chunks"] and abs(j["chunk_ppl"][-1] - j["ppl"]) < 1e-9 * j["ppl"]
and abs(math.log(j["ppl"]) - j["nll_mean"]) < 1e-9'
expect_ok ppl-t2 "$CALPACA" perplexity -m "$DEMO" -f "$W/text.txt" -c 64 -t 2 --json
cp "$W/out" "$W/ppl2.json"
python3 -c 'import json, sys; a, b = (json.load(open(f))["ppl"] for f in sys.argv[1:]); sys.exit(0 if "%.4g" % a == "%.4g" % b else 1)' \
    "$W/ppl1.json" "$W/ppl2.json" && ok || bad "perplexity depends on the thread count: $(grep '"ppl"' "$W/ppl1.json" "$W/ppl2.json")"
expect_ok ppl-text "$CALPACA" perplexity -m "$DEMO" -f "$W/text.txt" -c 64 --chunks 1
grep -q "^Final estimate: PPL = [0-9.]* +/- [0-9.]*$" "$W/out" && grep -q "^1 windows of 64 tokens" "$W/out" && ok || bad "perplexity summary: $(cat "$W/out")"
expect_ok ppl-stdin "$CALPACA" perplexity -m "$DEMO" -f - -c 64 --chunks 1 <"$W/text.txt"
grep -q "^Final estimate" "$W/out" && ok || bad "perplexity from stdin"

printf '白日依山尽，黄河入海流。\n' >"$W/short.txt"
expect_error ppl-short "fewer than one window of 64 tokens" "$CALPACA" perplexity -m "$DEMO" -f "$W/short.txt" -c 64
expect_error ppl-missing "cannot open" "$CALPACA" perplexity -m "$DEMO" -f "$W/nope.txt"
: >"$W/empty.txt"
expect_error ppl-empty "empty.txt: the text is empty" "$CALPACA" perplexity -m "$DEMO" -f "$W/empty.txt"
expect_error ppl-tiny-window "at least 4 tokens" "$CALPACA" perplexity -m "$DEMO" -f "$W/text.txt" -c 2
printf 'ab\xff cd\n' >"$W/bad.txt"
expect_error ppl-bad-utf8 "invalid UTF-8" "$CALPACA" perplexity -m "$DEMO" -f "$W/bad.txt" -c 8

echo "e2e bench_perplexity: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
