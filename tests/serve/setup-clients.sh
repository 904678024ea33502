#!/usr/bin/env bash
# Sets up the real clients that tests/e2e/serve_clients.sh drives against `calpaca serve`:
#   - a Python venv with the official `openai` package, `langchain-openai` and `playwright`
#     (from PyPI; playwright's own browser download is never used), and
#   - Debian's chromium (/usr/bin/chromium), which playwright drives headless, and a CJK font
#     (fonts-wqy-zenhei) so the page's Chinese text renders in screenshots.
# Idempotent: a venv whose packages import is left alone; installed Debian packages are skipped.
# The venv lives at $CALPACA_SERVE_VENV (default ~/.cache/calpaca/serve-venv), outside the repo.
# Run as root (apt-get) on a fresh machine; afterwards any user can run the tests.
set -euo pipefail
VENV=${CALPACA_SERVE_VENV:-$HOME/.cache/calpaca/serve-venv}
PY=/usr/bin/python3

need=()
for p in python3-venv chromium fonts-wqy-zenhei; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup-clients: need root to install: ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need[@]}"
fi

check() {
    "$VENV/bin/python" - <<'EOF' 2>/dev/null
import openai, langchain_openai, playwright.sync_api  # noqa: F401
EOF
}
if [ -x "$VENV/bin/python" ] && check; then
    echo "setup-clients: $VENV is ready"
    exit 0
fi
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# Tested with openai 3.57.0, langchain-openai 1.7.4 (langchain-core 1.8.3), playwright 1.65.2 and
# Debian chromium 156 (much older openai / langchain-openai lack stream_options or json_schema output).
"$VENV/bin/python" -m pip install -q "openai>=1.40" "langchain-openai>=0.2" "playwright>=1.45"
check || { echo "setup-clients: the venv at $VENV does not import openai/langchain_openai/playwright" >&2; exit 1; }
echo "setup-clients: $VENV is ready"
