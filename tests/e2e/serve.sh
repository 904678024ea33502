#!/usr/bin/env bash
# End-to-end tests of `calpaca serve` over HTTP (Python standard library only): endpoints, SSE
# framing, errors, API key, CORS, body limit, disconnects, startup failures and clean shutdown.
# Usage: serve.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
DEMO=$SRC/tests/fixtures/models/calpaca-demo.gguf
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }
source "$SRC/tests/serve/server.sh"
trap stop_all_servers EXIT

if "$CALPACA" serve --help | grep -q "Examples:"; then ok; else bad "serve --help lacks examples"; fi

KEY=test-key-$$
ORIGIN=http://localhost:5173
start_server plain -m "$DEMO" -t 2 -P 2 && ok || bad "plain server"
start_server guarded -m "$DEMO" -t 1 -P 1 --api-key "$KEY" --cors "$ORIGIN" --max-body 4K && ok || bad "guarded server"
grep -q "listening on http://127.0.0.1:" "$W/plain.log" && ok || bad "default host is not 127.0.0.1"

if [ -n "${plain_PORT:-}" ] && [ -n "${guarded_PORT:-}" ]; then
    timeout 120 python3 "$SRC/tests/serve/http_checks.py" --plain "$plain_PORT" --guarded "$guarded_PORT" \
        --key "$KEY" --cors-origin "$ORIGIN" >"$W/http.out" 2>&1
    rc=$?
    cat "$W/http.out"
    [ $rc -eq 0 ] && ok || bad "http checks (exit $rc)"

    # a second server on a port in use: one-line error, exit 1
    timeout 20 "$CALPACA" serve -m "$DEMO" --port "$plain_PORT" >"$W/dup.out" 2>"$W/dup.err" </dev/null
    rc=$?
    [ $rc -eq 1 ] && grep -q "cannot listen on 127.0.0.1:$plain_PORT" "$W/dup.err" && ok || bad "port in use: exit $rc, $(cat "$W/dup.err")"
fi
# bad options fail before listening
timeout 20 "$CALPACA" serve -m "$DEMO" --port 0 --max-body 12Q >"$W/o" 2>"$W/e" </dev/null
[ $? -eq 1 ] && grep -q "max-body" "$W/e" && ok || bad "bad --max-body: $(cat "$W/e")"
timeout 20 "$CALPACA" serve -m "$SRC/README.md" --port 0 >"$W/o" 2>"$W/e" </dev/null
[ $? -eq 1 ] && [ "$(wc -l <"$W/e")" -eq 1 ] && ok || bad "not a model: $(cat "$W/e")"
timeout 20 "$CALPACA" serve -m "$DEMO" --port 0 --chat-template nope >"$W/o" 2>"$W/e" </dev/null
[ $? -eq 1 ] && grep -q "unknown chat template" "$W/e" && ok || bad "bad template: $(cat "$W/e")"

# SIGTERM: clean exit 0
stop_server plain
[ "${plain_RC:-x}" = 0 ] && grep -q "shutting down" "$W/plain.log" && ok || bad "SIGTERM exit ${plain_RC:-?}: $(tail -3 "$W/plain.log")"
stop_server guarded
[ "${guarded_RC:-x}" = 0 ] && ok || bad "guarded SIGTERM exit ${guarded_RC:-?}"

echo "e2e serve: $pass passed, $fail failed"
[ $fail -eq 0 ]
