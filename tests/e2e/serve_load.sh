#!/usr/bin/env bash
# Load test of `calpaca serve` (tests/serve/load_test.py, Python standard library only): 200
# requests from 16 concurrent clients, 20 of them abandoning their stream mid-way and 20 sending
# malformed bodies; then zero server errors, every slot free, RSS within 10 % of before the load.
# Usage: serve_load.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
source "$SRC/tests/serve/server.sh"
trap stop_all_servers EXIT

if start_server load -m "$SRC/tests/fixtures/models/calpaca-demo.gguf" -t 2 -P 4 --max-queue 32 -q; then
    ok
    timeout 280 python3 "$SRC/tests/serve/load_test.py" --base "http://127.0.0.1:$load_PORT" \
        --requests 200 --concurrency 16 --disconnects 20 --malformed 20 >"$W/load.out" 2>&1
    rc=$?
    cat "$W/load.out"
    [ $rc -eq 0 ] && ok || bad "load test (exit $rc)"
    kill -0 "$load_PID" 2>/dev/null && ok || bad "the server died under load: $(tail -5 "$W/load.log")"
    stop_server load
    [ "${load_RC:-x}" = 0 ] && ok || bad "server exit ${load_RC:-?} after the load: $(tail -5 "$W/load.log")"
else
    bad "server did not start"
fi
echo "e2e serve_load: $pass passed, $fail failed"
[ $fail -eq 0 ]
