#!/usr/bin/env bash
# Real clients against `calpaca serve`: the official `openai` Python package, langchain-openai
# (ChatOpenAI, OpenAIEmbeddings, structured output) and a headless-chromium browser test of the
# chat page with playwright (tests/serve/test_clients.py). The venv comes from
# tests/serve/setup-clients.sh; without it this test FAILS (it is part of CI, not optional).
# Usage: serve_clients.sh CALPACA SOURCE_DIR SCRATCH_DIR
set -uo pipefail
CALPACA=$1 SRC=$2 W=$3
rm -rf "$W" && mkdir -p "$W"
VENV=${CALPACA_SERVE_VENV:-$HOME/.cache/calpaca/serve-venv}
pass=0 fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

if [ ! -x "$VENV/bin/python" ] || [ ! -x /usr/bin/chromium ]; then
    echo "FAIL: the client venv ($VENV) or /usr/bin/chromium is missing: run tests/serve/setup-clients.sh (as root) first"
    echo "e2e serve_clients: 0 passed, 1 failed"
    exit 1
fi
source "$SRC/tests/serve/server.sh"
trap stop_all_servers EXIT
KEY=client-key-$$
start_server open -m "$SRC/tests/fixtures/models/calpaca-demo.gguf" -t 2 -P 4 -q && ok || bad "server"
start_server keyed -m "$SRC/tests/fixtures/models/calpaca-demo.gguf" -t 1 -P 1 -q --api-key "$KEY" && ok || bad "keyed server"
if [ -n "${open_PORT:-}" ] && [ -n "${keyed_PORT:-}" ]; then
    timeout 240 "$VENV/bin/python" "$SRC/tests/serve/test_clients.py" --base "http://127.0.0.1:$open_PORT" \
        --keyed "http://127.0.0.1:$keyed_PORT" --key "$KEY" --out "$W" >"$W/clients.out" 2>&1
    rc=$?
    cat "$W/clients.out"
    [ $rc -eq 0 ] && ok || bad "client tests (exit $rc)"
    [ -s "$W/chat.png" ] && ok || bad "no screenshot"
fi
stop_server open
stop_server keyed
echo "e2e serve_clients: $pass passed, $fail failed"
[ $fail -eq 0 ]
