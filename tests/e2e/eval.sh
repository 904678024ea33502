#!/usr/bin/env bash
# End-to-end tests of `calpaca eval ceval|cmmlu|report` on the bundled model and the fixture
# excerpt of C-Eval / CMMLU: output files, their consistency, determinism, prefix reuse, and
# one-line errors for bad data and flags.
# Usage: eval.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures/eval
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
    if timeout 120 "$@" >"$W/out" 2>"$W/err" </dev/null; then ok; else bad "$name: exit $? $(head -c 300 "$W/err")"; fi
}
# json_get FILE PYTHON-EXPR (on variable j)
json_get() { python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print($2)" "$1"; }

for sub in ceval cmmlu report; do
    if "$CALPACA" eval "$sub" --help | grep -q "Examples:"; then ok; else bad "eval $sub --help lacks examples"; fi
done
"$CALPACA" eval --help | grep -q "Examples:" && ok || bad "eval --help lacks examples"

# --- C-Eval val, 5-shot, constrained (the default)
expect_ok ceval "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" -o "$W/c5" -t 2
for f in summary.json submission.json scores.csv run.json computer_network_test.csv logic_test.csv; do
    [ -s "$W/c5/$f" ] && ok || bad "ceval: missing $f"
done
[ "$(json_get "$W/c5/summary.json" 'j["All"]["num"]')" = 8 ] && ok || bad "ceval: All.num != 8"
[ "$(json_get "$W/c5/summary.json" 'list(j["grouped"])')" = "['STEM', 'Social Science', 'Humanities', 'Other']" ] && ok || bad "ceval groups"
[ "$(json_get "$W/c5/submission.json" 'sorted(j["logic"])')" = "['0', '1', '2', '3']" ] && ok || bad "ceval submission keys"
# the summary agrees with the submission and the answers in the data
want=$(python3 - "$W/c5/submission.json" "$FIX/ceval/val" <<'EOF'
import csv, json, sys
sub = json.load(open(sys.argv[1]))
right = 0
for subj, ans in sub.items():
    rows = list(csv.DictReader(open(f"{sys.argv[2]}/{subj}_val.csv", encoding="utf-8", newline="")))
    right += sum(ans[str(i)] == r["answer"] for i, r in enumerate(rows))
print(right)
EOF
)
got=$(json_get "$W/c5/summary.json" 'round(j["All"]["correct"])')
[ "$want" = "$got" ] && ok || bad "summary correct $got != recount $want"
grep -q "Average" "$W/out" && grep -q "questions/s" "$W/out" && ok || bad "ceval stdout lacks the Average / speed lines"
# per-subject CSV: pandas layout with model_output and correctness
head -1 "$W/c5/logic_test.csv" | grep -q '^,id,question,A,B,C,D,answer,model_output,correctness$' && ok || bad "per-subject CSV header: $(head -1 "$W/c5/logic_test.csv")"

# --- prefix reuse changes the speed, not the answers
expect_ok ceval-noreuse "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" -o "$W/c5n" -t 2 --no-prefix-reuse
cmp -s "$W/c5/submission.json" "$W/c5n/submission.json" && ok || bad "answers differ with --no-prefix-reuse"
[ "$(json_get "$W/c5/run.json" 'j["tokens_reused"] > j["tokens_evaluated"]')" = True ] && ok || bad "prefix reuse reused too little"
[ "$(json_get "$W/c5n/run.json" 'j["tokens_reused"]')" = 0 ] && ok || bad "--no-prefix-reuse reused tokens"

# --- determinism across thread counts (answers), and the other formats
expect_ok ceval-t1 "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" -o "$W/c5t1" -t 1
cmp -s "$W/c5/submission.json" "$W/c5t1/submission.json" && ok || bad "answers depend on the thread count"
expect_ok ceval-0shot-prompt "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --shots 0 --with-prompt -o "$W/c0p"
[ "$(json_get "$W/c0p/run.json" 'j["template"]')" = alpaca-2 ] && ok || bad "template not taken from the model"
expect_ok ceval-v1 "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --with-prompt --template alpaca --cot --generate -n 4 --subjects logic -o "$W/cv1"
[ "$(json_get "$W/cv1/summary.json" 'list(j)[0]')" = logic ] && ok || bad "--subjects"
expect_ok ceval-test "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --split test --shots 0 -o "$W/ct"
[ "$(json_get "$W/ct/submission.json" 'len(j["computer_network"])')" = 2 ] && ok || bad "test-split submission"
# generation mode is reproducible for a seed
expect_ok gen1 "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --generate -n 3 --seed 7 --shots 1 -o "$W/g1"
expect_ok gen2 "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --generate -n 3 --seed 7 --shots 1 -o "$W/g2"
cmp -s "$W/g1/submission.json" "$W/g2/submission.json" && cmp -s "$W/g1/logic_test.csv" "$W/g2/logic_test.csv" && ok || bad "generation not reproducible"

# --- CMMLU
expect_ok cmmlu "$CALPACA" eval cmmlu -m "$DEMO" --data "$FIX/cmmlu" --constrained -o "$W/m5"
[ "$(json_get "$W/m5/summary.json" 'list(j["grouped"])[0]')" = "China specific" ] && ok || bad "cmmlu groups"
[ "$(json_get "$W/m5/summary.json" 'j["grouped"]["China specific"]["num"]')" = 4 ] && ok || bad "ancient_chinese not China specific"
head -1 "$W/m5/agronomy_test.csv" | grep -q '^,Unnamed: 0,Question,A,B,C,D,Answer,model_output,correctness$' && ok || bad "cmmlu CSV header"
expect_ok cmmlu-gen "$CALPACA" eval cmmlu -m "$DEMO" --data "$FIX/cmmlu" -n 2 --shots 0 --limit 1 -o "$W/mg"
[ "$(json_get "$W/mg/run.json" 'j["mode"]')" = generate ] && ok || bad "cmmlu default mode is not generation"

# --- report
expect_ok report "$CALPACA" eval report "demo=$W/c5" "demo=$W/c0p" "demo=$W/m5"
grep -q '^| Model | Size | C-Eval (0/5-shot) | CMMLU (5-shot) |$' "$W/out" && grep -q '^| demo | 8.1 MiB |' "$W/out" && ok || bad "report: $(cat "$W/out")"
expect_ok report-json "$CALPACA" eval report "$W/c5" --format json -o "$W/report.json"
[ "$(json_get "$W/report.json" 'j["rows"][0]["label"]')" = calpaca-demo.gguf ] && ok || bad "report json"

# perplexity results merge into the same row (when the perplexity command is built)
if "$CALPACA" --help 2>/dev/null | grep -qE "^  perplexity "; then
    head -n 20 "$SRC/tests/fixtures/corpus/sample.txt" >"$W/ppl.txt"
    if "$CALPACA" perplexity -m "$DEMO" -f "$W/ppl.txt" -c 64 --json >"$W/ppl.json" 2>/dev/null; then
        expect_ok report-ppl "$CALPACA" eval report "demo=$W/ppl.json" "demo=$W/c5"
        grep -q '^| Model | Size | PPL | C-Eval (5-shot) |$' "$W/out" && grep -q '^| demo | 8.1 MiB | [0-9.]* | ' "$W/out" && ok || bad "report with perplexity: $(cat "$W/out")"
    else
        bad "perplexity --json failed"
    fi
fi

# --- bad input: one line, exit 1, nothing half-written
mkdir -p "$W/bad" && cp -r "$FIX/ceval/." "$W/bad/"
printf 'id,question,A,B,C,D,answer\n0,q,a,b,c,d,A\n1,q,a,b,c,D\n' >"$W/bad/val/logic_val.csv"
expect_error bad-row "logic_val.csv: row 2 (line 3): expected 7 fields" "$CALPACA" eval ceval -m "$DEMO" --data "$W/bad" -o "$W/nope"
[ ! -e "$W/nope/summary.json" ] && ok || bad "summary written despite bad data"
cp "$FIX/ceval/val/logic_val.csv" "$W/bad/val/logic_val.csv"
cp "$FIX/ceval/val/logic_val.csv" "$W/bad/val/astrology_val.csv"
expect_error unknown-subject-file "astrology_val.csv: subject 'astrology' is not in" "$CALPACA" eval ceval -m "$DEMO" --data "$W/bad" -o "$W/nope"
expect_error unknown-subject-flag "unknown C-Eval subject 'astrology'" "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --subjects astrology -o "$W/nope"
expect_error no-data "not a directory" "$CALPACA" eval cmmlu -m "$DEMO" --data "$W/missing" -o "$W/nope"
expect_error cot-cmmlu "CMMLU has none" "$CALPACA" eval cmmlu -m "$DEMO" --data "$FIX/cmmlu" --cot --generate -o "$W/nope"
expect_error too-many-shots "6 few-shot examples requested but the dev file has 5 rows" "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --shots 6 -o "$W/nope"
expect_error bad-template "not 'llama'" "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --with-prompt --template llama -o "$W/nope"
expect_error bad-temp "--temp must be > 0" "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" --temp 0 -o "$W/nope"
expect_error ctx-overflow "computer_network_val.csv question 1: the prompt needs 423 tokens but the context holds 64" "$CALPACA" eval ceval -m "$DEMO" --data "$FIX/ceval" -c 64 -o "$W/nope"
expect_error report-bad "invalid JSON" "$CALPACA" eval report "$W/c5/scores.csv"

echo "e2e eval: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
