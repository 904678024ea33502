#!/usr/bin/env bash
# End-to-end test of data-parallel training: `mpirun -np 2 calpaca train pt|sft` on loopback
# against a plain single-process run with the same global batch — the per-step losses, gradient
# norms, eval losses and the final adapter tensors must agree within float tolerance (the
# all-reduce changes the summation order only); `-np 1` must equal the plain run bit for bit;
# one log / adapter / summary line (rank 0 only); --resume under MPI continues bit-identically;
# an error on the ranks ends the job instead of hanging. mpirun missing is a failure, not a skip
# (CI installs openmpi-bin).
# Usage: train_mpi.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
FIX=$SRC/tests/fixtures
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
finish() {
    echo "e2e train_mpi: $pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}

if ! command -v mpirun >/dev/null 2>&1; then
    bad "mpirun not found: install openmpi-bin (scripts/install-deps.sh)"
    finish
fi
# OpenMPI: allowed as root (CI containers), shared memory + self only (no network), runtime on lo,
# processes started locally (plm isolated: no ssh needed)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_plm=isolated
export OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none OMPI_MCA_oob_tcp_if_include=lo
# no busy-polling while waiting (the ranks share a small CI machine)
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_hwloc_base_binding_policy=none OMPI_MCA_mpi_yield_when_idle=1
MPIRUN=(timeout 60 mpirun --allow-run-as-root --oversubscribe)

run() {  # NAME COMMAND...: runs it, output in $W/NAME.out / $W/NAME.err
    local name=$1; shift
    if "$@" >"$W/$name.out" 2>"$W/$name.err" </dev/null; then ok; else bad "$name: exit $?: $(tail -c 400 "$W/$name.err")"; fi
}

"$CALPACA" make-random-model --vocab "$FIX/tokenizers/llama/tokenizer.model" -o "$W/base.gguf" --dim 32 --layers 2 \
    --heads 4 --kv-heads 2 --ff 64 --ctx 128 --type f16 --std 0.05 >/dev/null 2>&1 || bad "make-random-model"
head -n 120 "$FIX/corpus/sample.txt" >"$W/corpus.txt"
sed -n 121,126p "$FIX/corpus/sample.txt" >"$W/heldout.txt"
# 6 sequences per step (3 x 2): each micro-batch is split over the two ranks; dropout on
PT=(train pt -m "$W/base.gguf" --data "$W/corpus.txt" --eval-data "$W/heldout.txt" --eval-every 2 --block-size 32
    --batch-size 3 --grad-accum 2 --lr 1e-3 --lora-dropout 0.1 --seed 7 --steps 4 --save-every 2 -t 1)
run plain "$CALPACA" "${PT[@]}" -o "$W/plain"
run np2 "${MPIRUN[@]}" -np 2 "$CALPACA" "${PT[@]}" -o "$W/np2"
run np1 "${MPIRUN[@]}" -np 1 "$CALPACA" "${PT[@]}" -o "$W/np1"

# compare two runs: log columns loss, grad_norm, eval_loss and every adapter tensor
cat >"$W/compare.py" <<'PY'
import csv, json, struct, sys
a, b, tol = sys.argv[1], sys.argv[2], float(sys.argv[3])
def tensors(d):
    raw = open(d + "/adapter_model.safetensors", "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    head = json.loads(raw[8:8 + n])
    out = {}
    for k, v in head.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", (k, v["dtype"])
        s, e = v["data_offsets"]
        out[k] = struct.unpack("<%df" % ((e - s) // 4), raw[8 + n + s:8 + n + e])
    return out
ta, tb = tensors(a), tensors(b)
assert sorted(ta) == sorted(tb), "different tensor names"
max_abs = max_rel = 0.0
for k in ta:
    scale = max(abs(x) for x in tb[k]) or 1.0
    d = max(abs(x - y) for x, y in zip(ta[k], tb[k]))
    max_abs, max_rel = max(max_abs, d), max(max_rel, d / scale)
la = list(csv.DictReader(open(a + "/train_log.csv")))
lb = list(csv.DictReader(open(b + "/train_log.csv")))
assert len(la) == len(lb) and len(la) > 0, "different number of log rows"
loss_rel = 0.0
for ra, rb in zip(la, lb):
    assert ra["step"] == rb["step"] and ra["lr"] == rb["lr"] and ra["tokens"] == rb["tokens"], (ra, rb)
    for c in ("loss", "grad_norm", "eval_loss"):
        assert (ra[c] == "") == (rb[c] == ""), (c, ra, rb)
        if ra[c]:
            x, y = float(ra[c]), float(rb[c])
            loss_rel = max(loss_rel, abs(x - y) / max(abs(y), 1e-12))
print("adapter max abs diff %.3g, max rel diff (to the tensor's max) %.3g; loss/grad_norm/eval_loss max rel diff %.3g"
      % (max_abs, max_rel, loss_rel))
sys.exit(0 if max_rel <= tol and loss_rel <= tol else 1)
PY
if python3 "$W/compare.py" "$W/np2" "$W/plain" 1e-4 >"$W/cmp.out"; then ok; else bad "np 2 vs plain: $(cat "$W/cmp.out")"; fi
echo "pt, np 2 vs plain: $(cat "$W/cmp.out")"
cmp -s "$W/np1/adapter_model.safetensors" "$W/plain/adapter_model.safetensors" && ok || bad "np 1 adapter != plain run's"
[ "$(cut -d, -f1-5,9 "$W/np1/train_log.csv")" = "$(cut -d, -f1-5,9 "$W/plain/train_log.csv")" ] && ok ||
    bad "np 1 log != plain run's"

# rank 0 alone writes: one summary line, one header, 4 rows; one checkpoint set
[ "$(grep -c '^steps 4' "$W/np2.out")" = 1 ] && ok || bad "np 2: summary lines: $(cat "$W/np2.out")"
[ "$(grep -c '^step,' "$W/np2/train_log.csv")" = 1 ] && [ "$(wc -l <"$W/np2/train_log.csv")" = 5 ] && ok ||
    bad "np 2: train_log.csv: $(cat "$W/np2/train_log.csv")"
[ "$(grep -c 'adapter written' "$W/np2.err")" = 1 ] && ok || bad "np 2: progress lines from more than rank 0"
grep -q "2 MPI processes" "$W/np2.err" && ok || bad "np 2: no '2 MPI processes' in the log: $(head -c 300 "$W/np2.err")"
[ "$(ls "$W/np2/checkpoints")" = "checkpoint-2" ] && ok || bad "np 2: checkpoints: $(ls "$W/np2/checkpoints")"

# --resume under MPI from the step-2 checkpoint = the uninterrupted MPI run, bit for bit
mkdir -p "$W/resumed" && cp -r "$W/np2/checkpoints" "$W/np2/train_log.csv" "$W/resumed/"
run resume "${MPIRUN[@]}" -np 2 "$CALPACA" "${PT[@]}" -o "$W/resumed" --resume
grep -q "resuming from .*checkpoint-2 (step 2)" "$W/resume.err" && ok || bad "resume: $(head -c 300 "$W/resume.err")"
cmp -s "$W/resumed/adapter_model.safetensors" "$W/np2/adapter_model.safetensors" && ok ||
    bad "resume under MPI: adapter differs from the uninterrupted run"
[ "$(cut -d, -f1-5,9 "$W/resumed/train_log.csv")" = "$(cut -d, -f1-5,9 "$W/np2/train_log.csv")" ] && ok ||
    bad "resume under MPI: log differs from the uninterrupted run"

# SFT: variable label counts, 3 sequences per step dealt 2 + 1 over the ranks
cat >"$W/sft.json" <<'JSON'
[
 {"instruction": "把下面的句子翻译成英文。", "input": "我爱北京。", "output": "I love Beijing."},
 {"instruction": "What is 2+3?", "input": "", "output": "5"},
 {"instruction": "写一首关于春天的诗。", "output": "春风吹绿了江南岸。"},
 {"instruction": "List three colors.", "input": "", "output": "Red, green and blue."},
 {"instruction": "Say hello.", "input": "", "output": "Hello! How can I help you today?"}
]
JSON
SFT=(train sft -m "$W/base.gguf" --data "$W/sft.json" --eval-data "$W/sft.json" --eval-every 2 --max-seq-length 48
     --batch-size 1 --grad-accum 3 --lr 1e-3 --steps 3 --save-every 0 -t 1 -q)
run sft_plain "$CALPACA" "${SFT[@]}" -o "$W/sft_plain"
run sft_np2 "${MPIRUN[@]}" -np 2 "$CALPACA" "${SFT[@]}" -o "$W/sft_np2"
if python3 "$W/compare.py" "$W/sft_np2" "$W/sft_plain" 1e-4 >"$W/cmp.out"; then ok; else bad "sft np 2 vs plain: $(cat "$W/cmp.out")"; fi
echo "sft, np 2 vs plain: $(cat "$W/cmp.out")"

# an error ends every rank (no hang), one error line per failing rank, exit status non-zero
"${MPIRUN[@]}" -np 2 "$CALPACA" "${PT[@]}" -o "$W/nothing" --resume >"$W/err.out" 2>"$W/err.err" </dev/null
rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "calpaca: error: --resume: no checkpoint under" "$W/err.err"; then ok; else
    bad "error under MPI: exit $rc: $(head -c 400 "$W/err.err")"
fi
finish
